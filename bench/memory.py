#!/usr/bin/env python
"""Peak memory of `encode` does not grow with the corpus: a baseline corpus and one 20x larger.

Both corpora are synthetic passages (words drawn from SciFact's vocabulary, or a fixed word list
when SciFact is absent), encoded with the same settings and shard size in separate processes;
each process reports its own peak RSS. Writes bench/results/memory.json with both figures and
their ratio.

    python bench/memory.py [--documents 1000] [--factor 20]
    python bench/memory.py --smoke                  # 20 and 40 documents, seconds
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

SCIFACT = common.DATASETS / "scifact" / "corpus.jsonl"
CHILD = ("import resource, sys; from pipeline.cli import main; code = main(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)")


def vocabulary() -> list[str]:
    if SCIFACT.is_file():
        words = set()
        with open(SCIFACT) as handle:
            for _, line in zip(range(500), handle):
                words.update(w for w in json.loads(line)["text"].split() if w.isalpha())
        return sorted(words)
    return "coral reef ocean tide moon gravity protein cell gene brain sleep memory".split()


def write_corpus(path: Path, documents: int, words: list[str], seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(documents):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(40, 80)))
            handle.write(json.dumps({"_id": f"doc{i}", "title": "", "text": text}) + "\n")


def encode(corpus: Path, output: Path, shard_size: int, max_length: int, threads: int,
           encoder: str | None) -> dict[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "encode", "--corpus", str(corpus), "--output", str(output),
                           "--shard-size", str(shard_size), "--max-length", str(max_length),
                           "--threads", str(threads), "--quiet", *(["--encoder", encoder] if encoder else [])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--factor", type=int, default=20)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--encoder", default=None, help="splade-tiny (default) or a checkpoint folder")
    args = parser.parse_args()
    if args.smoke:
        args.documents, args.factor, args.shard_size, args.max_length = 20, 2, 10, 32
    words = vocabulary()
    report = {"shard_size": args.shard_size, "max_length": args.max_length}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        for name, count in (("baseline", args.documents), ("large", args.documents * args.factor)):
            corpus = Path(scratch) / f"{name}.jsonl"
            write_corpus(corpus, count, words)
            figures = encode(corpus, Path(scratch) / f"collection-{name}", args.shard_size, args.max_length,
                             args.threads, args.encoder)
            report[name] = {"documents": count, "corpus_mb": round(corpus.stat().st_size / 2**20, 1), **figures}
    report["documents_ratio"] = args.factor
    report["peak_rss_ratio"] = round(report["large"]["peak_rss_mb"] / report["baseline"]["peak_rss_mb"], 3)
    common.write_result("memory", report, args, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
