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


def float32_keys(scores: Iterable[float]) -> np.ndarray:
    """Scores as trec_eval compares them: each read into a C ``float``."""
    return np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores,
                      dtype=np.float64).astype(np.float32)


def trec_eval_order(hits: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """``(docid, score)`` pairs by float32 score descending, then document id descending; scores unchanged."""
    hits = list(hits)
    scores = float32_keys(score for _, score in hits).tolist()
    order = sorted(range(len(hits)), key=lambda i: (scores[i], hits[i][0]), reverse=True)
    return [hits[i] for i in order]


def trec_eval_positions(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``trec_eval_order`` for ids held as UTF-8 bytes in a numpy array (``|S`` type) beside their
    scores: the positions in that order. Bytes compare as ``strcmp`` does, and UTF-8 keeps code-point
    order, so this is the order ``trec_eval_order`` gives the decoded ids; a caller holding a
    thousand scored candidates sorts them here and decodes only the ids it keeps."""
    return np.lexsort((ids, float32_keys(scores)))[::-1]


def within_cut(scores: np.ndarray, need: int) -> np.ndarray:
    """Positions of the scores that can be among the first ``need`` in this order whatever their ids:
    every score whose float32 key is at least the ``need``-th largest, so ties at the cut stay in.
    A caller that holds many scored candidates names (and sorts) only these."""
    keys = float32_keys(scores)
    if len(keys) <= need:
        return np.arange(len(keys))
    cut = np.partition(keys, len(keys) - need)[len(keys) - need]
    return np.flatnonzero(keys >= cut)
