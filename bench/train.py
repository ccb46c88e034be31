#!/usr/bin/env python
"""Fine-tuning splade-tiny on SciFact's train split with `train` (sentence-transformers' trainer): does
it beat the base model, and at what CPU cost against the hand-written loop it replaced? Writes
bench/results/train.json.

1. The base model through the whole pipeline on SciFact test (nDCG@10, R@100, postings per doc).
2. The README's fine-tune: queries-train + qrels/train with BM25 hard negatives, the command's
   defaults (in-batch contrastive, FLOPS), ``--epochs`` (2); then the same pipeline with it.
3. Old against new on the same triples and settings for ``--compare-steps`` steps: the hand-written
   loop of commit a2a7ed4 (``git show``) and today's trainer, each in its own process, so process
   start and imports count; CPU seconds (user + system of the process) and wall seconds. Run in
   alternation (old, new, old, new) to share the machine's load fairly.
4. Optionally (``--lambdas``) a short sweep over the document lambda: postings per doc and nDCG@10.

``--part quality`` runs 1, 2 and 4, ``--part compare`` runs 3; each keeps the other's figures in the
result file (with the machine record of each part), so the timed comparison can hold the bench
lock briefly while the long quality run does not need it.

    python bench/train.py [--epochs 2] [--compare-steps 10] [--lambdas 0 0.01 0.1]
    python bench/train.py --smoke      # the demo corpus, a few steps: checks the script works
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

OLD_COMMIT = "a2a7ed4"  # the last commit with the hand-written training loop


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--compare-steps", type=int, default=10, help="steps of the old-vs-new timing (0: skip)")
    parser.add_argument("--compare-rounds", type=int, default=1, help="old/new alternations")
    parser.add_argument("--lambdas", type=float, nargs="*", default=[])
    parser.add_argument("--sweep-epochs", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--part", choices=("all", "quality", "compare"), default="all",
                        help="quality: base, fine-tune, fine-tuned (+ sweep); compare: old vs new timing. "
                             "A part updates its keys in an existing result file and keeps the others")
    parser.add_argument("--worker", choices=("old", "new"), help=argparse_hidden())
    parser.add_argument("--job", type=Path, help=argparse_hidden())
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.job)
    from pipeline.encoder import default_threads
    from pipeline.train import TrainSettings, mine_triples

    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    threads = args.threads or default_threads()
    if args.smoke:
        from pipeline.demo import DEMO_DATA

        dataset, queries, qrels = DEMO_DATA, DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv"
        base_settings = TrainSettings(batch_size=4, doc_max_length=64, warmup_steps=1, lambda_warmup_steps=2)
        epochs, compare_steps = 0.5, min(args.compare_steps, 1)
    else:
        dataset = common.DATASETS / "scifact"
        queries, qrels = dataset / "queries-train.jsonl", dataset / "qrels" / "train.tsv"
        base_settings, epochs, compare_steps = TrainSettings(), args.epochs, args.compare_steps
    result: dict = {"dataset": dataset.name, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        root = Path(scratch)
        triples = mine_triples(queries, qrels, dataset / "corpus.jsonl", negatives="bm25", workdir=root,
                               threads=threads)
        triples_file = root / "triples.jsonl"
        triples_file.write_text("".join(json.dumps({"query": t.query, "positive": t.positive,
                                                    "negative": t.negative}) + "\n" for t in triples))
        result["triples"] = len(triples)

        settings = asdict(base_settings) | {"epochs": epochs}
        if args.part in ("all", "quality"):
            log("base model")
            result["base"] = evaluate(dataset, None, root / "eval-base", threads)
            log(f"fine-tune: {epochs} epochs")
            result["fine_tune"] = run_worker("new", root, triples_file, root / "tuned", settings, threads)
            result["fine_tuned"] = evaluate(dataset, str(root / "tuned"), root / "eval-tuned", threads)
            result["improvement_nDCG@10"] = round(result["fine_tuned"]["nDCG@10"] - result["base"]["nDCG@10"], 4)

        if args.part == "quality":
            pass
        elif compare_steps and not old_available():
            result["old_vs_new"] = {"skipped": f"commit {OLD_COMMIT} is not in this clone's history"}
        elif compare_steps:
            rounds = []
            for round_ in range(args.compare_rounds):
                row = {}
                for variant in ("old", "new"):
                    log(f"{variant} loop: {compare_steps} steps (round {round_ + 1})")
                    row[variant] = run_worker(variant, root, triples_file, root / f"{variant}-{round_}",
                                              settings | {"max_steps": compare_steps}, threads)
                rounds.append(row)
            old_cpu = sum(r["old"]["cpu_s"] for r in rounds)
            new_cpu = sum(r["new"]["cpu_s"] for r in rounds)
            result["old_vs_new"] = {"steps": compare_steps, "old_commit": OLD_COMMIT, "rounds": rounds,
                                    "cpu_ratio_new_over_old": round(new_cpu / old_cpu, 3)}

        sweep = []
        for lam in args.lambdas if args.part != "compare" else []:
            log(f"lambda_d = {lam}")
            folder = root / f"lambda-{lam}"
            run = run_worker("new", root, triples_file, folder,
                             settings | {"epochs": args.sweep_epochs, "lambda_d": lam}, threads)
            sweep.append({"lambda_d": lam, "cpu_s": run["cpu_s"],
                          **evaluate(dataset, str(folder), root / f"eval-{lam}", threads)})
        if sweep:
            result["lambda_sweep"] = {"epochs": args.sweep_epochs, "points": sweep}
    if args.part != "all":
        result = earlier(args) | result | {f"{args.part}_machine": common.machine(threads)}
    common.write_result("train", result, args, threads)
    return 0


def earlier(args) -> dict:
    """The keys an earlier run of the other part wrote (machine and command are written afresh)."""
    path = Path(args.results) / f"train{'.smoke' if args.smoke else ''}.json"
    if not path.is_file():
        return {}
    return {key: value for key, value in json.loads(path.read_text()).items()
            if key not in ("benchmark", "smoke", "command", "machine")}


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def evaluate(dataset: Path, encoder: str | None, root: Path, threads: int) -> dict:
    from pipeline.experiment import run_dataset

    result = run_dataset(dataset, encoder, root=root, threads=threads, overwrite=True, progress=False,
                         say=lambda text: None)
    return {"nDCG@10": round(result["metrics"]["nDCG@10"], 4), "R@100": round(result["metrics"]["R@100"], 4),
            "postings_per_doc": result["postings_per_doc"]}


def run_worker(variant: str, root: Path, triples: Path, output: Path, settings: dict, threads: int) -> dict:
    """One training run in a child process: its CPU seconds (user + system) and wall seconds."""
    job = root / f"job-{output.name}.json"
    job.write_text(json.dumps({"triples": str(triples), "output": str(output), "settings": settings,
                               "threads": threads}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--worker", variant, "--job", str(job)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{variant} training failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"variant": variant, "steps": summary["steps"], "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            "final": summary.get("final")}


def worker(variant: str, job_file: Path) -> int:
    """Train as ``splade-pipeline train`` would (new), or with the old loop loaded from git (old)."""
    job = json.loads(job_file.read_text())
    if variant == "new":
        from pipeline.train import TrainSettings, read_triples, train

        module = None
    else:
        module = old_module()
        read_triples, train, TrainSettings = module.read_triples, module.train, module.TrainSettings
    settings = TrainSettings(**{k: v for k, v in job["settings"].items()
                                if k in TrainSettings.__dataclass_fields__})
    summary = train(read_triples(Path(job["triples"])), Path(job["output"]), settings=settings,
                    threads=job["threads"], save_steps=10_000, progress=False, say=lambda text: None)
    print(json.dumps({"steps": summary["steps"], "final": summary.get("final")}))
    return 0


def old_available() -> bool:
    return subprocess.run(["git", "-C", str(common.ROOT), "cat-file", "-e", f"{OLD_COMMIT}:pipeline/train.py"],
                          capture_output=True).returncode == 0


def old_module():
    """``pipeline/train.py`` as of OLD_COMMIT, importing the tile size from where it lives now."""
    import types

    source = subprocess.run(["git", "-C", str(common.ROOT), "show", f"{OLD_COMMIT}:pipeline/train.py"],
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from pipeline.encoder import VOCAB_TILE, default_threads, load_masked_lm",
                            "from pipeline.encoder import default_threads, load_masked_lm\n"
                            "from pipeline.projection import VOCAB_TILE")
    module = types.ModuleType("old_train")
    sys.modules["old_train"] = module
    exec(compile(source, f"{OLD_COMMIT}:pipeline/train.py", "exec"), module.__dict__)
    return module


if __name__ == "__main__":
    raise SystemExit(main())
