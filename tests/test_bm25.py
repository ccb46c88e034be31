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
    # remove-query asks Lucene for one hit more, so the query's own document leaves a full list.
    deeper = bm25_search(index, {"food-01": "bread dough carbon dioxide water"}, hits=4)["food-01"]
    assert len(deeper) == 4 and "food-01" in [docid for docid, _ in deeper[:3]]
    removed = bm25_search(index, {"food-01": "bread dough carbon dioxide water"}, hits=3, remove_query=True)["food-01"]
    assert removed == [hit for hit in deeper if hit[0] != "food-01"][:3] and len(removed) == 3
