"""Two-step search: exact rescoring gives the exhaustive scores; pruned indexes refuse exhaustive search.

Real splade-tiny on the embedded demo set (40 passages, 10 queries), real Lucene indexes; the
forward store's own logic is also checked on random vectors against a brute-force dot product.
"""

import json
import shutil

import numpy as np
import pytest

from pipeline import cli, encoders, stages
from pipeline.demo import DEMO_DATA, collection_vectors
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.first_stage import build_companion, companion_folder, kept_postings, pruned_maxima
from pipeline.forward import ForwardStore, ForwardWriter, top_terms
from pipeline.readers import read_topics
from pipeline.search import ImpactSearcher, encode_queries
from pipeline.service.backend import check_indexes
from pipeline.trec_order import trec_eval_order
from pipeline.two_step import TwoStepOptions, TwoStepSearcher, side_file

QUIET = {"say": lambda text: None, "progress": False}
DOCS = 40  # the demo set's passages


@pytest.fixture(scope="module")
def built(tmp_path_factory, demo_indexes):
    """The demo collection (conftest's, read only), a full index with a companion pruned to 16 postings
    per document, and the same index with an unpruned companion (every posting kept)."""
    root = tmp_path_factory.mktemp("two-step")
    collection = demo_indexes["collection"]
    pruned, whole = root / "indexes" / "pruned", root / "indexes" / "whole"
    stages.index(collection, pruned, threads=2, prune_docs=16, say=QUIET["say"])
    stages.index(collection, whole, threads=2, prune_docs=10_000, say=QUIET["say"])
    return collection, pruned, whole


@pytest.fixture(scope="module")
def queries(built, encoder):
    """The demo topics as the search stage encodes them (the index's query side: splade-tiny, scale 100)."""
    return encode_queries(encoders.ModelQueries(encoder, 100, "scale"), read_topics(DEMO_DATA / "queries.jsonl"),
                          32, progress=False)


@pytest.fixture(scope="module")
def exhaustive(built, queries):
    """Every document each query matches, with Lucene's exhaustive score."""
    searcher = ImpactSearcher(built[1])
    try:
        return searcher.search(queries, DOCS)[0]
    finally:
        searcher.close()


def dot(query, vector):
    return sum(weight * vector.get(term, 0) for term, weight in query.items())


def test_rescored_scores_equal_the_exhaustive_scores(built, queries, exhaustive):
    collection, pruned, _ = built
    docs = collection_vectors(collection)
    searcher = TwoStepSearcher(pruned)
    try:
        ranked, counters, per_query = searcher.search(queries, 10, options=TwoStepOptions(candidates=20, query_terms=5))
    finally:
        searcher.close()
    compared = 0
    for qid, hits in ranked.items():
        full = dict(exhaustive[qid])
        assert hits == trec_eval_order(hits)
        for docid, score in hits:
            assert score == full[docid] == dot(queries[qid], docs[docid]["vector"])
            compared += 1
        assert per_query[qid]["candidates"] <= 20 or per_query[qid]["threshold"] > 0  # over 20 only for ties
    assert compared >= 30  # a pruned first stage still finds several documents per query


def test_without_pruning_two_step_is_the_exhaustive_run(built, queries, exhaustive):
    """Every posting kept, every query term, every document a candidate: the same run, and the bound
    proves every query's top k."""
    searcher = TwoStepSearcher(built[2])
    try:
        ranked, counters, per_query = searcher.search(queries, 10, options=TwoStepOptions(DOCS, None))
    finally:
        searcher.close()
    assert ranked == {qid: hits[:10] for qid, hits in exhaustive.items()}
    assert counters["could_miss"] == 0
    assert not any(info["could_miss"] for info in per_query.values())


