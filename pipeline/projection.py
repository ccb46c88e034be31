"""The vocabulary projection kernel shared by encoding and training.

SPLADE's ``w_j = pool_i log(1 + ReLU(h_i . W_j + b_j))`` is, done naively, a ``tokens x vocab``
logits tensor per text (32 x 512 x 30,522 floats is 2 GB a batch). Here the projection is computed
in cache-sized vocabulary tiles over each text's real tokens only (the hidden states arrive packed,
padding dropped):

* max pooling: ``log1p`` and ``ReLU`` are monotone, so ``max_i log1p(relu(h_i . W_j + b_j))`` equals
  ``log1p(relu(max_i(h_i . W_j) + b_j))``; each tile keeps only the running max.
* sum pooling: each tile is activated and summed over the text's tokens.

Both are exact: the same dot products as the naive formula, in another order. ``MaxProjection``
is the same tiled max as an autograd function for training: the backward pass sends each term's
gradient to the token that won its max (what autograd does for ``max``), touching only the terms
with a non-zero gradient, so training never holds the batch x length x vocabulary tensor either.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pipeline.impacts import POOLINGS
VOCAB_TILE = 4096  # vocabulary rows per projection tile: a (tokens x tile) block stays in cache
GROUP_TOKENS = 768  # short texts are projected together until they reach this many tokens


def offsets(lengths: Sequence[int]) -> list[int]:
    """Start of each text in the packed rows, plus the end: ``[0, l0, l0 + l1, ...]``."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(int).tolist()


def groups(lengths: Sequence[int], min_tokens: int = GROUP_TOKENS) -> list[tuple[int, int]]:
    """Consecutive runs of texts holding at least ``min_tokens`` tokens (a long one alone)."""
    found, first, total = [], 0, 0
    for index, length in enumerate(lengths):
        total += length
        if total >= min_tokens:
            found.append((first, index + 1))
            first, total = index + 1, 0
    if first < len(lengths):
        found.append((first, len(lengths)))
    return found


def project(packed: torch.Tensor, lengths: Sequence[int], weight: torch.Tensor, bias: torch.Tensor,
            pooling: str = "max") -> torch.Tensor:
    """Pooled SPLADE weights (``len(lengths) x vocab``, fp32) from packed hidden states, tile by tile.

    Runs on whatever device ``packed`` is on, in the dtype ``packed`` and ``weight`` share (fp32:
    exact; bf16/fp16 under ``--precision``); the bias, the activation of pooled maxima and the
    result are fp32.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    vocab = weight.shape[0]
    out = torch.empty((len(lengths), vocab), dtype=torch.float32, device=packed.device)
    starts = offsets(lengths)
    spans = groups(lengths)
    buffer = torch.empty(max(starts[b] - starts[a] for a, b in spans) * VOCAB_TILE, dtype=packed.dtype,
                         device=packed.device)
    bias = bias.to(torch.float32)
    for first, last in spans:
        block = packed[starts[first]:starts[last]]
        rows = block.shape[0]
        for lo in range(0, vocab, VOCAB_TILE):
            hi = min(vocab, lo + VOCAB_TILE)
            logits = torch.mm(block, weight[lo:hi].T, out=buffer[:rows * (hi - lo)].view(rows, hi - lo))
            if pooling == "sum":
                logits = logits.float().add_(bias[lo:hi]).relu_().log1p_()
            for doc in range(first, last):
                part = logits[starts[doc] - starts[first]:starts[doc + 1] - starts[first]]
                if pooling == "max" and logits.dtype == torch.float32:
                    torch.amax(part, 0, out=out[doc, lo:hi])
                elif pooling == "max":
                    out[doc, lo:hi] = torch.amax(part, 0)
                else:
                    torch.sum(part, 0, out=out[doc, lo:hi])
    if pooling == "max":
        out.add_(bias).relu_().log1p_()
    return out


def project_rows(packed: np.ndarray, lengths: Sequence[int], weight_t: np.ndarray, bias: np.ndarray,
                 pooling: str = "max") -> np.ndarray:
    """``project``'s pooled weights through numpy's BLAS, for the few rows of a query batch.

    ``weight_t`` is the decoder weight transposed (``hidden x vocab``, C order), so each product is
    row-major and OpenBLAS runs it at full speed; on this AMD CPU torch's MKL sgemm takes 1.35x
    as long for this skinny shape (tens of rows against 30,522 columns; ``pipeline.blas``). OpenBLAS's
    rounding depends on the shape it is given (rows, columns, threads), so each product is one
    text against one fixed ``VOCAB_TILE``-column tile, on one BLAS thread (``blas.one_thread``): a
    query's weights are then the same in any batch. The same dot products as ``project``, summed
    by another library: fp32 rounding differs in the last bits.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    vocab = weight_t.shape[1]
    out = np.empty((len(lengths), vocab), dtype=np.float32)
    starts = offsets(lengths)
    for text in range(len(lengths)):
        block = packed[starts[text]:starts[text + 1]]
        for lo in range(0, vocab, VOCAB_TILE):
            hi = min(vocab, lo + VOCAB_TILE)
            logits = block @ weight_t[:, lo:hi]
            if pooling == "max":
                logits.max(0, out=out[text, lo:hi])
            else:
                logits += bias[lo:hi]
                np.log1p(np.maximum(logits, 0, out=logits), out=logits)
                logits.sum(0, out=out[text, lo:hi])
    if pooling == "max":
        out += bias
        np.log1p(np.maximum(out, 0, out=out), out=out)
    return out


