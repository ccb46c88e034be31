"""The search stage: Lucene impact scores are exact integer dot products; ties are deterministic."""

import json
import shutil

import pytest

from conftest import write_lines
from pipeline import stages
from pipeline.demo import DEMO_DATA, collection_vectors
from pipeline.errors import ConsistencyError, InputError
from pipeline.readers import read_topics
from pipeline.search import ImpactSearcher

QUIET = {"say": lambda text: None, "progress": False}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    collection, index = root / "collections" / "demo", root / "indexes" / "demo"
    stages.encode(DEMO_DATA / "corpus.jsonl", collection, **QUIET)
    stages.index(collection, index, threads=2, say=QUIET["say"])
    return collection, index


def read_trec(path):
    return [line.split() for line in path.read_text().splitlines()]


def test_scores_are_exact_dot_products_of_quantised_vectors(tmp_path, built, encoder):
    collection, index = built
    run = tmp_path / "run.txt"
    stages.search(index, run, DEMO_DATA / "queries.jsonl", hits=1000, **QUIET)
    docs = collection_vectors(collection)
    topics = read_topics(DEMO_DATA / "queries.jsonl")
    lines = read_trec(run)
    for qid, text in topics.items():
        query = encoder.to_terms(encoder.encode([text])[0], 100)
        scores = {d: sum(w * doc["vector"].get(t, 0) for t, w in query.items()) for d, doc in docs.items()}
        expected = sorted(((d, s) for d, s in scores.items() if s > 0), key=lambda x: (-x[1], x[0]))
        got = [(l[2], float(round(float(l[4])))) for l in lines if l[0] == qid]
        assert got == [(d, float(s)) for d, s in expected]
        assert [int(l[3]) for l in lines if l[0] == qid] == list(range(1, len(got) + 1))
    assert {l[5] for l in lines} == {"splade"}


def test_ties_beyond_the_cutoff_are_broken_by_document_id(tmp_path):
    folder = tmp_path / "ties"
    lines = [json.dumps({"id": f"d{i:02d}", "contents": "", "vector": {"a": 1, f"u{i}": 1}})
             for i in reversed(range(60))]
    write_lines(folder / "part-0.jsonl", lines[:30])
    write_lines(folder / "part-1.jsonl", lines[30:])
    stages.index(folder, tmp_path / "idx", threads=2, say=QUIET["say"])
    searcher = ImpactSearcher(tmp_path / "idx")
    try:
        hits = searcher.search({"q": {"a": 2}, "none": {"zzz": 3}}, hits=10, threads=2)
    finally:
        searcher.close()
    assert hits["q"] == [(f"d{i:02d}", 2.0) for i in range(10)] and hits["none"] == []


def test_tied_scores_are_written_so_trec_eval_keeps_the_order():
    from pipeline.search import format_run

    text = format_run({"1": [("a", 7.0), ("b", 7.0), ("c", 7.0), ("d", 5.0)]}).decode()
    assert [line.split()[4] for line in text.splitlines()] == ["7.000000", "6.999999", "6.999998", "5.000000"]


def test_remove_query_and_msmarco_format(tmp_path, built):
    _, index = built
    topics = write_lines(tmp_path / "topics.tsv", ["space-03\tcharged particles from the sun hit the poles"])
    trec, msmarco = tmp_path / "trec.txt", tmp_path / "msmarco.tsv"
    stages.search(index, trec, topics, hits=6, **QUIET)
    stages.search(index, msmarco, topics, hits=5, remove_query=True, fmt="msmarco", **QUIET)
    with_query = [l[2] for l in read_trec(trec)]
    without = [line.split("\t") for line in msmarco.read_text().splitlines()]
    assert "space-03" in with_query
    assert [row[1] for row in without] == [d for d in with_query if d != "space-03"][:5]
    assert [row[2] for row in without] == [str(r) for r in range(1, len(without) + 1)]
    assert all(row[0] == "space-03" for row in without) and len(without) == 5


def test_pre_encoded_queries(tmp_path, built):
    _, index = built
    encoded = write_lines(tmp_path / "q.jsonl", ['{"id": "q1", "vector": {"coral": 100, "reef": 50}}',
                                                 '{"id": "q2", "vector": {"bread": 100}}'])
    run = tmp_path / "run.txt"
    stages.search(index, run, encoded_queries=encoded, hits=3, **QUIET)
    rows = read_trec(run)
    assert rows[0][:3] == ["q1", "Q0", "ocean-02"] and {r[0] for r in rows} == {"q1", "q2"}
    topics = write_lines(tmp_path / "t.tsv", ["q2\tbread", "q9\tmissing"])
    with pytest.raises(InputError, match="1 topics have no encoding"):
        stages.search(index, tmp_path / "r2.txt", topics, encoded_queries=encoded, **QUIET)


def test_other_settings_are_refused_unless_forced(tmp_path, built, encoder):
    _, index = built
    topics = DEMO_DATA / "queries.jsonl"
    with pytest.raises(ConsistencyError, match=r"scale: index 100, query 50"):
        stages.search(index, tmp_path / "a.txt", topics, scale=50, **QUIET)
    with pytest.raises(ConsistencyError, match=r"pooling: index 'max', query 'sum'"):
        stages.search(index, tmp_path / "a.txt", topics, pooling="sum", **QUIET)
    retrained = tmp_path / "model"
    shutil.copytree(encoder.model_ref.location, retrained)
    config = json.loads((retrained / "config.json").read_text())
    (retrained / "config.json").write_text(json.dumps({**config, "note": "fine-tuned"}))
    with pytest.raises(ConsistencyError, match=r"encoder: index built with splade-tiny"):
        stages.search(index, tmp_path / "a.txt", topics, encoder=str(retrained), **QUIET)
    stages.search(index, tmp_path / "a.txt", topics, scale=50, force=True, **QUIET)
    assert (tmp_path / "a.txt").stat().st_size > 0


def test_existing_run_is_kept_unless_overwrite(tmp_path, built):
    _, index = built
    run = tmp_path / "run.txt"
    run.write_text("keep me\n")
    said = []
    stages.search(index, run, DEMO_DATA / "queries.jsonl", say=said.append, progress=False)
    assert run.read_text() == "keep me\n" and "exists" in said[0]
    stages.search(index, run, DEMO_DATA / "queries.jsonl", overwrite=True, **QUIET)
    assert run.read_text() != "keep me\n"


def test_not_an_index(tmp_path):
    with pytest.raises(InputError, match="not a Lucene index"):
        stages.search(tmp_path, tmp_path / "run.txt", DEMO_DATA / "queries.jsonl", **QUIET)


def test_run_files_are_byte_identical_across_rebuilds(tmp_path, built):
    collection, _ = built
    runs = []
    for threads in (1, 2):
        index = tmp_path / f"index-{threads}"
        stages.index(collection, index, threads=threads, say=QUIET["say"])
        run = tmp_path / f"run-{threads}.txt"
        stages.search(index, run, DEMO_DATA / "queries.jsonl", hits=25, threads=threads, **QUIET)
        runs.append(run.read_bytes())
    assert runs[0] == runs[1] and runs[0].count(b"\n") > 100