def test_a_query_that_missed_a_document_says_it_could_have(built, queries, exhaustive):
    searcher = TwoStepSearcher(built[1])
    try:
        ranked, _, per_query = searcher.search(queries, 10, options=TwoStepOptions(10, 3))
    finally:
        searcher.close()
    missed = [qid for qid in queries if ranked[qid] != exhaustive[qid][:10]]
    assert missed  # so aggressive a pruning does miss documents here
    assert all(per_query[qid]["could_miss"] for qid in missed)
    for qid in missed:
        assert per_query[qid]["bound"] >= per_query[qid]["kth_score"]


def test_pruned_index_refuses_to_be_searched_as_the_full_one(built, tmp_path):
    first_stage = companion_folder(built[1]) / "first-stage"
    with pytest.raises(ConsistencyError, match="pruned first-stage index"):
        ImpactSearcher(first_stage)
    with pytest.raises(ConsistencyError, match="pruned first-stage index"):
        stages.search(first_stage, tmp_path / "run.txt", DEMO_DATA / "queries.jsonl", **QUIET)
    assert not (tmp_path / "run.txt").exists()
    with pytest.raises(InputError, match="no two-step companion"):
        TwoStepSearcher(first_stage)


def test_search_stage_writes_run_record_and_side_file(built, tmp_path, exhaustive):
    run = tmp_path / "run.txt"
    options = TwoStepOptions(candidates=30, query_terms=8)
    counters = stages.search(built[1], run, DEMO_DATA / "queries.jsonl", hits=10, two_step=options, **QUIET)
    record = json.loads((tmp_path / ".run.txt.splade-pipeline.json").read_text())
    assert record["inputs"]["two_step"]["candidates"] == 30
    assert record["inputs"]["two_step"]["query_terms"] == 8
    assert record["inputs"]["two_step"]["pruning"]["postings_per_doc"] == 16
    side = json.loads(side_file(run).read_text())
    assert set(side["queries"]) == set(read_topics(DEMO_DATA / "queries.jsonl"))
    assert side["counters"]["could_miss"] == counters["could_miss"]
    lines = [line.split() for line in run.read_text().splitlines()]
    for qid, _, docid, _, score, _ in lines:
        assert float(score) == dict(exhaustive[qid])[docid]
    with pytest.raises(ConsistencyError, match="other inputs"):
        stages.search(built[1], run, DEMO_DATA / "queries.jsonl", hits=10, two_step=TwoStepOptions(40, 8), **QUIET)


def test_bad_two_step_options(built, tmp_path):
    with pytest.raises(PipelineError, match="fewer than --hits"):
        stages.search(built[1], tmp_path / "r.txt", DEMO_DATA / "queries.jsonl", hits=50,
                      two_step=TwoStepOptions(candidates=10), **QUIET)
    with pytest.raises(PipelineError, match="--query-terms must be"):
        TwoStepOptions(query_terms=0).check(10)
    with pytest.raises(PipelineError, match="--prune-docs must be"):
        stages.index(built[0], tmp_path / "index", prune_docs=0, say=QUIET["say"])
    assert not (tmp_path / "index").exists()  # refused before any index was built
    assert not (tmp_path / "r.txt").exists()


def test_two_step_on_an_index_without_companion_is_refused(demo_indexes, tmp_path):
    plain = demo_indexes["bare"]  # indexed without --prune-docs: no companion is built
    assert not companion_folder(plain).exists()
    with pytest.raises(InputError, match="no two-step companion"):
        stages.search(plain, tmp_path / "run.txt", DEMO_DATA / "queries.jsonl", two_step=TwoStepOptions(), **QUIET)
    assert not (tmp_path / "run.txt").exists()


