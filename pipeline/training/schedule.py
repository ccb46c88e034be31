"""The order and pace of a run: which triples form each batch, and the learning rate at each step.

Both follow the hand-written loop that ``train`` ran before it moved onto sentence-transformers'
trainer (commit a2a7ed4), because the trainer's own defaults changed the README's SciFact result
without any change to the objective:

* ``EpochShuffle``: every epoch, the triples in the order ``random.Random(seed + epoch).shuffle``
  gives, cut into full batches (the last partial batch dropped). The trainer's other samplers draw
  another order from torch's generator, and ``NO_DUPLICATES`` (the setting train used) also moves
  a query's second relevant pair out of a batch into a later one, so the batches the model sees
  differ from the loop's. Here the order is a pure function of the seed and the epoch, so a
  resumed run sees the batches an uninterrupted one would.
* ``linear_warmup_decay``: the learning rate rises over ``warmup`` steps starting at
  ``lr / warmup`` on the first step (the Hugging Face linear schedule starts at zero, so its first
  optimiser step moves nothing), then falls linearly to zero at the last step.

Two more follow the loop elsewhere, so that the trainer draws the loop's dropout masks: each column
has a forward pass of its own (``objectives.ColumnwiseSpladeLoss``), and the masks come from a
generator that only the steps advance (``callbacks.DropoutStream``).
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

from sentence_transformers.base.sampler import DefaultBatchSampler


class EpochShuffle(DefaultBatchSampler):
    """Full batches of indices, shuffled by ``random.Random(seed + epoch)``.

    The trainer builds it with its ``args.seed`` (the run's ``--seed``) and sets the epoch.
    """

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.sampler)))
        random.Random(self.seed + self.epoch).shuffle(order)
        size = self.batch_size
        for lo in range(0, len(order) - size + 1, size):
            yield order[lo:lo + size]
        if not self.drop_last and len(order) % size:
            yield order[len(order) - len(order) % size:]

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor of optimiser step ``step`` (0-based), for ``torch.optim.lr_scheduler.LambdaLR``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1 - (step - warmup) / max(1, total - warmup))

    return factor


def trainer_class():
    """``SparseEncoderTrainer`` whose learning rate follows ``linear_warmup_decay``.

    A function, so that importing this module does not import the trainer's dependencies.
    """
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer
    from torch.optim.lr_scheduler import LambdaLR

    class ScheduledTrainer(SparseEncoderTrainer):
        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:  # one scheduler per trainer: train() runs once
                factor = linear_warmup_decay(self.args.get_warmup_steps(num_training_steps), num_training_steps)
                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
            return self.lr_scheduler

    return ScheduledTrainer
