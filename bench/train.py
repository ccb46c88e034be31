#!/usr/bin/env python
"""Fine-tuning splade-tiny on SciFact's train split: does it beat the base model, and does lambda
control sparsity? Prints JSON.

1. The base model through the whole pipeline on SciFact test (nDCG@10, R@100, postings per doc).
2. A CPU fine-tune on queries-train.jsonl + qrels/train.tsv with BM25 hard negatives, in-batch
   contrastive loss and FLOPS regularisation (the command's defaults), limited to 15 minutes;
   then the same pipeline with the fine-tuned checkpoint.
3. A sweep over the document regulariser weight lambda_d (one epoch each): postings per document
   and nDCG@10 for each.

    python bench/train.py [--epochs 2] [--lambdas 0 0.001 0.01 0.03]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pipeline.encoder import default_threads
from pipeline.experiment import run_dataset
from pipeline.train import TrainSettings, mine_triples, train

HERE = Path(__file__).resolve().parent
SCIFACT = HERE.parent.parent / "shared" / "datasets" / "scifact"


def evaluate(encoder: str | None, root: Path) -> dict:
    result = run_dataset(SCIFACT, encoder, root=root, overwrite=True, progress=False, say=lambda text: None)
    return {"nDCG@10": round(result["metrics"]["nDCG@10"], 4), "R@100": round(result["metrics"]["R@100"], 4),
            "postings_per_doc": result["postings_per_doc"], "encode_seconds": result["timings"]["encode_s"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--lambdas", type=float, nargs="*", default=[0.0, 0.01, 0.1, 0.5])
    parser.add_argument("--sweep-epochs", type=float, default=1.0)
    parser.add_argument("--sweep-lambda-warmup", type=int, default=20,
                        help="lambda warm-up steps in the sweep (one epoch is 57 steps)")
    parser.add_argument("--sweep-only", action="store_true", help="skip the base model and the fine-tune")
    args = parser.parse_args()
    log = lambda text: print(text, file=sys.stderr, flush=True)
    threads = default_threads()
    report: dict = {"threads": threads}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        root = Path(scratch)
        triples = mine_triples(SCIFACT / "queries-train.jsonl", SCIFACT / "qrels" / "train.tsv",
                               SCIFACT / "corpus.jsonl", negatives="bm25", workdir=root, threads=threads)
        report["triples"] = len(triples)
        if not args.sweep_only:
            fine_tune(args, triples, root, threads, report, log)
        sweep = []
        for lam in args.lambdas:
            log(f"lambda_d = {lam}")
            folder = root / f"lambda-{lam}"
            start = time.perf_counter()
            settings = TrainSettings(epochs=args.sweep_epochs, lambda_d=lam, lambda_warmup_steps=args.sweep_lambda_warmup)
            train(triples, folder, settings=settings, threads=threads, progress=False, say=log)
            minutes = round((time.perf_counter() - start) / 60, 2)
            sweep.append({"lambda_d": lam, "train_minutes": minutes, **evaluate(str(folder), root / f"eval-{lam}")})
        report["lambda_sweep"] = {"lambda_q": TrainSettings().lambda_q, "epochs": args.sweep_epochs,
                                  "lambda_warmup_steps": args.sweep_lambda_warmup, "points": sweep}
    print(json.dumps(report, indent=2))
    return 0


def fine_tune(args, triples, root: Path, threads: int, report: dict, log) -> None:
    """The base model, a time-limited fine-tune with the command's defaults, and the fine-tuned model."""
    log("base model on SciFact test")
    report["base"] = evaluate(None, root / "base")
    log("fine-tuning")
    start = time.perf_counter()
    summary = train(triples, root / "fine-tuned", settings=TrainSettings(epochs=args.epochs), threads=threads,
                    max_minutes=args.max_minutes, progress=False, say=log)
    report["fine_tune"] = {"minutes": round((time.perf_counter() - start) / 60, 2),
                           "steps": summary["steps"] if summary.get("finished") else summary["step"],
                           "finished": summary.get("finished", False), "settings": summary.get("settings")}
    report["fine_tuned"] = evaluate(str(root / "fine-tuned"), root / "tuned")
    report["improvement_nDCG@10"] = round(report["fine_tuned"]["nDCG@10"] - report["base"]["nDCG@10"], 4)


if __name__ == "__main__":
    raise SystemExit(main())