def test_companion_survives_a_new_query_side_and_searches_with_it(built, tmp_path):
    """index --query-encoder rewrites only the record's query side: the companion (document vectors)
    stays valid, and two-step search encodes with the new side (here inference-free token weights)."""
    collection, index = built[0], tmp_path / "index"
    shutil.copytree(built[1], index)
    before = (companion_folder(index) / "two-step.json").read_bytes()
    stages.index(collection, index, threads=1, query_encoder="tokens", say=QUIET["say"])
    assert json.loads((index / "splade-pipeline.json").read_text())["query_encoder"]["kind"] != "model"
    run = tmp_path / "run.txt"
    stages.search(index, run, DEMO_DATA / "queries.jsonl", hits=10, two_step=TwoStepOptions(DOCS, None), **QUIET)
    assert (companion_folder(index) / "two-step.json").read_bytes() == before
    docs = collection_vectors(collection)
    side = encoders.load_queries(encoders.query_spec(json.loads((index / "splade-pipeline.json").read_text())))
    topics = read_topics(DEMO_DATA / "queries.jsonl")
    tokens = dict(zip(topics, side.encode(list(topics.values()))))
    lines = [line.split() for line in run.read_text().splitlines()]
    assert lines
    for qid, _, docid, _, score, _ in lines:
        assert float(score) == dot(tokens[qid], docs[docid]["vector"])


def test_cli_refuses_two_step_settings_without_two_step(built, tmp_path, capsys):
    code = cli.main(["search", "--index", str(built[1]), "--topics", str(DEMO_DATA / "queries.jsonl"),
                     "--output", str(tmp_path / "run.txt"), "--candidates", "50", "--quiet"])
    assert code == 2
    assert "--candidates needs --two-step" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["index", "--collection", str(built[0]), "--index", str(tmp_path / "i"), "--prune-docs", "0"])
    assert exit_info.value.code == 2


def test_changed_forward_store_is_refused(built, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built[1], copy)
    impacts = companion_folder(copy) / "forward" / "postings.bin"
    data = bytearray(impacts.read_bytes())
    data[0] ^= 1
    impacts.write_bytes(bytes(data))
    with pytest.raises(InputError, match="postings.bin"):
        TwoStepSearcher(copy)


def test_lucene_numbers_map_to_the_rows_of_the_same_documents(built, queries):
    """The companion's map from first-stage Lucene numbers to forward-store rows, read against the
    ids Lucene itself stores for each number; two-step search reads candidates through it."""
    from pipeline import jvm

    searcher = TwoStepSearcher(built[1])
    try:
        reader = searcher.first.reader
        numbers = int(reader.maxDoc())
        assert numbers == DOCS and len(searcher.lucene_rows) == numbers
        stored = jvm.autoclass("io.anserini.index.IndexReaderUtils")
        ids = [stored.convertLuceneDocidToDocid(reader, number) for number in range(numbers)]
        assert searcher.store.docids(searcher.lucene_rows) == ids
        compared = 0
        for qid, terms in queries.items():
            found, scores = searcher.first.top_numbers(terms, 7)
            compared += len(found)
            ranked = searcher.first.search({qid: terms}, DOCS)[0][qid]  # every match
            cut = ranked[min(7, len(ranked)) - 1][1] if ranked else 0
            expected = sorted(hit for hit in ranked if hit[1] >= cut)  # the first 7 and all tied with the 7th
            assert sorted((ids[n], float(s)) for n, s in zip(found.tolist(), scores.tolist())) == expected
            assert scores.tolist() == sorted(scores.tolist(), reverse=True)
        assert compared >= 40
    finally:
        searcher.close()


def test_candidates_tied_at_the_cut_are_all_kept(built):
    """Lucene breaks ties by document number, which depends on the build: the first stage keeps every
    hit tied with the k'-th, so the candidates are the same for every build."""
    searcher = TwoStepSearcher(built[2])  # every posting kept: single-term scores are the impacts
    try:
        tied = 0
        for term in sorted(searcher.store.term_ids)[:400]:
            ranked = searcher.first.search({"q": {term: 1}}, DOCS)[0]["q"]
            for depth in range(1, len(ranked)):
                if ranked[depth - 1][1] == ranked[depth][1]:  # a tie straddles the cut at depth
                    numbers, scores = searcher.first.top_numbers({term: 1}, depth)
                    expected = [hit for hit in ranked if hit[1] >= ranked[depth - 1][1]]
                    assert len(numbers) == len(expected) > depth and scores.min() == ranked[depth - 1][1]
                    tied += 1
        assert tied >= 5
    finally:
        searcher.close()


