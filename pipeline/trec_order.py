"""trec_eval's ranking order, the one rule both the run writer and the evaluator follow.

trec_eval reads each score into a C ``float`` and re-sorts a query's results by that score
descending, ties by document id descending (``strcmp``), ignoring the rank column. The search stage
writes runs in this order so a file's ranks are the ranks trec_eval evaluates; the evaluate stage
sorts by it to compute trec_eval's figures. Upstream of both (it needs nothing but numpy), so
neither stage imports the other.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def trec_eval_order(hits: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """``(docid, score)`` pairs by float32 score descending, then document id descending; scores unchanged."""
    hits = list(hits)
    scores = np.asarray([score for _, score in hits], dtype=np.float64).astype(np.float32).tolist()
    order = sorted(range(len(hits)), key=lambda i: (scores[i], hits[i][0]), reverse=True)
    return [hits[i] for i in order]
