"""SPLADE encoding: text to sparse vocabulary weights ``w_j = pool_i log(1 + ReLU(logit_ij))``.

The transformer runs on length-sorted batches and padding is dropped before the vocabulary
projection, which ``pipeline.projection`` computes in cache-sized tiles (shared with training).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from pipeline.models import ModelRef
from pipeline.projection import GROUP_TOKENS, POOLINGS, VOCAB_TILE, groups as _groups, project  # noqa: F401


@dataclass(frozen=True)
class SparseVector:
    """Vocabulary ids with their (float) weights, ids ascending."""

    ids: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def quantise(vector: SparseVector, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``int(round(w * scale))`` with zeros dropped (round half to even, as Python's round)."""
    values = np.rint(vector.weights.astype(np.float64) * scale).astype(np.int64)
    keep = values > 0
    return vector.ids[keep], values[keep]


def load_masked_lm(location: str):
    """Tokenizer, masked-LM model and its decoder, with the decoder's forward made an identity.

    The model then returns the MLM head's transformed hidden states (dense + activation + layer
    norm, whatever the architecture calls those layers); the vocabulary projection is done by the
    caller with ``decoder.weight`` and ``decoder.bias``.
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(location)
        mlm = AutoModelForMaskedLM.from_pretrained(location)
    decoder = mlm.get_output_embeddings()
    decoder.forward = _identity
    return tokenizer, mlm, decoder


class SpladeEncoder:
    """A BERT-style masked-LM checkpoint used as a SPLADE encoder."""

    def __init__(self, model: ModelRef, pooling: str = "max", max_length: int = 512,
                 threads: int | None = None):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        import torch

        torch.set_num_threads(threads or default_threads())
        self.torch = torch
        self.model_ref = model
        self.pooling = pooling
        self.tokenizer, mlm, decoder = load_masked_lm(model.location)
        mlm.eval()
        self.weight = decoder.weight.detach().clone().contiguous()  # vocab x hidden
        bias = getattr(decoder, "bias", None)
        self.bias = (bias.detach().clone() if bias is not None else torch.zeros(self.weight.shape[0]))
        self.model = mlm
        self.vocab_size = self.weight.shape[0]
        self.max_length = min(max_length, self.tokenizer.model_max_length or max_length,
                              getattr(mlm.config, "max_position_embeddings", max_length))
        vocab = self.tokenizer.get_vocab()
        self.id_to_token = [""] * max(self.vocab_size, max(vocab.values()) + 1)
        for token, index in vocab.items():
            self.id_to_token[index] = token
        self.pad_id = self.tokenizer.pad_token_id or 0

    # -- tokenisation -------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    # -- transformer --------------------------------------------------------------------------

    def _hidden(self, token_ids: Sequence[Sequence[int]]):
        """Transformed hidden states of the real tokens, packed: (sum of lengths) x hidden."""
        torch = self.torch
        width = max(len(ids) for ids in token_ids)
        input_ids = torch.full((len(token_ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(token_ids), width), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        hidden = self.model(input_ids=input_ids, attention_mask=mask).logits
        return hidden[mask.bool()].contiguous()

    # -- vocabulary projection ----------------------------------------------------------------

    def _project(self, packed, lengths: Sequence[int]):
        """Pooled weights (len(lengths) x vocab) from packed hidden states (the shared tiled kernel)."""
        return project(packed, lengths, self.weight, self.bias, self.pooling)

    # -- public API ---------------------------------------------------------------------------

    def encode_ids(self, token_ids: Sequence[Sequence[int]], batch_size: int = 32,
                   on_batch: Callable[[int], object] | None = None) -> list[SparseVector]:
        """Encode tokenised texts; batches are formed over length-sorted inputs to avoid padding.

        ``on_batch`` receives the number of texts done after each batch (for progress bars).
        """
        torch = self.torch
        order = sorted(range(len(token_ids)), key=lambda i: (len(token_ids[i]), i))
        result: list[SparseVector | None] = [None] * len(token_ids)
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                chosen = order[lo:lo + batch_size]
                batch = [token_ids[i] for i in chosen]
                dense = self._project(self._hidden(batch), [len(ids) for ids in batch])
                for i, row in zip(chosen, dense):
                    ids = torch.nonzero(row).flatten()
                    result[i] = SparseVector(ids.numpy().astype(np.int32), row[ids].numpy())
                if on_batch:
                    on_batch(len(chosen))
        return result  # type: ignore[return-value]

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> list[SparseVector]:
        return self.encode_ids(self.tokenize(texts), batch_size, on_batch) if texts else []

    def tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.id_to_token[i] for i in ids]

    def to_terms(self, vector: SparseVector, scale: float) -> dict[str, int]:
        """Quantised ``{token: int}`` as written to JsonVectorCollection files and impact queries."""
        ids, values = quantise(vector, scale)
        return dict(zip(self.tokens(ids.tolist()), values.tolist()))


def _identity(hidden):
    return hidden
