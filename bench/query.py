#!/usr/bin/env python
"""Query encoding latency on the CPU, one query at a time, as the search service encodes them.

Each SciFact query is encoded alone by every variant in turn (the variants alternate query by
query, so a slow spell of a shared machine touches them all alike), torch on one thread:
* ``splade-pipeline``: ``SpladeEncoder.encode_queries`` as the search stage and the service run
  it: the model's layers without a mask (``layer_path``), the vocabulary projection through numpy's
  BLAS (``project_rows``);
* ``document path``: what queries took before: the model's full forward and the tiled torch
  projection (the encode stage's path, one thread);
* ``pyserini``: Pyserini's ``SpladeQueryEncoder.encode`` as its users call it;
* ``baseline``: the plain ``inference_mode`` loop over the naive formula.
Also the skinny product itself (a query's rows against the whole vocabulary) in torch and numpy,
and how far the pipeline's weights are from the baseline's (the same formula in fp32).

    python bench/query.py                         # bench/results/query_kernels.json (splade-tiny)
    python bench/query.py --model-size base       # bench/results/query_kernels.base.json
    python bench/query.py --smoke
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import common
import numpy as np
import torch
from encode import base_model, naive_dense, naive_terms, texts_from

from pipeline import blas, models
from pipeline.encoder import SpladeEncoder
from pipeline.readers import read_topics

SCALE = 100  # as bench/encode.py's naive_terms
Encode = Callable[[str], dict]


def ours(encoder: SpladeEncoder) -> Encode:
    def run(text: str) -> dict:
        return encoder.to_terms(encoder.encode_queries(encoder.tokenize([text]))[0], SCALE)
    return run


def document_path(encoder: SpladeEncoder) -> Encode:
    """A query through the document path: the full forward with its mask, the tiled torch projection."""
    runner = encoder.runner

    def run(text: str) -> dict:
        layers, runner._unmasked = runner._unmasked, None
        try:
            with encoder.one_thread():
                return encoder.to_terms(encoder.encode_ids(encoder.tokenize([text]))[0], SCALE)
        finally:
            runner._unmasked = layers
    return run


def pyserini_encoder(location: str) -> Encode:
    from pipeline import jvm

    jvm.start()  # the project's JVM (Java 21) before pyserini starts one of its own
    common.quiet_peers()
    from pyserini.encode import SpladeQueryEncoder

    encoder = SpladeQueryEncoder(location, device="cpu")
    return lambda text: encoder.encode(text, max_length=512)


def baseline_encoder(location: str) -> Encode:
    """``bench/encode.py``'s plain loop for one text: the naive formula under inference_mode."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    mlm = AutoModelForMaskedLM.from_pretrained(location).eval()
    vocabulary = {index: token for token, index in tokenizer.get_vocab().items()}

    def run(text: str) -> dict:
        with torch.inference_mode():
            return naive_terms(naive_dense(mlm, tokenizer, [text], 512)[0], vocabulary)
    return run


def alternated(encoders: dict[str, Encode], texts: list[str], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per query per encoder, the encoders taking turns on each query."""
    for run in encoders.values():  # warm-up
        for text in texts[:5]:
            run(text)
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for text in texts:
            for name, run in encoders.items():
                start = time.perf_counter()
                run(text)
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def skinny_product(encoder: SpladeEncoder, rows: int, repeats: int) -> dict[str, float]:
    """``rows x hidden`` by ``hidden x vocab`` on one thread: torch (MKL) and numpy (OpenBLAS), ms."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, encoder.weight.shape[1], generator=generator)
    weight_t = encoder.weight.T.contiguous()
    kernels = {"torch mm, decoder weight transposed view": lambda: torch.mm(hidden, encoder.weight.T),
               "torch mm, transposed copy": lambda: torch.mm(hidden, weight_t),
               "numpy matmul, transposed copy": lambda: hidden.numpy() @ weight_t.numpy()}
    times: dict[str, list[float]] = {name: [] for name in kernels}
    with blas.one_thread(), torch.inference_mode():
        for _ in range(repeats):
            for name, kernel in kernels.items():
                start = time.perf_counter()
                kernel()
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def agreement(ours_terms: list[dict], reference: list[dict]) -> dict[str, float]:
    """Share of the reference's integer weights the pipeline gives differently (or not at all)."""
    changed = total = 0
    for mine, theirs in zip(ours_terms, reference):
        for term in set(mine) | set(theirs):
            total += 1
            changed += mine.get(term) != theirs.get(term)
    return {"integer_weights_compared": total, "changed": changed, "changed_share": round(changed / max(total, 1), 5)}


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--model-size", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--queries", type=int, default=None, help="SciFact queries (default 300; 60 for base)")
    parser.add_argument("--rounds", type=int, default=2, help="times each query is encoded by each variant")
    args = parser.parse_args()
    base = args.model_size == "base"
    count = 5 if args.smoke else args.queries or (60 if base else 300)
    texts = list(read_topics(common.DATASETS / "scifact" / "queries.jsonl").values())[:count]
    if base:
        calibration = texts_from(common.DATASETS / "scifact" / "corpus.jsonl", 2 if args.smoke else 8)
        location = str(base_model(common.RESULTS / "work" / "bert-base-random-300", calibration))
    else:
        location = str(models.resolve(None).location)
    encoder = SpladeEncoder(models.resolve(location), threads=1)  # torch on one thread
    encoders = {"splade-pipeline": ours(encoder), "document path": document_path(encoder),
                "pyserini": pyserini_encoder(location),
                "baseline": baseline_encoder(location)}
    torch.set_num_threads(1)  # peers run on the same one thread
    times = alternated(encoders, texts, 1 if args.smoke else args.rounds)
    p50 = {name: round(statistics.median(values), 3) for name, values in times.items()}
    terms = {name: [run(text) for text in texts] for name, run in encoders.items() if name != "pyserini"}
    mean_tokens = float(np.mean([len(ids) for ids in encoder.tokenize(texts)]))
    result = {
        "model": ("bert-base-uncased architecture, random weights, decoder bias for ~300 terms" if base
                  else "splade-tiny"),
        "queries": len(texts), "rounds": 1 if args.smoke else args.rounds,
        "mean_tokens": round(mean_tokens, 1),
        "torch_threads": 1,
        "ms_per_query": {name: {"p50": p50[name], "p90": round(float(np.percentile(values, 90)), 3)}
                         for name, values in times.items()},
        "speedup_p50": {f"splade-pipeline / {name}": round(p50[name] / p50["splade-pipeline"], 2)
                        for name in p50 if name != "splade-pipeline"},
        "skinny_product_ms": skinny_product(encoder, round(mean_tokens), 3 if args.smoke else 50),
        "integer_weights_vs_baseline": {name: agreement(terms[name], terms["baseline"])
                                        for name in terms if name != "baseline"},
    }
    suffix = ".base" if base else ""
    common.write_result(f"query_kernels{suffix}", result, args, threads=1)


if __name__ == "__main__":
    main()
