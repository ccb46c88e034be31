#!/usr/bin/env python
"""Effectiveness of each backend and precision against the exact fp32 path, with splade-tiny.

For each dataset, the same documents and queries are encoded by every encoder compared (torch
fp32, the exact reference; onnx and openvino int8; torch bf16 on the CPU), then ranked two ways
without Lucene: the float vectors by brute-force dot product (``pipeline.reference``) and the
quantised impacts (scale 100) by the same dot product over integers, which is what the Lucene
impact index computes. A hit whose id is the query's is dropped by the project's default rule
(``--remove-query auto``, as ``splade-pipeline run``), the same for every encoder. Reported: nDCG@10 and R@100 for each, the change against fp32, the largest
weight error and the share of quantised impacts that differ from fp32's.

``--documents N`` restricts each corpus to every document judged for the queries used plus the
first others up to N (the same subset for every encoder, so differences stay comparable);
``--queries N`` takes the first N judged queries. Without them, whole datasets.

    python bench/backends_quality.py --datasets scifact cacm arguana      # backends_quality.json
    python bench/backends_quality.py --documents 1000 --queries 300 --encoders torch:fp32 onnx:int8 openvino:int8
    python bench/backends_quality.py --smoke
"""

from __future__ import annotations

import sys
import time
import warnings

import common
import numpy as np

from pipeline import models
from pipeline.demo import DEMO_DATA
from pipeline.encoder import SparseVector, SpladeEncoder, quantise
from pipeline.impacts import dense
from pipeline.evaluate import evaluate, parse_measure
from pipeline.experiment import dataset_files, judged_topics, self_hit_rule
from pipeline.readers import read_corpus, read_qrels
from pipeline.reference import exact_run

SCALE = 100
HITS = 100


def quantised(vectors: list[SparseVector]) -> list[SparseVector]:
    out = []
    for vector in vectors:
        ids, values = quantise(vector, SCALE)
        out.append(SparseVector(ids, values.astype(np.float64)))
    return out


def subset(dataset, documents: int | None, queries: int | None):
    corpus, topics_path, qrels_path = dataset_files(dataset, "test")
    qrels = read_qrels(qrels_path)
    topics = judged_topics(topics_path, qrels_path)
    if queries:
        topics = dict(list(topics.items())[:queries])
    judged = {doc for qid in topics for doc in qrels.get(qid, {})}
    docs = [doc for _, doc in read_corpus(corpus)]
    if documents:
        others = [doc for doc in docs if doc.id not in judged][:max(0, documents - len(judged))]
        keep = judged | {doc.id for doc in others}
        docs = [doc for doc in docs if doc.id in keep]
    return docs, topics, {q: qrels[q] for q in topics if q in qrels}, qrels_path


def ranked(doc_ids: list[str], docs: list[SparseVector], topics: dict[str, str], queries: list[SparseVector],
           width: int, dropping: bool | list[str]) -> dict[str, dict[str, float]]:
    """Top ``HITS`` per query, a hit whose id is the query's dropped as ``run`` drops it.

    ``dropping`` is what ``pipeline.experiment.self_hit_rule`` gives for the ``auto`` rule (the
    project's default): ``True``/``False`` or the query ids whose self-hit is dropped, so fp32 and
    int8 are judged under the same rule as ``splade-pipeline run``.
    """
    drop = set(topics) if dropping is True else set(dropping or ())
    run = exact_run(doc_ids, docs, list(topics), queries, width, hits=HITS + 1)
    return {q: {doc: score for doc, score in [h for h in hits if not (q in drop and h[0] == q)][:HITS]}
            for q, hits in run.items()}


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "cacm", "arguana"])
    parser.add_argument("--documents", type=int, default=None, help="documents per corpus (default: all)")
    parser.add_argument("--queries", type=int, default=None, help="judged queries per dataset (default: all)")
    parser.add_argument("--encoders", nargs="+", default=["torch:fp32", "onnx:int8", "openvino:int8", "torch:bf16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    ref = models.resolve(None)
    encoders = {}
    for spec in args.encoders:
        backend, precision = spec.split(":")
        encoders[spec] = SpladeEncoder(ref, "max", 512, args.threads, backend=backend,
                                       precision=None if precision == "int8" else precision)
    measures = [parse_measure(m) for m in ("nDCG@10", "R@100")]
    datasets = ["demo"] if args.smoke else args.datasets
    report: dict = {"model": "splade-tiny", "model_fingerprint": ref.fingerprint, "scale": SCALE,
                    "documents_limit": args.documents, "queries_limit": args.queries, "datasets": {}}
    for name in datasets:
        folder = DEMO_DATA if name == "demo" else common.DATASETS / name
        docs, topics, qrels, qrels_path = subset(folder, args.documents, args.queries)
        dropping, relevant_self = self_hit_rule("auto", topics, qrels_path)
        entry: dict = {"documents": len(docs), "queries": len(topics),
                       "remove_query": {"rule": "auto", "judged_relevant_self_pairs_kept": relevant_self},
                       "encoders": {}}
        exact_docs = None
        for spec, encoder in encoders.items():
            start = time.perf_counter()
            doc_vectors = encoder.encode([d.text for d in docs])
            query_vectors = encoder.encode_queries(encoder.tokenize(list(topics.values())))  # as the search stage
            seconds = time.perf_counter() - start
            figures = {"encode_seconds": round(seconds, 1)}
            for label, d_vecs, q_vecs in (("float", doc_vectors, query_vectors),
                                          ("quantised", quantised(doc_vectors), quantised(query_vectors))):
                scores = ranked([d.id for d in docs], d_vecs, topics, q_vecs, encoder.vocab_size, dropping)
                values, _ = evaluate(scores, qrels, measures)
                figures[label] = {k: round(v, 4) for k, v in values.items()}
            weights = dense(doc_vectors, encoder.vocab_size)
            if exact_docs is None:
                exact_docs = weights
            impacts, exact_impacts = np.rint(weights * SCALE), np.rint(exact_docs * SCALE)
            either = (impacts > 0) | (exact_impacts > 0)
            figures["max_abs_weight_error"] = float(np.abs(weights - exact_docs).max())
            figures["impacts_changed"] = round(float((impacts != exact_impacts)[either].mean()), 4)
            figures["postings_per_doc"] = round(float((impacts > 0).sum(1).mean()), 1)
            entry["encoders"][spec] = figures
            print(f"{name} {spec}: {figures}", file=sys.stderr)
        base = entry["encoders"][args.encoders[0]]
        entry["change_vs_" + args.encoders[0]] = {
            spec: {label: {k: round(f[label][k] - base[label][k], 4) for k in f[label]}
                   for label in ("float", "quantised")}
            for spec, f in entry["encoders"].items() if spec != args.encoders[0]}
        report["datasets"][name] = entry
    common.write_result("backends_quality", report, args, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
