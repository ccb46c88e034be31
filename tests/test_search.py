"""The search stage: Lucene impact scores are exact integer dot products; ties are deterministic."""

import json
import shutil

import pytest

from conftest import write_lines
from pipeline import stages
from pipeline.demo import DEMO_DATA, collection_vectors
from pipeline.encoders import Options
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.readers import read_topics
from pipeline import search as search_module
from pipeline.search import ImpactSearcher, format_run

QUIET = {"say": lambda text: None, "progress": False}


@pytest.fixture(scope="module")
def built(demo_indexes):
    """The session's demo collection and its index without stored documents (read-only)."""
    return demo_indexes["collection"], demo_indexes["bare"]


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
        expected = sorted(((d, s) for d, s in scores.items() if s > 0), key=lambda x: (x[1], x[0]), reverse=True)
        got = [(l[2], float(round(float(l[4])))) for l in lines if l[0] == qid]
        assert got == [(d, float(s)) for d, s in expected]
        assert [int(l[3]) for l in lines if l[0] == qid] == list(range(1, len(got) + 1))
    assert {l[5] for l in lines} == {"splade"}


def index_vectors(folder, index, vectors):
    lines = [json.dumps({"id": docid, "contents": "", "vector": vector}) for docid, vector in vectors]
    half = len(lines) // 2
    write_lines(folder / "part-0.jsonl", lines[:half])
    write_lines(folder / "part-1.jsonl", lines[half:])
    stages.index(folder, index, threads=2, say=QUIET["say"])
    return index


@pytest.fixture(scope="module")
def tied_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("ties")
    return index_vectors(root / "vectors", root / "index",
                         [(f"d{i:02d}", {"a": 1, f"u{i}": 1}) for i in reversed(range(60))])


def search(index, queries, hits, **options):
    searcher = ImpactSearcher(index)
    try:
        return searcher.search(queries, hits=hits, threads=2, **options)
    finally:
        searcher.close()


def test_ties_beyond_the_cutoff_are_broken_by_document_id_as_trec_eval_does(tied_index):
    hits, counters = search(tied_index, {"q": {"a": 2}, "none": {"zzz": 3}}, 10)
    assert hits["q"] == [(f"d{i:02d}", 2.0) for i in range(59, 49, -1)] and hits["none"] == []
    assert counters["ties_capped"] == 0


def test_tie_deepening_is_capped(tied_index, monkeypatch):
    """A tie larger than the depth limit is not chased through the whole index: it is broken among
    the fetched hits (deterministically ordered) and counted."""
    monkeypatch.setattr(search_module, "TIE_DEPTH_LIMIT", 5)
    depths = []
    original = ImpactSearcher._batch
    monkeypatch.setattr(ImpactSearcher, "_batch",
                        lambda self, queries, depth, threads: depths.append(depth) or original(self, queries, depth,
                                                                                               threads))
    hits, counters = search(tied_index, {"q": {"a": 2}, "r": {"u7": 1}}, 10)
    assert max(depths) == 10 + 1 + 5 < 60
    assert counters["ties_capped"] == 1 and counters["ties_capped_queries"] == ["q"]
    assert len(hits["q"]) == 10 and [s for _, s in hits["q"]] == [2.0] * 10
    assert [d for d, _ in hits["q"]] == sorted((d for d, _ in hits["q"]), reverse=True)


def test_scores_beyond_2_24_are_float32_and_counted(tmp_path):
    """Lucene's float32 scores are exact integers below 2^24; above, neighbours merge (here
    16,781,313 and 16,781,312) and tie, ordered by document id descending as trec_eval reads them."""
    index = index_vectors(tmp_path / "big", tmp_path / "idx", [
        ("d1", {"a": 4097, "b": 1}), ("d2", {"a": 4097}), ("d3", {"a": 4096}), ("d4", {"a": 1})])
    hits, counters = search(index, {"q": {"a": 4096, "b": 1}, "small": {"a": 3}}, 10)
    assert 4096 * 4097 + 1 > 2 ** 24
    assert hits["q"][:3] == [("d2", 16781312.0), ("d1", 16781312.0), ("d3", 16777216.0)]
    assert counters["scores_beyond_2^24"] == 1
    assert hits["small"][:3] == [("d2", 12291.0), ("d1", 12291.0), ("d3", 12288.0)]  # exact below 2^24


def test_tied_scores_are_written_exactly_in_trec_eval_order():
    text = format_run({"1": [("a", 70000.0), ("b", 70000.0), ("c", 70000.0), ("d", 5.0)]}).decode()
    assert [line.split()[2:5] for line in text.splitlines()] == [
        ["c", "1", "70000.000000"], ["b", "2", "70000.000000"], ["a", "3", "70000.000000"], ["d", "4", "5.000000"]]


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


