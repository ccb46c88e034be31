"""The BM25 flat baseline through Anserini on the demo collection."""

from pipeline.bm25 import bm25_search, build_bm25_index
from pipeline.demo import DEMO_DATA
from pipeline.readers import read_topics


def test_bm25_flat_index_and_search(tmp_path):
    index = tmp_path / "bm25"
    record = build_bm25_index(DEMO_DATA / "corpus.jsonl", index, threads=2)
    assert record["documents"] == 40 and record["model"] == "bm25-flat"
    assert build_bm25_index(DEMO_DATA / "corpus.jsonl", index) == record  # reused, not rebuilt
    topics = read_topics(DEMO_DATA / "queries.jsonl")
    run = bm25_search(index, topics, hits=5, threads=2)
    assert run["q2"][0][0] == "ocean-05"  # "why is the sea salty" -> "Salt in sea water"
    scores = [score for _, score in run["q2"]]
    assert scores == sorted(scores, reverse=True) and len(run) == 10
    stemmed = bm25_search(index, {"x": "breads rising"}, hits=3)
    assert stemmed["x"][0][0] == "food-01"  # Porter stemming: breads -> bread, rising -> rise
    kept = bm25_search(index, {"food-01": "bread dough"}, hits=3)["food-01"]
    removed = bm25_search(index, {"food-01": "bread dough"}, hits=3, remove_query=True)["food-01"]
    assert kept[0][0] == "food-01" and removed == [hit for hit in kept if hit[0] != "food-01"]
