#!/usr/bin/env python
"""What ``encode --ray`` costs on one machine: two one-CPU Ray workers against one process.

Both runs encode the same corpus (Cranfield, 1,400 documents; splade-tiny, default settings, the
same shard size) into fresh collections, in this process's ``stages.encode``, as the CLI does:
* single process: ``encode`` with the default threads (all cores, 2 here);
* Ray: ``encode --ray --ray-workers 2 --threads 1``: a local Ray runtime and two one-CPU workers.
Reported per run: end-to-end seconds (Ray's start and the workers' model loads included) and
steady docs/s, counted from the moment every worker has finished a first shard to the last shard
(so neither model loading nor start-up is in it). The ratio Ray / single process of steady docs/s
is the overhead figure (target: at least 0.85); the two collections are also compared byte for
byte. Writes bench/results/ray_encode.json (another corpus: ray_encode.<its folder>.json).

    flock /tmp/bench.lock python bench/ray_encode.py [--corpus PATH] [--documents N] [--shard-size 50]
    python bench/ray_encode.py --corpus ../shared/datasets/scifact/corpus.jsonl --shard-size 200
    python bench/ray_encode.py --smoke       # the embedded 40-document demo corpus, seconds
"""

from __future__ import annotations

import filecmp
import tempfile
import time
from pathlib import Path

import common


def timed_encode(corpus: Path, output: Path, shard_size: int, workers: int, **options) -> dict[str, float]:
    """One encode with the shard completion times recorded (the driver's writes, wherever encoded)."""
    from pipeline import collection, distributed, stages

    finished: list[tuple[float, int]] = []
    original = collection.write_shard

    def write_shard(folder, index, data, info):
        original(folder, index, data, info)
        finished.append((time.perf_counter(), info["documents"]))

    collection.write_shard = distributed.write_shard = write_shard
    try:
        start = time.perf_counter()
        manifest = stages.encode(corpus, output, shard_size=shard_size, progress=False, say=lambda _: None,
                                 **options)
        end = time.perf_counter()
    finally:
        collection.write_shard = distributed.write_shard = original
    # steady state: after the first `workers` completions (each worker past its first shard)
    first = finished[min(workers, len(finished)) - 1][0]
    later = sum(docs for when, docs in finished if when > first)
    steady = later / (finished[-1][0] - first) if finished[-1][0] > first else None
    return {"documents": manifest["documents"], "end_to_end_s": round(end - start, 2),
            "end_to_end_docs_per_s": round(manifest["documents"] / (end - start), 2),
            "steady_docs_per_s": round(steady, 2) if steady else None}


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--corpus", type=Path, default=common.DATASETS / "cranfield" / "corpus.jsonl")
    parser.add_argument("--documents", type=int, default=None, help="the corpus's first N documents (default all)")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="single/Ray pairs, alternating (default 1)")
    args = parser.parse_args()
    common.quiet_peers()
    from pipeline.encoder import default_threads

    corpus, shard_size = args.corpus, args.shard_size
    if args.smoke:
        from importlib.resources import files
        corpus, shard_size = Path(str(files("pipeline") / "resources" / "demo" / "corpus.jsonl")), 10
    threads = default_threads()
    runs: dict[str, list[dict[str, float]]] = {"single": [], "ray": []}
    identical = True
    with tempfile.TemporaryDirectory() as work:
        name = str(corpus.name if args.smoke else corpus.relative_to(common.DATASETS))
        if args.documents:
            lines = corpus.read_text().splitlines(keepends=True)[:args.documents]
            corpus = Path(work) / "corpus.jsonl"
            corpus.write_text("".join(lines))
            name += f" (first {len(lines)} documents)"
        for repeat in range(args.repeats):
            single, ray = Path(work) / f"single-{repeat}", Path(work) / f"ray-{repeat}"
            runs["single"].append(timed_encode(corpus, single, shard_size, 1, threads=threads))
            runs["ray"].append(timed_encode(corpus, ray, shard_size, 2, threads=1, ray="local", ray_workers=2))
            names = sorted(p.name for p in (single / "vectors").iterdir())
            identical &= names == sorted(p.name for p in (ray / "vectors").iterdir()) and all(
                filecmp.cmp(single / "vectors" / n, ray / "vectors" / n, shallow=False) for n in names)

    def best(mode: str, key: str) -> float | None:
        values = [run[key] for run in runs[mode] if run[key]]
        return max(values) if values else None

    steady_single, steady_ray = best("single", "steady_docs_per_s"), best("ray", "steady_docs_per_s")
    result = {
        "corpus": name,
        "model": "splade-tiny", "shard_size": shard_size, "single_threads": threads,
        "ray_workers": 2, "ray_threads_per_worker": 1, "runs": runs,
        "steady_ratio_ray_over_single": round(steady_ray / steady_single, 3)
        if steady_single and steady_ray else None,
        "end_to_end_ratio_ray_over_single": round(best("ray", "end_to_end_docs_per_s")
                                                  / best("single", "end_to_end_docs_per_s"), 3),
        "target_steady_ratio": 0.85, "collections_identical": identical,
    }
    # the default corpus (Cranfield) writes ray_encode.json; another one ray_encode.<its folder>.json
    default = common.DATASETS / "cranfield" / "corpus.jsonl"
    label = "ray_encode" if args.smoke or args.corpus == default else f"ray_encode.{args.corpus.parent.name}"
    common.write_result(label, result, args, threads)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