def test_remove_query_for_chosen_queries_refills_to_hits(built):
    _, index = built
    queries = {"ocean-02": {"coral": 100, "reef": 50}, "q": {"coral": 100, "reef": 50}}
    kept, _ = search(index, queries, 3, remove_query=False)
    assert kept["ocean-02"][0][0] == "ocean-02" and kept["q"] == kept["ocean-02"]
    deeper, _ = search(index, queries, 4)
    for chosen in (True, ["ocean-02"]):
        removed, counters = search(index, queries, 3, remove_query=chosen)
        assert removed["ocean-02"] == deeper["ocean-02"][1:4] and counters["self_hits_removed"] == 1
        assert removed["q"] == kept["q"]
    untouched, counters = search(index, queries, 3, remove_query=["q"])
    assert untouched == kept and counters["self_hits_removed"] == 0


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
        stages.search(index, tmp_path / "a.txt", topics, options=Options(scale=50), **QUIET)
    with pytest.raises(ConsistencyError, match=r"pooling: index 'max', query 'sum'"):
        stages.search(index, tmp_path / "a.txt", topics, options=Options(pooling="sum"), **QUIET)
    retrained = tmp_path / "model"
    shutil.copytree(encoder.model_ref.location, retrained)
    config = json.loads((retrained / "config.json").read_text())
    (retrained / "config.json").write_text(json.dumps({**config, "note": "fine-tuned"}))
    with pytest.raises(ConsistencyError, match=r"query encoder: index splade-tiny"):
        stages.search(index, tmp_path / "a.txt", topics, options=Options(encoder=str(retrained)), **QUIET)
    stages.search(index, tmp_path / "a.txt", topics, options=Options(scale=50), force=True, **QUIET)
    assert (tmp_path / "a.txt").stat().st_size > 0


def test_existing_run_is_kept_only_when_made_from_the_same_inputs(tmp_path, built):
    _, index = built
    run, topics = tmp_path / "run.txt", DEMO_DATA / "queries.jsonl"
    stages.search(index, run, topics, hits=10, **QUIET)
    first = run.read_bytes()
    said = []
    stages.search(index, run, topics, hits=10, say=said.append, progress=False)
    assert run.read_bytes() == first and "nothing to do" in said[0]
    with pytest.raises(ConsistencyError, match=r"made from other inputs \(hits 10 -> 5\)"):
        stages.search(index, run, topics, hits=5, **QUIET)
    stages.search(index, run, topics, hits=5, overwrite=True, **QUIET)
    assert run.read_bytes() != first
    mine = tmp_path / "mine.txt"  # a file splade-pipeline did not write is never replaced
    mine.write_text("keep me\n")
    with pytest.raises(PipelineError, match="not written by splade-pipeline"):
        stages.search(index, mine, topics, overwrite=True, **QUIET)
    assert mine.read_text() == "keep me\n"


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


def anserini_own(searcher, terms, depth):
    """Anserini's ``SimpleImpactSearcher.search(Map, k)`` as Pyserini calls it: the path replaced."""
    from pipeline import jvm

    query = jvm.autoclass("java.util.HashMap")()
    for term, weight in terms.items():
        query.put(term, jvm.autoclass("java.lang.Integer")(weight))
    return [(hit.docid, float(round(hit.score))) for hit in searcher._searcher.search(query, depth)]


def test_direct_search_finds_what_anserinis_own_search_finds(built, tied_index, encoder):
    """Same hits, same scores, same order, and the same tied documents at a cut-off."""
    _, index = built
    topics = read_topics(DEMO_DATA / "queries.jsonl")
    cases = [(index, encoder.to_terms(vector, 100)) for vector in encoder.encode(list(topics.values()))]
    cases += [(tied_index, {"a": 2}), (tied_index, {"a": 2, "u7": 5, "zzz": 1}), (index, {"café": 3, "coral": 9})]
    for path, terms in cases:
        searcher = ImpactSearcher(path)
        try:
            for depth in (1, 7, 30, 1000):
                assert searcher._search_one(terms, depth) == anserini_own(searcher, terms, depth), (terms, depth)
        finally:
            searcher.close()


def test_weights_must_be_positive_java_ints(built):
    _, index = built
    searcher = ImpactSearcher(index)
    try:
        for weight in (1.5, 2.0, True, 0, -3, 2 ** 31, "7"):
            with pytest.raises(PipelineError, match="must be an integer"):
                searcher.search({"q": {"coral": weight}}, 3)
        found, counters = searcher.search({"q": {"coral": 2 ** 31 - 1}}, 3)
        assert found["q"][0][0] == "ocean-02" and counters["scores_beyond_2^24"] == 1
    finally:
        searcher.close()