def test_companion_without_lucene_numbers_is_refused(built, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built[1], copy)
    record_path = companion_folder(copy) / "two-step.json"
    record = json.loads(record_path.read_text())
    del record["lucene_rows"]
    record_path.write_text(json.dumps(record))
    with pytest.raises(ConsistencyError, match="earlier version"):
        TwoStepSearcher(copy)
    shutil.copytree(built[1], tmp_path / "again")
    (companion_folder(tmp_path / "again") / "lucene-rows.bin").write_bytes(b"\0" * 4 * DOCS)
    with pytest.raises(InputError, match="lucene-rows.bin"):
        TwoStepSearcher(tmp_path / "again")


def test_rebuilding_the_full_index_drops_its_companion(built, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built[1], copy)
    stages.index(built[0], copy, threads=1, overwrite=True, say=QUIET["say"])
    assert not companion_folder(copy).exists()
    with pytest.raises(InputError, match="no two-step companion"):
        TwoStepSearcher(copy)


# -- the forward store alone (pure logic, random vectors) --------------------------------------------

def random_vectors(count, vocabulary, seed=7):
    generator = np.random.default_rng(seed)
    vectors = []
    for _ in range(count):
        size = int(generator.integers(0, 30))
        terms = generator.choice(vocabulary, size=size, replace=False)
        vectors.append({f"t{t}": int(generator.integers(1, 400)) for t in terms})
    return vectors


def test_forward_store_dot_products_match_brute_force(tmp_path):
    vectors = random_vectors(300, 120)
    writer = ForwardWriter(tmp_path / "forward")
    ids = [f"doc-{i:04d}" for i in range(len(vectors))][::-1]  # not in sorted order
    kept = [(docid, vector) for docid, vector in zip(ids, vectors) if vector]
    for docid, vector in kept:
        writer.add(docid, top_terms(vector, None))
    record = writer.finish()
    assert record["documents"] == len(kept)
    store = ForwardStore(tmp_path / "forward")
    query = {"t1": 5, "t7": 300, "t50": 2, "absent": 9}
    docids = [docid for docid, _ in kept]
    assert store.scores(query, store.rows(docids)).tolist() == [dot(query, vector) for _, vector in kept]
    assert store.vector(docids[3]) == kept[3][1]
    assert list(store.vector(docids[3]).values()) == sorted(kept[3][1].values(), reverse=True)
    with pytest.raises(ConsistencyError, match="not in the forward store"):
        store.rows(["missing"])
    assert store.find(["missing", docids[5], docids[5] + "x", docids[5][:-1], ""]).tolist() == \
        [-1, store.rows([docids[5]])[0], -1, -1, -1]  # an id longer than the widest is not cut to a prefix
    rows = store.rows(docids)
    assert store.docids(rows[::-1]) == docids[::-1]
    maxima = pruned_maxima(store, 5, chunk=7)
    for term, term_id in store.term_ids.items():
        pruned = [w for _, v in kept for t, w in top_terms(v, None)[5:] if t == term]
        assert maxima[term_id] == max(pruned, default=0)


def test_wide_terms_and_impacts_pack_into_64_bits_and_read_back_exactly(tmp_path):
    """A vocabulary past 16 bits and impacts past 16 bits: postings pack into uint64, scores stay exact."""
    vocabulary = [f"w{i}" for i in range(70_000)]
    vectors = [{term: 1 + (i * 7919 + j) % 3 for j, term in enumerate(vocabulary[i::3])} for i in range(3)]
    vectors.append({"w69999": 2_000_000, "w0": 1})
    writer = ForwardWriter(tmp_path / "forward")
    for i, vector in enumerate(vectors):
        writer.add(f"d{i}", top_terms(vector, None))
    record = writer.finish()
    store = ForwardStore(tmp_path / "forward")
    assert record["impact_bits"] == 21 and store.postings.dtype == np.uint64
    query = {"w69999": 1_000_000, "w0": 3, "w1": 5, "w4": 2}
    ids = [f"d{i}" for i in range(len(vectors))]
    assert store.scores(query, store.rows(ids)).tolist() == [dot(query, vector) for vector in vectors]
    assert store.vector("d3") == {"w69999": 2_000_000, "w0": 1} and store.vector("d1") == vectors[1]


