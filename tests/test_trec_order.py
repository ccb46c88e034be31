"""trec_eval's ranking order (pipeline.trec_order), shared by the run writer and the evaluator."""

from __future__ import annotations

import numpy as np

from pipeline import evaluate, search
from pipeline.trec_order import trec_eval_order, trec_eval_positions

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


def test_within_cut_keeps_every_hit_that_can_make_the_cut_ties_included():
    import numpy as np

    from pipeline.trec_order import within_cut

    generator = np.random.default_rng(3)
    for _ in range(200):
        scores = generator.integers(0, 12, size=int(generator.integers(0, 40))) * 2**23  # float32 ties galore
        need = int(generator.integers(1, 45))
        ids = [f"d{i:03d}" for i in range(len(scores))]
        full = trec_eval_order(zip(ids, scores.tolist()))[:need]
        kept = within_cut(scores, need)
        assert trec_eval_order((ids[i], scores[i].item()) for i in kept)[:need] == full
        if len(scores) > need:  # nothing below the cut's float32 key is kept
            cut = np.float32(full[-1][1])
            assert all(np.float32(scores[i]) >= cut for i in kept)


def test_positions_over_id_bytes_follow_the_same_order() -> None:
    """The array form (ids as UTF-8 bytes, as the forward store keeps them) orders exactly as
    trec_eval_order does the decoded pairs: float32 ties, id ties broken descending, non-ASCII ids."""
    rng = np.random.default_rng(7)
    names = ["d1", "d10", "d2", "D2", "é", "z", "zz", "\u4e2d", "\U0001f600", "a b", "ä1", "a\0b", "\ud800",
             "\udfff", "\ue000"]
    ids = [f"{rng.choice(names)}{i % 5}" for i in range(300)]
    ids = list(dict.fromkeys(ids))  # distinct, as document ids in one ranking are
    # scores that collide as float32 although they differ as integers (beyond 2^24), and plain ties
    scores = [float(rng.choice([7, 7, 9, 2 ** 24 + 1, 2 ** 24])) for _ in ids]
    # as the forward store keeps them (pipeline.forward.id_bytes: a lone surrogate kept as is)
    raw = [docid.encode("utf-8", "surrogatepass") for docid in ids]
    stored = np.array(raw, dtype=f"S{max(map(len, raw))}")
    positions = trec_eval_positions(stored, np.asarray(scores))
    assert [(ids[i], scores[i]) for i in positions] == trec_eval_order(zip(ids, scores))
