"""Sparse vectors: the poolings that make them and the rule that turns their weights into impacts.

Kept apart from ``pipeline.encoder`` (which needs torch) so that an inference-free query side, and
the search stage that uses one, quantise weights without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


POOLINGS = ("max", "sum")  # over a text's tokens: SPLADE v2 and later, v1


@dataclass(frozen=True)
class SparseVector:
    """Vocabulary ids with their (float) weights, ids ascending."""

    ids: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def dense(vectors: Sequence[SparseVector], width: int, dtype: type = np.float32) -> np.ndarray:
    """``vectors`` as the rows of a ``len(vectors) x width`` matrix (zeros elsewhere): where two
    encoders are compared weight by weight, or every document scored against every query."""
    out = np.zeros((len(vectors), width), dtype=dtype)
    for row, vector in enumerate(vectors):
        out[row, vector.ids] = vector.weights
    return out


QUANTISATIONS = ("scale", "anserini")
ANSERINI_SCALE = 256 / 5  # what --quantisation anserini records as its scale


def quantise(vector: SparseVector, scale: float, rule: str = "scale") -> tuple[np.ndarray, np.ndarray]:
    """Integer impacts with zeros dropped; round half to even, as Python's round.

    ``scale``: ``round(w * scale)``, this project's rule. ``anserini``: ``round(w / 5 * 256)``,
    the expression Pyserini's SPLADE encoders evaluate (weights up to 5 spread over 256 levels),
    evaluated as they write it, so an index built with it matches theirs term for term
    (tests/test_quantisation.py). It is scale 51.2 under a name users can find: ``w * 51.2`` and
    ``w / 5 * 256`` differ in the last bit for about a third of float32 weights, but round alike
    for every float32 weight from 0.001 to 40 (checked exhaustively), so ``--scale 51.2`` indexes
    the same; the name also fixes the scale, where a typed one may be off.
    """
    weights = vector.weights.astype(np.float64)
    if rule == "anserini":
        values = np.rint(weights / 5 * 256)
    elif rule == "scale":
        values = np.rint(weights * scale)
    else:
        raise ValueError(f"quantisation must be one of {QUANTISATIONS}, got {rule!r}")
    values = values.astype(np.int64)
    keep = values > 0
    return vector.ids[keep], values[keep]