def test_a_forward_store_of_the_earlier_format_asks_for_a_rebuild(built, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built[1], copy)
    path = companion_folder(copy) / "forward" / "forward.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": "splade-pipeline forward store 1"}))
    with pytest.raises(ConsistencyError, match="earlier version.*--prune-docs N .no --overwrite needed"):
        TwoStepSearcher(copy)
    with pytest.raises(ConsistencyError, match="earlier version"):  # the service's check, before any model loads
        check_indexes({"i": copy}, two_step=True)
    # the index stage builds such a companion again by itself: it is derived data, and the rule is unchanged
    record, rebuilt = build_companion(built[0], copy, prune_docs=json.loads(
        (companion_folder(copy) / "two-step.json").read_text())["pruning"]["postings_per_doc"])
    assert rebuilt and json.loads(path.read_text())["format"] == "splade-pipeline forward store 2"
    TwoStepSearcher(copy).close()


def test_service_searches_two_step_when_asked(built, queries, tmp_path):
    from pipeline.service.backend import check_indexes, close_indexes, open_indexes

    served = open_indexes({"demo": built[1]}, threads=1, two_step=True)
    try:
        index = served["demo"]
        assert index.describe()["two_step"]["pruning"]["postings_per_doc"] == 16
        found = index.search(queries, 10)
    finally:
        close_indexes(served)
    searcher = TwoStepSearcher(built[1])
    try:
        assert found == searcher.search(queries, 10)[0]
    finally:
        searcher.close()
    plain = tmp_path / "plain"
    shutil.copytree(built[1], plain, ignore=shutil.ignore_patterns("two-step"))
    with pytest.raises(InputError, match="no two-step companion"):
        check_indexes({"plain": plain}, two_step=True)
    with pytest.raises(ConsistencyError, match="pruned first-stage index"):
        check_indexes({"first": companion_folder(built[1]) / "first-stage"})


def test_exhaustive_rerun_removes_the_two_step_side_file(built, tmp_path):
    run = tmp_path / "run.txt"
    stages.search(built[1], run, DEMO_DATA / "queries.jsonl", hits=10, two_step=TwoStepOptions(), **QUIET)
    assert side_file(run).is_file()
    stages.search(built[1], run, DEMO_DATA / "queries.jsonl", hits=10, overwrite=True, **QUIET)
    assert not side_file(run).exists()


@pytest.mark.slow  # a whole run: encode, index, companion, search, evaluate
def test_run_two_step_names_its_run_and_records_its_settings(tmp_path):
    from pipeline.experiment import run_dataset

    result = run_dataset(DEMO_DATA, name="demo", root=tmp_path, hits=20, progress=False, say=lambda text: None,
                         two_step=TwoStepOptions(candidates=40, query_terms=None), prune_docs=24)
    assert result["run"].endswith("run.demo.splade-tiny-two-step.test.txt")
    assert result["two_step"]["prune_docs"] == 24
    assert result["two_step"]["two_step"] == {"candidates": 40, "query_terms": None}
    record = json.loads((tmp_path / "indexes" / "demo.splade-tiny" / "two-step" / "two-step.json").read_text())
    assert record["pruning"]["postings_per_doc"] == 24
    with pytest.raises(PipelineError, match="--prune-docs needs --two-step"):
        run_dataset(DEMO_DATA, name="demo", root=tmp_path, prune_docs=24, progress=False, say=lambda text: None)


