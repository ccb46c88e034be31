"""bench/scale.py's comparison of engines at equal recall: pure logic over stage records."""

from __future__ import annotations

from conftest import bench_module

scale = bench_module("scale")


def row(p50: float, recall: float, **setting) -> dict:
    return {**setting, "latency_1_thread": {"p50_ms": p50}, "recall@10": recall}


def test_fastest_setting_that_reaches_each_recall_level() -> None:
    entry = {
        "two_step": {"result": {"settings": [
            row(3.0, 0.87, query_terms=5, k=10, candidates=200), row(7.7, 0.974, query_terms=10, k=10, candidates=50),
            row(8.3, 0.991, query_terms=10, k=10, candidates=100), row(2.0, 1.0, query_terms=10, k=1000, candidates=1000),
            row(12.7, 0.9975, query_terms=None, k=10, candidates=50)]}},
        "companion": {"result": {"prune_docs": 128}},
        "two_step@128i100": {"result": {"settings": [row(5.4, 0.962, query_terms=10, k=10, candidates=300)]}},
        "companion@128i100": {"result": {"prune_docs": 128, "min_impact": 100}},
        "seismic": {"result": {"k=10": [row(3.2, 0.92, query_cut=10, heap_factor=0.7),
                                        row(8.2, 0.969, query_cut=10, heap_factor=0.3),
                                        row(5.5, 0.958, query_cut=10, heap_factor=0.5)]}},
        "lucene": {"result": {"k=10": {"latency_1_thread": {"p50_ms": 12.8}}}},
    }
    by_level = {found["recall@10_at_least"]: found for found in scale.matched_recall(entry)}
    assert by_level[0.9]["seismic"]["setting"] == "query_cut 10, heap_factor 0.7"
    # every pruning measured counts, named by its rule
    assert by_level[0.9]["two_step"]["setting"] == "N=128, impact >= 100, 10 terms, k' 300"
    assert by_level[0.95]["seismic"]["p50_ms"] == 5.5 and by_level[0.97]["seismic"] is None
    assert by_level[0.97]["two_step"]["setting"] == "N=128, 10 terms, k' 50"  # k=1000 rows never count at k=10
    assert by_level[0.98]["two_step"]["setting"] == "N=128, 10 terms, k' 100"
    assert by_level[0.99]["two_step"]["p50_ms"] == 8.3 and by_level[0.99]["lucene_exhaustive_p50_ms"] == 12.8
    table = scale.matched_recall_table({"1000000": scale.matched_recall(entry)})
    assert "| 1,000,000 | 0.97 | 7.70 ms (N=128, 10 terms, k' 50; 0.9740) | not reached | 12.80 ms |" in table


def test_an_engine_not_measured_reaches_nothing() -> None:
    rows = scale.matched_recall({})
    assert [r["recall@10_at_least"] for r in rows] == list(scale.MATCHED_RECALL)
    assert all(r["two_step"] is None and r["seismic"] is None and r["lucene_exhaustive_p50_ms"] is None for r in rows)