def project_padded(hidden: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   pooling: str = "max") -> torch.Tensor:
    """The same pooled weights from a padded batch (``texts x length x hidden``) and its mask.

    For GPUs: one batched product per vocabulary tile (``texts x length x tile``), padding rows
    masked out, instead of a kernel launch per text. The dot products are the same as ``project``'s.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    texts, _, _ = hidden.shape
    vocab = weight.shape[0]
    out = torch.empty((texts, vocab), dtype=torch.float32, device=hidden.device)
    keep = mask.bool().unsqueeze(-1)
    bias = bias.to(torch.float32)
    for lo in range(0, vocab, VOCAB_TILE):
        hi = min(vocab, lo + VOCAB_TILE)
        logits = torch.matmul(hidden, weight[lo:hi].T)
        if pooling == "max":
            out[:, lo:hi] = logits.masked_fill_(~keep, float("-inf")).amax(1)
        else:
            activated = logits.float().add_(bias[lo:hi]).relu_().log1p_().masked_fill_(~keep, 0.0)
            out[:, lo:hi] = activated.sum(1)
    if pooling == "max":
        out.add_(bias).relu_().log1p_()
    return out


class MaxProjection(torch.autograd.Function):
    """``max_i h_i . W_j`` per text from packed hidden states, with exact sparse gradients."""

    @staticmethod
    def forward(ctx, packed, weight, starts):
        documents, vocab = len(starts) - 1, weight.shape[0]
        values = torch.empty((documents, vocab), dtype=packed.dtype, device=packed.device)
        winners = torch.empty((documents, vocab), dtype=torch.long, device=packed.device)
        for doc in range(documents):
            block = packed[starts[doc]:starts[doc + 1]]
            for lo in range(0, vocab, VOCAB_TILE):
                best = torch.max(block @ weight[lo:lo + VOCAB_TILE].T, 0)
                values[doc, lo:lo + VOCAB_TILE] = best.values
                winners[doc, lo:lo + VOCAB_TILE] = best.indices + starts[doc]
        ctx.save_for_backward(packed, weight, winners)
        return values

    @staticmethod
    def backward(ctx, grad):
        packed, weight, winners = ctx.saved_tensors
        docs, terms = grad.nonzero(as_tuple=True)
        g = grad[docs, terms].unsqueeze(1)
        tokens = winners[docs, terms]
        grad_packed = torch.zeros_like(packed).index_add_(0, tokens, g * weight[terms])
        grad_weight = torch.zeros_like(weight).index_add_(0, terms, g * packed[tokens])
        return grad_packed, grad_weight, None


def max_pool_trainable(packed: torch.Tensor, lengths: Sequence[int], weight: torch.Tensor,
                       bias: torch.Tensor) -> torch.Tensor:
    """Differentiable SPLADE max pooling: the same values as ``project(..., "max")``."""
    return torch.log1p(torch.relu(MaxProjection.apply(packed, weight, offsets(lengths)) + bias))
