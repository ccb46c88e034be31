"""The SPLADE objective on sentence-transformers: a ranking loss plus query and document regularisers.

``SpladeLoss`` composes a ranking loss (``SparseMultipleNegativesRankingLoss``: in-batch
contrastive; ``SparseMarginMSELoss``: margin-MSE against teacher scores) with one regulariser for
the query column and one for the document columns, each with its own lambda. Its default
regulariser is FLOPS; it takes any module with ``compute_loss_from_embeddings``, which is how L1
comes in: ``Regulariser`` computes either formula of ``pipeline.losses`` and records the mean
number of non-zero terms it saw (postings per query, per document) for the training log.

sentence-transformers raises the lambdas over a fraction of the run; ``--lambda-warmup-steps``
counts steps, so ``RegulariserWarmup`` keeps its quadratic schedule and sets the length in steps.

Each column (queries, positives, negatives) goes through the model in a forward pass of its own,
padded to its own longest text, as the hand-written loop ran them (``ColumnwiseSpladeLoss``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from sentence_transformers.base.losses import column_merging_disabled
from sentence_transformers.sparse_encoder.callbacks import SpladeRegularizerWeightSchedulerCallback
from sentence_transformers.sparse_encoder.losses import (SparseMarginMSELoss, SparseMultipleNegativesRankingLoss,
                                                         SpladeLoss)

from pipeline import losses

RANKING_LOSSES = ("contrastive", "margin-mse")


class Regulariser(torch.nn.Module):
    """FLOPS or L1 of a batch of SPLADE vectors, in ``SpladeLoss``'s regulariser interface."""

    def __init__(self, kind: str = "flops") -> None:
        super().__init__()
        if kind not in losses.REGULARISERS:
            raise ValueError(f"regulariser must be one of {sorted(losses.REGULARISERS)}, got {kind!r}")
        self.kind = kind
        self.formula = losses.REGULARISERS[kind]
        self.reset()

    def reset(self) -> None:
        self.seen = {"value": 0.0, "postings": 0.0, "batches": 0}

    def compute_loss_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        value = self.formula(embeddings)
        self.seen["value"] += value.item()
        self.seen["postings"] += (embeddings > 0).sum(1).float().mean().item()
        self.seen["batches"] += 1
        return value

    def take(self) -> dict[str, float]:
        """Means over the batches seen since the last call (one step, with gradient accumulation several)."""
        count = max(1, self.seen["batches"])
        means = {"value": self.seen["value"] / count, "postings": self.seen["postings"] / count}
        self.reset()
        return means

    def get_config_dict(self) -> dict:
        return {"kind": self.kind}


class ColumnwiseSpladeLoss(SpladeLoss):
    """``SpladeLoss`` with a forward pass per column.

    sentence-transformers merges the document columns into one batch padded to the wider of the two;
    the loss is the same without dropout, but dropout then draws its masks over another shape, so
    with the loop's batches, learning rates and dropout stream (``callbacks.DropoutStream``) the
    trainer still trained another model than the loop did. On a CPU the merged batch also computes
    the narrower column's padding; on a GPU three smaller forward passes a step may take longer than two.
    """

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]],
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        with column_merging_disabled():
            return super().forward(sentence_features, labels)


def splade_loss(model, ranking: str, regulariser: str, lambda_q: float, lambda_d: float) -> SpladeLoss:
    """``SpladeLoss`` over ``ranking`` with our regulariser on queries and documents."""
    if ranking == "contrastive":
        base = SparseMultipleNegativesRankingLoss(model)  # dot products, scale 1: softmax over the batch
    elif ranking == "margin-mse":
        base = SparseMarginMSELoss(model)  # label: [teacher score of positive, of negative]
    else:
        raise ValueError(f"loss must be one of {RANKING_LOSSES}, got {ranking!r}")
    return ColumnwiseSpladeLoss(model, base, document_regularizer_weight=lambda_d, query_regularizer_weight=lambda_q,
                                document_regularizer=Regulariser(regulariser),
                                query_regularizer=Regulariser(regulariser))


class RegulariserWarmup(SpladeRegularizerWeightSchedulerCallback):
    """sentence-transformers' quadratic lambda schedule, its length given in steps.

    At step ``s`` each lambda is ``lambda * min(1, (s / steps)^2)`` (``pipeline.losses.quadratic_warmup``);
    with ``steps == 0`` the full lambdas apply from the first step.
    """

    def __init__(self, loss: SpladeLoss, steps: int) -> None:
        super().__init__(loss, scheduler_type="quadratic")
        self.steps = steps

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.warmup_steps = self.steps
        if self.steps <= 0:  # no warm-up: the parent would start from zero
            self.warmup_steps = None
            self.loss.query_regularizer_weight = self.max_query_regularizer_weight
            self.loss.document_regularizer_weight = self.max_document_regularizer_weight
            self._current_query_regularizer_weight = self.max_query_regularizer_weight
            self._current_document_regularizer_weight = self.max_document_regularizer_weight