def test_counters_belong_to_each_call(tied_index):
    """A shared searcher keeps no counters of its own: two calls do not see each other's."""
    searcher = ImpactSearcher(tied_index)
    try:
        _, first = searcher.search({"q": {"a": 2}}, 10, remove_query=["q"])
        _, second = searcher.search({"d05": {"u5": 1}}, 10, remove_query=True)
        assert first["self_hits_removed"] == 0 and second["self_hits_removed"] == 1
        assert not hasattr(searcher, "counters")
    finally:
        searcher.close()


def test_threads_that_searched_leave_the_jvm_when_they_end(tied_index):
    """pyjnius never detaches a thread by itself: a server's short-lived request threads would each
    leave a Java thread behind (memory that only grows)."""
    import threading

    from pipeline import jvm

    searcher = ImpactSearcher(tied_index)
    java_threads = jvm.autoclass("java.lang.management.ManagementFactory").getThreadMXBean()
    try:
        before = java_threads.getThreadCount()
        for _ in range(20):
            worker = threading.Thread(target=searcher.search, args=({"q": {"a": 2}}, 5))
            worker.start()
            worker.join()
        assert java_threads.getThreadCount() - before < 5
        results, _ = searcher.search({"q": {"a": 2}}, 5)  # still answers on this thread afterwards
        assert [hit[0] for hit in results["q"]] == ["d59", "d58", "d57", "d56", "d55"]
    finally:
        searcher.close()


def test_stored_documents_read_by_number_are_anserinis_own(demo_indexes, encoder):
    """``raw`` reads by the document number its hits carried (a memo of ``remember_hits`` entries) and
    gives what Anserini's ``doc_raw`` gives by id: before any search, after one, once the memo has
    been emptied, for ids the index lacks (None, in place) and on an index without stored documents."""
    from pipeline import jvm

    topics = read_topics(DEMO_DATA / "queries.jsonl")
    queries = {qid: encoder.to_terms(vector, 100) for qid, vector in zip(topics, encoder.encode(list(topics.values())))}
    stored = ImpactSearcher(demo_indexes["demo"], remember_hits=5)
    anserini = jvm.autoclass("io.anserini.search.SimpleImpactSearcher")(str(demo_indexes["demo"]))
    try:
        docids = [json.loads(line)["_id"] for line in (DEMO_DATA / "corpus.jsonl").read_text().splitlines()]
        expected = {docid: anserini.doc_raw(docid) for docid in docids}
        assert all(isinstance(raw, str) and json.loads(raw)["id"] == docid for docid, raw in expected.items())
        assert stored.raw_many(docids) == [expected[d] for d in docids]  # no search yet: looked up by id
        for qid, terms in queries.items():
            hits = stored.search({qid: terms}, 8)[0][qid]  # 8 hits through a memo of 5: emptied as it goes
            page = [docid for docid, _ in hits]
            assert stored.raw_many(page) == [expected[d] for d in page]
            assert stored.raw_many([page[0], "no-such-doc", page[-1]]) == [expected[page[0]], None, expected[page[-1]]]
        assert stored.raw("no-such-doc") is None
    finally:
        stored.close()
        anserini.close()
    bare = ImpactSearcher(demo_indexes["bare"], remember_hits=5)
    try:
        qid, terms = next(iter(queries.items()))
        hits = bare.search({qid: terms}, 3)[0][qid]
        assert bare.raw_many([docid for docid, _ in hits]) == [None, None, None]
    finally:
        bare.close()


def test_legacy_query_map_is_built_after_a_searcher_has_opened(demo_indexes):
    """Lucene 8 indexes go through Anserini's own search(Map, k). Its query map used to come from
    Jackson's ObjectMapper fetched by name, which pyjnius answers, once any searcher has opened, with
    the typed class this module registers (no readValue): the legacy path failed on every query."""
    from pipeline.search import legacy_query

    searcher = ImpactSearcher(demo_indexes["demo"])
    try:
        weights = legacy_query({"cell": 3, "the": 120})
        assert weights.getClass().getName() == "java.util.HashMap"
        assert {key: weights.get(key) for key in weights.keySet().toArray()} == {"cell": 3.0, "the": 120.0}
        with pytest.raises(PipelineError, match="must be an integer"):
            legacy_query({"cell": 1.5})
    finally:
        searcher.close()


def test_a_cut_is_settled_only_when_no_unseen_document_can_tie_with_it():
    from pipeline.search import cut_settled

    scores = [9.0, 7.0, 7.0, 7.0]  # the best 4 fetched; the 2nd ties down to the deepest fetched
    at = scores.__getitem__
    assert not cut_settled(4, 4, 2, 100, at)  # a 5th document may score 7 too
    assert cut_settled(4, 4, 1, 100, at)  # 9 beats the deepest fetched
    assert cut_settled(4, 4, 2, 4, at)  # the whole index was asked
    assert cut_settled(3, 4, 2, 100, scores[:3].__getitem__)  # fewer came back than asked
    assert cut_settled(4, 8, 4, 100, at) and cut_settled(2, 4, 2, 100, at)  # no more than need came
