"""End to end on real data: a SciFact slice through encode, Lucene index, search and evaluate,
checked against the exact float reference computed from the same model; the remove-query rules;
MS MARCO files (TSV collection, DL topics, graded qrels) as they are."""

import json
import shutil

import pytest

from conftest import dataset
from pipeline.demo import DEMO_DATA
from pipeline.evaluate import evaluate, parse_measure
from pipeline.experiment import dataset_files, judged_topics, results_table, run_dataset
from pipeline.readers import read_corpus, read_qrels, read_run, read_topics
from pipeline.reference import exact_run

QUIET = {"progress": False, "say": lambda text: None}


@pytest.fixture(scope="module")
def pipeline_result(scifact_slice, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    return root, run_dataset(scifact_slice, root=root, **QUIET)


def test_slice_matches_exact_float_reference(pipeline_result, scifact_slice, encoder):
    _, result = pipeline_result
    corpus, queries, qrels_path = dataset_files(scifact_slice, "test")
    qrels, topics = read_qrels(qrels_path), judged_topics(queries, qrels_path)
    docs = [doc for _, doc in read_corpus(corpus)]
    assert result["documents"] == len(docs) == 200 and result["queries"] == 30
    reference = exact_run([d.id for d in docs], encoder.encode([d.text for d in docs]), list(topics),
                          encoder.encode(list(topics.values())), encoder.vocab_size, remove_query=True)
    measures = [parse_measure("nDCG@10"), parse_measure("R@100")]
    exact, _ = evaluate({q: dict(hits) for q, hits in reference.items()}, qrels, measures)
    ours = result["metrics"]
    assert abs(ours["nDCG@10"] - exact["nDCG@10"]) <= 0.01
    assert abs(ours["R@100"] - exact["R@100"]) <= 0.01
    assert 0.55 < ours["nDCG@10"] < 0.95  # splade-tiny finds most judged abstracts in a 200-doc slice

    run = read_run(result["run"])
    overlap = [len(set(sorted(run[q], key=lambda d: -run[q][d])[:10]) & {d for d, _ in reference[q][:10]}) / 10
               for q in topics]
    assert sum(overlap) / len(overlap) > 0.9  # quantisation at scale 100 barely moves the top ten


def test_outputs_follow_anserini_folders(pipeline_result, scifact_slice):
    root, result = pipeline_result
    name = scifact_slice.resolve().name
    assert result["dataset"] == name and result["split"] == "test"
    assert result["collection"] == str(root / "collections" / f"{name}.splade-tiny")
    assert result["index"] == str(root / "indexes" / f"{name}.splade-tiny")
    assert result["run"] == str(root / "runs" / f"run.{name}.splade-tiny.test.txt")
    assert result["preset"] == "beir" and result["remove_query"]["rule"] == "auto"
    table = results_table([result])
    assert table.splitlines()[0] == "| dataset | encoder | queries | nDCG@10 | R@100 | postings/doc |"


@pytest.fixture(scope="module")
def self_hit_dataset(tmp_path_factory):
    """The demo set plus two documents named like queries: ``q1`` is the query's own text (as
    ArguAna's queries are corpus documents, never judged relevant to themselves); ``q2`` is judged
    relevant to query q2 (as where query and document ids are unrelated numbers)."""
    folder = tmp_path_factory.mktemp("self-hits")
    topics = read_topics(DEMO_DATA / "queries.jsonl")
    corpus = (DEMO_DATA / "corpus.jsonl").read_text()
    corpus += json.dumps({"_id": "q1", "title": "", "text": topics["q1"]}) + "\n"
    corpus += json.dumps({"_id": "q2", "title": "", "text": "Sea water is salty: rivers carry dissolved salt "
                                                             "from rocks into the ocean."}) + "\n"
    (folder / "corpus.jsonl").write_text(corpus)
    shutil.copy(DEMO_DATA / "queries.jsonl", folder / "queries.jsonl")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text((DEMO_DATA / "qrels" / "test.tsv").read_text() + "q2\tq2\t1\n")
    return folder


@pytest.mark.parametrize("rule, removed, kept", [("auto", 1, {"q2"}), ("always", 2, set()),
                                                 ("never", 0, {"q1", "q2"})])
def test_remove_query_rules(self_hit_dataset, tmp_path_factory, rule, removed, kept):
    root = tmp_path_factory.getbasetemp() / "self-hits-root"
    result = run_dataset(self_hit_dataset, root=root, remove_query=rule, **QUIET)
    run = read_run(result["run"])
    assert run["q1"] and run["q2"]
    assert {q for q in ("q1", "q2") if q in run[q]} == kept
    assert result["remove_query"] == {"rule": rule, "self_hits_removed": removed, "judged_relevant_self_pairs": 1,
                                      "kept_as_judged_relevant": 1 if rule == "auto" else 0}


def test_msmarco_files_as_they_are(tmp_path):
    """collection.tsv, DL topics .jsonl and graded qrels: the TREC DL preset (level 2) applies."""
    pool, topics_folder = dataset("msmarco-passage-dl-pool"), dataset("msmarco-passage-topics")
    qrels = read_qrels(topics_folder / "qrels" / "dl19.tsv")
    qids = sorted(qrels)[:2]
    judged = {d for q in qids for d in qrels[q]}
    with open(pool / "collection.tsv", encoding="utf-8") as source:
        lines = [line for number, line in enumerate(source) if line.split("\t", 1)[0] in judged or number < 40]
    corpus = tmp_path / "msmarco" / "collection.tsv"
    corpus.parent.mkdir()
    corpus.write_text("".join(lines), encoding="utf-8")
    topics = tmp_path / "dl19.jsonl"
    every = read_topics(topics_folder / "queries" / "dl19.jsonl")
    topics.write_text("".join(json.dumps({"_id": q, "text": every[q]}) + "\n" for q in qids))
    qrels_path = tmp_path / "dl19.tsv"
    qrels_path.write_text("".join(f"{q}\t{d}\t{g}\n" for q in qids for d, g in qrels[q].items()))

    result = run_dataset(None, corpus=corpus, topics=topics, qrels=qrels_path, root=tmp_path / "out", **QUIET)
    assert result["dataset"] == "msmarco" and result["split"] == "dl19" and result["queries"] == 2
    assert result["preset"] == "dl" and result["relevance_level"] == 2
    assert list(result["metrics"]) == ["nDCG@10", "MAP", "R@1000"]
    assert result["run"].endswith("runs/run.msmarco.splade-tiny.dl19.txt")
    assert 0.3 < result["metrics"]["nDCG@10"] <= 1.0  # judged passages re-ranked by splade-tiny
