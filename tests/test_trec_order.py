"""trec_eval's ranking order (pipeline.trec_order), shared by the run writer and the evaluator."""

from __future__ import annotations

from pipeline import evaluate, search
from pipeline.trec_order import trec_eval_order

# 2^24 + 1 is not a float32: it reads as 2^24 and ties with it, so the document ids decide (descending).
HITS = [("d1", 3.0), ("d2", 16777216.0), ("d10", 16777217.0), ("d3", 3.0), ("d4", 5.5)]
EXPECTED = [("d2", 16777216.0), ("d10", 16777217.0), ("d4", 5.5), ("d3", 3.0), ("d1", 3.0)]


def test_float32_score_descending_then_docid_descending_scores_unchanged():
    assert trec_eval_order(HITS) == EXPECTED
    assert trec_eval_order([]) == []


def test_run_writer_and_evaluator_follow_the_same_order():
    lines = search.format_run({"q": HITS}).decode().splitlines()
    assert [line.split()[2] for line in lines] == [docid for docid, _ in EXPECTED]
    grades = {"d10": 3, "d4": 2, "d1": 1}
    assert evaluate.ranked_grades(dict(HITS), grades) == [0, 3, 2, 0, 1]
