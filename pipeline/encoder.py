"""SPLADE encoding: text to sparse vocabulary weights ``w_j = pool_i log(1 + ReLU(logit_ij))``.

Texts are tokenised in windows by a background thread while the previous window is encoded. Within
a window they are sorted by length and cut into batches by a token budget (``batch_size x
max_length`` padded tokens), so a batch of short texts holds many and padding stays small. The
transformer runs on a backend (``pipeline.backends``: torch on any device and precision, or an
int8 ONNX Runtime / OpenVINO graph on the CPU); the vocabulary projection is computed by
``pipeline.projection`` in tiles (shared with training): over packed real tokens on the CPU, over
the padded batch with masked rows on a GPU, where one batched kernel beats many small ones.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from pipeline import backends, blas, devices
from pipeline.devices import default_threads  # noqa: F401  (also re-exported: train, benchmarks)
from pipeline.impacts import ANSERINI_SCALE, QUANTISATIONS, SparseVector, quantise  # noqa: F401  (re-exported)
from pipeline.models import ModelRef, load_masked_lm  # noqa: F401  (load_masked_lm: used by train)
from pipeline.projection import (GROUP_TOKENS, POOLINGS, VOCAB_TILE, groups as _groups,  # noqa: F401
                                 project, project_padded, project_rows)

TOKENIZE_WINDOW = 4096  # texts tokenised ahead by the background thread
# On the CPU a batch only amortises per-call overhead: past about a thousand tokens its activations
# (tokens x 3,072 floats in a BERT-base feed-forward layer) leave the cache and every layer slows.
# bench/results/encode.base.json: the BERT-base-sized fp32 path went from 1.94x Pyserini on SciFact
# (8,192-token batches, the file at commit f9b9298) to 2.41x with 1,024, and on MS MARCO passages
# from 0.90x to 1.34x the plain loop.
CPU_BATCH_TOKENS = 1024


ACTIVATIONS = ("relu", "log1p_relu")  # SpladePooling's: log1p(relu(x)), or log1p of that again


def token_batches(lengths: Sequence[int], budget: int, one_length: bool = False) -> list[tuple[int, int]]:
    """Cut length-sorted texts into runs whose padded size (count x longest) fits ``budget`` tokens.

    A text longer than the budget forms a batch of its own. ``one_length`` also cuts wherever the
    length changes, so no batch is padded: attention then sums over exactly a text's own tokens and
    its vector is bit for bit the one it gets alone (padding changes the summation order of the
    softmax): a query encodes the same in any topics file, and the service's single queries match
    the search stage.
    """
    found, first = [], 0
    for index, length in enumerate(lengths):
        if index > first and ((one_length and length != lengths[first]) or (index - first + 1) * length > budget):
            found.append((first, index))
            first = index
    if first < len(lengths):
        found.append((first, len(lengths)))
    return found


class SpladeEncoder:
    """A BERT-style masked-LM checkpoint used as a SPLADE encoder.

    ``device``/``precision`` as in ``pipeline.devices``; ``backend`` as in ``pipeline.backends``
    (``torch``, the exact reference in fp32, or an int8 CPU graph).
    """

    def __init__(self, model: ModelRef, pooling: str = "max", max_length: int = 512,
                 threads: int | None = None, device: str | None = "cpu", precision: str | None = None,
                 backend: str = "torch", prompt: str = "", activation: str = "relu"):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if activation not in ACTIVATIONS or (activation == "log1p_relu" and pooling != "max"):
            # log1p is monotone, so it commutes with max pooling (applied once to the pooled
            # weight); with sum pooling it would have to run on every token before the sum
            raise ValueError(f"activation {activation!r} with {pooling} pooling is not supported")
        self.prompt = prompt  # prepended to every text before tokenisation (sentence-transformers' prompts)
        self.activation = activation
        import torch

        self.torch = torch
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.placement = backends.placement(backend, device, precision)
        self.backend_name = backend
        self.model_ref = model
        self.pooling = pooling
        self.tokenizer, mlm, decoder = load_masked_lm(model.location)
        mlm.eval()
        weight = decoder.weight.detach().clone().contiguous()  # vocab x hidden
        bias = getattr(decoder, "bias", None)
        bias = bias.detach().clone() if bias is not None else torch.zeros(weight.shape[0])
        self.vocab_size = weight.shape[0]
        self.max_length = min(max_length, self.tokenizer.model_max_length or max_length,
                              getattr(mlm.config, "max_position_embeddings", max_length))
        self.runner = backends.load(backend, model, mlm, self.placement, self.threads)
        device_ = self.placement.device
        # The projection runs in the compute precision; the bias and the pooled weights stay fp32.
        self.weight = weight.to(device_, self.placement.dtype).contiguous()
        self.bias = bias.to(device_, torch.float32)
        self.model = mlm
        vocab = self.tokenizer.get_vocab()
        self.id_to_token = [""] * max(self.vocab_size, max(vocab.values()) + 1)
        for token, index in vocab.items():
            self.id_to_token[index] = token
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._rows: tuple[np.ndarray, np.ndarray] | None = None
        self._rows_lock = threading.Lock()

    def describe(self) -> dict[str, str]:
        """The encoder record for manifests and index records (fingerprint includes backend, precision)."""
        return self.model_ref.describe(self.backend_name, self.precision)

    @property
    def precision(self) -> str:
        return self.runner.precision

    # -- tokenisation -------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        texts = [self.prompt + text for text in texts] if self.prompt else list(texts)
        return self.tokenizer(texts, truncation=True, max_length=self.max_length,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    # -- transformer --------------------------------------------------------------------------

    def _inputs(self, token_ids: Sequence[Sequence[int]]):
        """Padded ``input_ids`` and ``attention_mask`` (CPU tensors; pinned when bound for a GPU)."""
        torch = self.torch
        width = max(len(ids) for ids in token_ids)
        input_ids = np.full((len(token_ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
        input_ids, mask = torch.from_numpy(input_ids), torch.from_numpy(mask)
        if self.placement.kind == "cuda":
            input_ids, mask = input_ids.pin_memory(), mask.pin_memory()
        return input_ids, mask

    def _padded_hidden(self, token_ids: Sequence[Sequence[int]]):
        """Transformed hidden states of the padded batch, with its mask on the same device."""
        input_ids, mask = self._inputs(token_ids)
        hidden = self.runner.hidden(input_ids, mask)
        return hidden, mask.to(hidden.device, non_blocking=True)

    def _hidden(self, token_ids: Sequence[Sequence[int]]):
        """Transformed hidden states of the real tokens, packed: (sum of lengths) x hidden."""
        hidden, mask = self._padded_hidden(token_ids)
        return hidden[mask.bool()].contiguous()

    # -- vocabulary projection ----------------------------------------------------------------

    def _project(self, packed, lengths: Sequence[int]):
        """Pooled weights (len(lengths) x vocab, fp32) from packed hidden states (the shared kernel)."""
        return project(packed.to(self.weight.dtype), lengths, self.weight, self.bias, self.pooling)

    def _row_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The decoder weight transposed (hidden x vocab, C order) and the bias as numpy arrays, for
        ``project_rows``; made on the first query batch (a document-only run never holds the copy)."""
        with self._rows_lock:
            if self._rows is None:
                self._rows = (self.weight.T.contiguous().numpy(), self.bias.numpy())
            return self._rows

    def _pooled(self, batch: Sequence[Sequence[int]], queries: bool = False):
        """Pooled fp32 weights of one batch, on the backend's device.

        ``queries``: a batch of one length on one thread (``encode_queries``); on the CPU in fp32
        its projection goes through numpy's BLAS (``project_rows``), faster for so few rows.
        """
        if self.placement.accelerated:
            hidden, mask = self._padded_hidden(batch)
            return project_padded(hidden.to(self.weight.dtype), mask, self.weight, self.bias, self.pooling)
        lengths = [len(ids) for ids in batch]
        if queries and self.weight.dtype == self.torch.float32:
            weight_t, bias = self._row_weights()
            packed = self._hidden(batch).to(self.torch.float32).contiguous().numpy()
            return self.torch.from_numpy(project_rows(packed, lengths, weight_t, bias, self.pooling))
        return self._project(self._hidden(batch), lengths)

    def _sparse(self, dense) -> list[SparseVector]:
        """Rows of a dense (texts x vocab) tensor as sparse vectors; only non-zeros leave the device."""
        torch = self.torch
        rows, cols = torch.nonzero(dense, as_tuple=True)
        values = dense[rows, cols].float().cpu().numpy()
        cols = cols.to(torch.int32).cpu().numpy()
        counts = torch.bincount(rows, minlength=dense.shape[0]).cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum(counts)])
        if self.activation == "log1p_relu":  # max pooling only (checked at load): log1p after the max
            values = np.log1p(values)
        return [SparseVector(cols[bounds[i]:bounds[i + 1]], values[bounds[i]:bounds[i + 1]])
                for i in range(dense.shape[0])]

    # -- public API ---------------------------------------------------------------------------

    def token_budget(self, batch_size: int) -> int:
        """Padded tokens a batch may hold: ``batch_size x max_length`` on an accelerator, at most
        ``CPU_BATCH_TOKENS`` (or one longest text) on the CPU, where larger batches only run slower."""
        budget = batch_size * self.max_length
        if self.placement.accelerated:
            return budget
        return min(budget, max(CPU_BATCH_TOKENS, self.max_length))

    def encode_ids(self, token_ids: Sequence[Sequence[int]], batch_size: int = 32,
                   on_batch: Callable[[int], object] | None = None, queries: bool = False) -> list[SparseVector]:
        """Encode tokenised texts; batches of length-sorted texts fill ``token_budget(batch_size)`` tokens.

        ``queries`` (``encode_queries``' path) batches only texts of equal length (``token_batches(...,
        one_length=True)``), so each vector is exactly the text's own, and projects them with
        ``project_rows``; documents are padded, which is faster on long, varied texts. ``on_batch``
        receives the number of texts done after each batch (for progress bars).
        """
        torch = self.torch
        if not token_ids:
            return []
        order = sorted(range(len(token_ids)), key=lambda i: (len(token_ids[i]), i))
        lengths = [len(token_ids[i]) for i in order]
        result: list[SparseVector | None] = [None] * len(token_ids)
        with torch.inference_mode(), self.placement.autocast():
            for first, last in token_batches(lengths, self.token_budget(batch_size), one_length=queries):
                chosen = order[first:last]
                vectors = self._sparse(self._pooled([token_ids[i] for i in chosen], queries=queries))
                for i, vector in zip(chosen, vectors):
                    result[i] = vector
                if on_batch:
                    on_batch(len(chosen))
        return result  # type: ignore[return-value]

    @contextlib.contextmanager
    def one_thread(self) -> Iterator[None]:
        """Run torch and numpy's BLAS on one thread each meanwhile (process-wide). A no-op for torch
        when it already runs on one (the service's encoders; the service sets BLAS to one at start),
        so request threads sharing the model never race on either count."""
        with blas.one_thread(), blas.one_thread_of(self.torch.get_num_threads, self.torch.set_num_threads):
            yield

    def encode_queries(self, token_ids: Sequence[Sequence[int]], batch_size: int = 32,
                       on_batch: Callable[[int], object] | None = None) -> list[SparseVector]:
        """Tokenised queries, the one entry point of the search stage and the service.

        Batches hold queries of one length only (no padding) and run on one thread: with two, the
        matrix products and the attention split their sums by thread and a query's weights can change
        in the last bit (and, rarely, an integer weight) with the thread count or the batch. So a
        query's vector does not depend on the other topics in its file, and the service encodes it
        alone exactly as the search stage did. Without padding the transformer needs no mask (the
        torch backend's ``layer_path``), and the vocabulary projection of so few rows runs on numpy's
        BLAS (``project_rows``): together 1.24x the document path for a SciFact query through
        splade-tiny on this CPU (``bench/results/query_kernels.json``).
        """
        with self.one_thread():
            return self.encode_ids(token_ids, batch_size, on_batch, queries=True)

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> list[SparseVector]:
        """Encode texts; the next window is tokenised in a background thread meanwhile."""
        found: list[SparseVector] = []
        for ids in self._tokenized_windows(texts):
            found.extend(self.encode_ids(ids, batch_size, on_batch))
        return found

    def _tokenized_windows(self, texts: Sequence[str]) -> Iterator[list[list[int]]]:
        windows = [texts[lo:lo + TOKENIZE_WINDOW] for lo in range(0, len(texts), TOKENIZE_WINDOW)]
        if len(windows) <= 1:
            yield from (self.tokenize(window) for window in windows)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
            pending = pool.submit(self.tokenize, windows[0])
            for following in [*windows[1:], None]:
                ids = pending.result()
                if following is not None:
                    pending = pool.submit(self.tokenize, following)
                yield ids

    def tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.id_to_token[i] for i in ids]

    def to_terms(self, vector: SparseVector, scale: float, rule: str = "scale") -> dict[str, int]:
        """Quantised ``{token: int}`` as written to JsonVectorCollection files and impact queries."""
        ids, values = quantise(vector, scale, rule)
        return dict(zip(self.tokens(ids.tolist()), values.tolist()))
