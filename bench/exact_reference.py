#!/usr/bin/env python
"""The pipeline's figures against the exact float reference, on one BEIR-format dataset.

Runs ``splade-pipeline run`` (encode, Lucene impact index, search, evaluate) and, in the same
process, the exact reference: the same model's float vectors, no quantisation, ranked by
brute-force dot product. Writes bench/results/exact_reference.json with both nDCG@10 / R@100 and
their difference.

    python bench/exact_reference.py [--dataset ../shared/datasets/scifact]
    python bench/exact_reference.py --smoke          # the embedded demo set, seconds
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import common

from pipeline import models
from pipeline.demo import DEMO_DATA
from pipeline.encoder import SpladeEncoder, default_threads
from pipeline.evaluate import evaluate, parse_measure
from pipeline.experiment import dataset_files, judged_topics, run_dataset, self_hit_rule
from pipeline.readers import read_corpus, read_qrels
from pipeline.reference import exact_run


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", type=Path, default=None, help="BEIR folder (default: SciFact; demo set in smoke)")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--scale", type=float, default=100)
    parser.add_argument("--pooling", default="max")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--root", type=Path, default=None, help="pipeline outputs (default: a temporary folder)")
    args = parser.parse_args()
    dataset = args.dataset or (DEMO_DATA if args.smoke else common.DATASETS / "scifact")

    measures = [parse_measure(m) for m in ("nDCG@10", "R@100")]
    with tempfile.TemporaryDirectory(prefix="bench-exact-") as scratch:
        root = args.root or Path(scratch)
        start = time.perf_counter()
        pipeline_result = run_dataset(dataset, args.encoder, name=dataset.resolve().name, root=root,
                                      scale=args.scale, pooling=args.pooling, max_length=args.max_length,
                                      threads=args.threads, overwrite=True, progress=not args.smoke,
                                      say=lambda text: print(text, file=sys.stderr))
        pipeline_seconds = time.perf_counter() - start

        corpus, queries, qrels_path = dataset_files(dataset, "test")
        qrels = read_qrels(qrels_path)
        topics = judged_topics(queries, qrels_path)
        encoder = SpladeEncoder(models.resolve(args.encoder), args.pooling, args.max_length, args.threads)
        docs = [doc for _, doc in read_corpus(corpus)]
        start = time.perf_counter()
        doc_vectors = encoder.encode([d.text for d in docs])
        query_vectors = encoder.encode_queries(encoder.tokenize(list(topics.values())))  # as the search stage
        # The same remove-query rule as the pipeline's run (auto: BEIR's, unless judged relevant).
        dropping = set(self_hit_rule("auto", topics, qrels_path)[0])
        run = exact_run([d.id for d in docs], doc_vectors, list(topics), query_vectors, encoder.vocab_size,
                        hits=1000, remove_query=False)
        run = {q: [hit for hit in hits if not (q in dropping and hit[0] == q)] for q, hits in run.items()}
        reference_seconds = time.perf_counter() - start
        run_scores = {qid: {doc: score for doc, score in hits} for qid, hits in run.items()}
        reference, _ = evaluate(run_scores, qrels, measures)

    metrics = pipeline_result["metrics"]
    report = {
        "dataset": pipeline_result["dataset"], "documents": pipeline_result["documents"],
        "encoder": pipeline_result["encoder"], "scale": args.scale, "pooling": args.pooling,
        "queries": pipeline_result["queries"], "remove_query": pipeline_result["remove_query"],
        "pipeline": {k: round(metrics[k], 4) for k in reference},
        "exact_reference": {k: round(v, 4) for k, v in reference.items()},
        "difference": {k: round(metrics[k] - reference[k], 4) for k in reference},
        "postings_per_doc": pipeline_result["postings_per_doc"],
        "seconds": {"pipeline": round(pipeline_seconds, 1), "reference": round(reference_seconds, 1),
                    **pipeline_result["timings"]},
    }
    common.write_result("exact_reference", report, args, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
