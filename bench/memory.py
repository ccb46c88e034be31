#!/usr/bin/env python
"""Peak memory of `encode` does not grow with the corpus: a baseline corpus and one 20x larger.

Both corpora are synthetic passages (words drawn from SciFact's vocabulary, or a fixed word list
when SciFact is absent), encoded with the same settings and shard size in separate processes;
each process reports its own peak RSS. Prints JSON with both figures and their ratio.

    python bench/memory.py [--documents 1000] [--factor 20]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCIFACT = HERE.parent.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"
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


def encode(corpus: Path, output: Path, shard_size: int, max_length: int) -> dict[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "encode", "--corpus", str(corpus), "--output", str(output),
                           "--shard-size", str(shard_size), "--max-length", str(max_length), "--quiet"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--factor", type=int, default=20)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    words = vocabulary()
    report = {"shard_size": args.shard_size, "max_length": args.max_length}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        for name, count in (("baseline", args.documents), ("large", args.documents * args.factor)):
            corpus = Path(scratch) / f"{name}.jsonl"
            write_corpus(corpus, count, words)
            figures = encode(corpus, Path(scratch) / f"collection-{name}", args.shard_size, args.max_length)
            report[name] = {"documents": count, "corpus_mb": round(corpus.stat().st_size / 2**20, 1), **figures}
    report["documents_ratio"] = args.factor
    report["peak_rss_ratio"] = round(report["large"]["peak_rss_mb"] / report["baseline"]["peak_rss_mb"], 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