def test_two_indexes_searched_at_once_each_answer_from_its_own(built, queries):
    """pyjnius binds a Java class's method to an instance at each call: two threads searching two
    indexes (two IndexSearchers) at once could run one's search on the other's index, silently."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.first_stage import companion_folder

    full = ImpactSearcher(built[1])
    pruned = ImpactSearcher(companion_folder(built[1]) / "first-stage", first_stage=True)
    try:
        items = list(queries.items())
        expected = {name: {qid: searcher.search({qid: terms}, 10)[0][qid] for qid, terms in items}
                    for name, searcher in (("full", full), ("pruned", pruned))}
        assert expected["full"] != expected["pruned"]  # the two indexes answer differently

        def loop(name, searcher):
            return sum(searcher.search({qid: terms}, 10)[0][qid] != expected[name][qid]
                       for _ in range(40) for qid, terms in items)

        with ThreadPoolExecutor(2) as pool:
            wrong = list(pool.map(loop, ("full", "pruned"), (full, pruned)))
        assert wrong == [0, 0]
    finally:
        full.close()
        pruned.close()


def test_a_collection_with_a_duplicate_id_gets_no_companion_and_the_error_names_both_lines(tmp_path):
    """Lucene holds both records (the full index is built), but the forward store finds vectors by id."""
    folder = tmp_path / "made-elsewhere"
    folder.mkdir()
    (folder / "docs.jsonl").write_text('{"id": "a", "contents": "", "vector": {"coral": 3}}\n'
                                       '{"id": "b", "contents": "", "vector": {"reef": 2}}\n'
                                       '{"id": "a", "contents": "", "vector": {"tide": 1}}\n')
    with pytest.raises(InputError, match=r"docs.jsonl:3: duplicate document id 'a' \(first at docs.jsonl line 1\)"):
        stages.index(folder, tmp_path / "index", prune_docs=2, say=QUIET["say"])
    assert not companion_folder(tmp_path / "index").exists() and not list(tmp_path.glob(".*building*"))


def test_a_document_without_postings_scores_zero_wherever_its_row_sits(tmp_path):
    """Rows are summed by segment; an empty row must neither borrow a neighbour's postings nor
    shift theirs, first, in the middle or last."""
    writer = ForwardWriter(tmp_path / "forward")
    vectors = {"e0": {}, "a": {"t1": 3, "t2": 4}, "e1": {}, "b": {"t2": 10}, "e2": {}}
    for docid, vector in vectors.items():
        writer.add(docid, top_terms(vector, None))
    writer.finish()
    store = ForwardStore(tmp_path / "forward")
    query = {"t1": 2, "t2": 5}
    for order in (list(vectors), list(vectors)[::-1], ["a", "e0", "e2", "b", "e1"]):
        assert store.scores(query, store.rows(order)).tolist() == [dot(query, vectors[d]) for d in order]
    # an id ending in NUL is not its prefix, though numpy compares |S values without trailing NULs
    assert store.find(["a\0", "a"]).tolist() == [-1, store.rows(["a"])[0]]


def test_products_past_2_to_the_53_stay_exact_in_a_64_bit_store(tmp_path):
    """uint64 postings times signed weights must not go through float64 (exact to 2^53 only)."""
    writer = ForwardWriter(tmp_path / "forward")
    vectors = {"a": {"t1": 2 ** 30 + 1, "t2": 1, "t3": 1}, "b": {"t2": 3}}
    for docid, vector in vectors.items():
        writer.add(docid, top_terms(vector, None))
    writer.finish()
    store = ForwardStore(tmp_path / "forward")
    assert store.postings.dtype == np.uint64
    query = {"t1": 2 ** 31 - 1, "t2": 1}
    assert store.scores(query, store.rows(["a", "b"])).tolist() == [dot(query, vectors[d]) for d in ("a", "b")]


def test_removing_the_query_s_own_document_matches_exhaustive_search(built, queries, exhaustive):
    """Each query renamed to the id of its own best (or third) hit: with --remove-query two-step drops
    that document as exhaustive search does, counts the same queries, and keeps every other hit."""
    renamed = {exhaustive[qid][position][0]: terms
               for position, (qid, terms) in zip((0, 2) * len(queries), queries.items())}
    full = ImpactSearcher(built[1])
    searcher = TwoStepSearcher(built[2])
    try:
        expected, expected_counters = full.search(renamed, 10, remove_query=True)
        ranked, counters, per_query = searcher.search(renamed, 10, remove_query=True,
                                                      options=TwoStepOptions(DOCS, None))
        kept, _, _ = searcher.search(renamed, 10, remove_query=["no-such-query"], options=TwoStepOptions(DOCS, None))
    finally:
        full.close()
        searcher.close()
    assert ranked == expected
    assert counters["self_hits_removed"] == expected_counters["self_hits_removed"] == len(renamed)
    assert all(info["self_hit_removed"] for info in per_query.values())
    assert all(qid not in [docid for docid, _ in hits] for qid, hits in ranked.items())
    assert all(qid in [docid for docid, _ in hits] for qid, hits in kept.items())


@pytest.fixture(scope="module")
def by_impact(built, tmp_path_factory):
    """The demo collection indexed with a companion pruned by impact too: at most 16 postings per
    document, none under the second-smallest of the documents' largest impacts (so the document with
    the smallest largest impact keeps nothing)."""
    collection = built[0]
    docs = collection_vectors(collection)
    floor = sorted(max(doc["vector"].values()) for doc in docs.values())[1]
    index = tmp_path_factory.mktemp("by-impact") / "index"
    stages.index(collection, index, threads=2, prune_docs=16, prune_impact=floor, say=QUIET["say"])
    return index, floor, docs


def test_pruning_by_impact_keeps_the_rule_and_bounds_what_it_drops(by_impact):
    index, floor, docs = by_impact
    record = json.loads((companion_folder(index) / "two-step.json").read_text())
    assert record["pruning"] == {"rule": "top postings per document by impact, ties by term, then those of at "
                                         "least min_impact", "postings_per_doc": 16, "min_impact": floor}
    kept = {docid: kept_postings(top_terms(doc["vector"], None), 16, floor) for docid, doc in docs.items()}
    emptied = sum(1 for postings in kept.values() if not postings)
    assert emptied >= 1 and record["pruned_to_nothing"] == emptied
    assert record["indexed"] == DOCS - emptied
    assert record["postings"]["first_stage"] == sum(map(len, kept.values()))
    assert all(impact >= floor for postings in kept.values() for _, impact in postings)
    store = ForwardStore(companion_folder(index) / "forward")
    rows = [top_terms(doc["vector"], None) for doc in docs.values()]
    assert nonzero_by_term(store, pruned_maxima(store, 16, floor)) == largest_dropped(rows, 16, floor)


def largest_dropped(rows: list[list[tuple[str, int]]], prune_docs: int, floor: int) -> dict[str, int]:
    """Brute force over ``kept_postings``: per term, the largest impact a row leaves out of the first stage."""
    dropped: dict[str, int] = {}
    for postings in rows:
        kept = kept_postings(postings, prune_docs, floor)
        for term, impact in postings:
            if (term, impact) not in kept:
                dropped[term] = max(dropped.get(term, 0), impact)
    return dropped


def nonzero_by_term(store: ForwardStore, maxima: np.ndarray) -> dict[str, int]:
    return {store.words[t]: int(m) for t, m in enumerate(maxima) if m}


def test_search_on_an_impact_pruned_first_stage_is_exact_where_it_finds_and_says_where_it_could_miss(
        by_impact, queries, exhaustive):
    index, floor, docs = by_impact
    searcher = TwoStepSearcher(index)
    try:
        ranked, _, per_query = searcher.search(queries, 10, options=TwoStepOptions(20, None))
    finally:
        searcher.close()
    never = {docid for docid, doc in docs.items() if max(doc["vector"].values()) < floor}
    for qid, hits in ranked.items():
        full = dict(exhaustive[qid])
        assert all(score == full[docid] for docid, score in hits)
        assert not never & {docid for docid, _ in hits}  # pruned to nothing: not in the first stage
        if hits != exhaustive[qid][:10]:
            assert per_query[qid]["could_miss"]
    assert sum(map(len, ranked.values())) >= 10
    assert any(hits != exhaustive[qid][:10] for qid, hits in ranked.items())  # this floor does miss some


def test_another_impact_floor_needs_overwrite_and_the_cli_checks_the_option(by_impact, built, tmp_path, capsys):
    index, floor, _ = by_impact
    with pytest.raises(ConsistencyError, match=f"--prune-docs 16 --prune-impact {floor}; use --overwrite to "
                                               f"rebuild it with --prune-docs 16 --prune-impact {floor + 1}"):
        build_companion(built[0], index, 16, min_impact=floor + 1)
    code = cli.main(["index", "--collection", str(built[0]), "--index", str(tmp_path / "i"), "--prune-impact", "5",
                     "--quiet"])
    assert code == 2 and "--prune-impact needs --prune-docs" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["index", "--collection", str(built[0]), "--index", str(tmp_path / "i"), "--prune-docs", "8",
                  "--prune-impact", "-1"])
    assert exit_info.value.code == 2
    with pytest.raises(PipelineError, match="--prune-impact needs --two-step"):
        from pipeline.experiment import run_dataset
        run_dataset(DEMO_DATA, name="demo", root=tmp_path, prune_impact=10, progress=False, say=lambda text: None)


def test_a_companion_without_a_floor_keeps_the_record_earlier_versions_wrote(built):
    """Floor 0 is no floor: the rule recorded is the one companions built before impact pruning
    carry, so asking for the same pruning again finds them built (no rebuild, no --overwrite)."""
    record = json.loads((companion_folder(built[1]) / "two-step.json").read_text())
    assert record["pruning"] == {"rule": "top postings per document by impact, ties by term", "postings_per_doc": 16}
    again, rebuilt = build_companion(built[0], built[1], 16, min_impact=0)
    assert not rebuilt and again == record


def test_pruned_maxima_with_a_floor_agree_with_the_rule_across_chunks(tmp_path):
    """Random rows (ties, rows shorter than N, rows all under the floor) read in chunks of 7: the
    largest dropped impact per term equals a brute force over ``kept_postings``."""
    rng = np.random.default_rng(5)
    writer = ForwardWriter(tmp_path / "forward")
    rows = []
    for doc in range(60):
        vector = {f"t{t}": int(rng.integers(1, 12)) for t in rng.choice(40, int(rng.integers(1, 15)), replace=False)}
        rows.append(top_terms(vector, None))
        writer.add(f"d{doc}", rows[-1])
    writer.finish()
    store = ForwardStore(tmp_path / "forward")
    for prune_docs, floor in ((3, 0), (3, 6), (8, 9), (20, 11)):
        maxima = pruned_maxima(store, prune_docs, floor, chunk=7)
        assert nonzero_by_term(store, maxima) == largest_dropped(rows, prune_docs, floor)


def test_a_floor_above_every_impact_is_refused_by_name(built, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(built[1], index)
    before = (companion_folder(index) / "two-step.json").read_bytes()
    with pytest.raises(PipelineError, match="--prune-impact 100000 leaves no posting in the first stage"):
        build_companion(built[0], index, 16, overwrite=True, min_impact=100_000)
    assert (companion_folder(index) / "two-step.json").read_bytes() == before  # the companion it had stays


def test_run_refuses_prune_impact_without_two_step(tmp_path, capsys):
    code = cli.main(["run", "--dataset", str(DEMO_DATA), "--root", str(tmp_path), "--prune-impact", "10", "--quiet"])
    assert code == 2 and "--prune-impact needs --two-step" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_impact_pruned_first_stage_refuses_exhaustive_search_naming_its_rule(by_impact):
    index, floor, _ = by_impact
    with pytest.raises(ConsistencyError, match=f"16 postings per document, none under impact {floor}"):
        ImpactSearcher(companion_folder(index) / "first-stage")
