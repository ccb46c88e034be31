"""SPLADE's training losses: a ranking loss plus a sparsity regulariser, composed, not entangled.

These are the formulas; ``pipeline.training.objectives`` trains with them on sentence-transformers
(its regularisers call ``flops``/``l1``; its ranking losses are checked against these in tests).

* ``in_batch_contrastive`` (SPLADE v1): each query's positive against every other document of the
  batch (positives and hard negatives), softmax cross-entropy over dot products.
* ``margin_mse`` (SPLADE v2 distillation, Hofstätter et al. 2020): the student's margin
  ``s(q,d+) - s(q,d-)`` regressed onto a teacher's.
* ``flops`` (Paria et al. 2020): ``sum_j (mean_i |w_ij|)^2`` over a batch of vectors; it penalises
  terms that are frequent across documents, which is what costs in an inverted index.
* ``l1``: ``mean_i sum_j |w_ij|``.
* ``quadratic_warmup``: the SPLADE papers raise lambda quadratically to its value over the first
  steps, so the model learns to rank before it learns to be sparse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Dot products of every query with every document: (queries x documents)."""
    return queries @ documents.T


def in_batch_contrastive(queries: torch.Tensor, positives: torch.Tensor,
                         negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each query's own positive among all positives (and negatives) of the batch."""
    documents = positives if negatives is None else torch.cat([positives, negatives])
    logits = scores(queries, documents)
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def margin_mse(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
               teacher_positive: torch.Tensor, teacher_negative: torch.Tensor) -> torch.Tensor:
    student = (queries * positives).sum(-1) - (queries * negatives).sum(-1)
    return F.mse_loss(student, teacher_positive - teacher_negative)


def flops(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.abs().mean(0).pow(2).sum()


def l1(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.abs().sum(-1).mean()


REGULARISERS = {"flops": flops, "l1": l1}


def quadratic_warmup(weight: float, step: int, warmup_steps: int) -> float:
    """``weight * min(1, (step / warmup_steps)^2)``; the full weight when there is no warm-up."""
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, (step / warmup_steps) ** 2)
