"""What every benchmark shares: the machine record, result files, smoke mode and peer imports.

Each script under ``bench/`` builds its parser with ``parser()``, which adds ``--smoke`` (a tiny,
fast run that CI executes so no script can rot) and ``--results`` (where the result file goes).
``write_result`` stores one JSON file per script under ``bench/results/`` with the commit of the code
that ran (and whether the checkout was clean), the machine it ran on (CPU model and flags, cores,
threads), library versions and the date, so that every figure in
README.md and docs/ can be traced to a committed file. Smoke runs write ``NAME.smoke.json``,
which is git-ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DATASETS = Path(os.environ.get("SPLADE_DATASETS", ROOT.parent / "shared" / "datasets"))
PACKAGES = ("splade-pipeline", "torch", "transformers", "tokenizers", "pyserini", "sentence-transformers",
            "numpy", "onnxruntime", "openvino", "optimum", "optimum-intel", "ray", "fastapi", "uvicorn",
            "pyseismic-lsr", "bmp", "openai")
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8")


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has."""
    p = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0] if description else None)
    p.add_argument("--smoke", action="store_true", help="tiny run for CI: checks the script works, figures meaningless")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the result file (default bench/results)")
    return p


def floor(text: str) -> int:
    """An impact floor on a bench's command line (``--prune-impact``): checked as the index command
    checks it, so a bad value stops the bench before any stage runs."""
    from pipeline.cli import integer

    return integer(0)(text)


def prune_grid(prune_docs: Iterable[int], floors: Iterable[int] | None) -> list[tuple[int, int]]:
    """The first-stage prunings a two-step bench measures: each ``--prune-docs`` value with each
    ``--prune-impact`` floor (0 alone when none is given), in the order given, repeats dropped."""
    floors = list(floors or [0])
    return list(dict.fromkeys((n, floor) for n in prune_docs for floor in floors))


def time_each(items: Iterable[Any], call: Callable[[Any], object]) -> dict[str, float]:
    """``latency`` of ``call(item)`` for each item in turn, on the calling thread."""
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append(time.perf_counter() - start)
    return latency(times)


def latency(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and mean in milliseconds of per-query times (numpy's linear percentile), as the
    latency rows of scale.py and two_step.py report them (serve.py keeps its own, by nearest rank)."""
    import numpy as np

    ms = np.asarray(seconds, dtype=np.float64) * 1000
    if not len(ms):
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


@contextlib.contextmanager
def bench_lock(path: str | None, wait: float | None = None) -> Iterator[str]:
    """Hold ``path`` (flock) while something is timed, so timed runs on a shared machine don't overlap.

    With ``wait`` seconds the timing goes ahead unlocked after that long; what happened is yielded
    and recorded with the figures.
    """
    if not path:
        yield "not used"
        return
    with open(path, "a") as handle:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    held = False
                    break
                time.sleep(1)
        try:
            yield "held" if held else f"not held (busy after waiting {wait:.0f} s)"
        finally:
            if held:
                fcntl.flock(handle, fcntl.LOCK_UN)


def quiet_peers() -> None:
    """Let ``import pyserini.encode`` work without an OpenAI key.

    Pyserini builds an OpenAI client when ``pyserini.encode`` is imported; openai releases after
    2.12 raise there without a key. The bench extra pins openai==2.12.0 (the core never imports
    pyserini.encode); this covers other installs.
    """
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-splade-pipeline-benchmarks")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu() -> dict[str, Any]:
    """CPU model, the SIMD flags that matter for inference, and the cores this process may use."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "cores": cores,
            "machine": platform.machine()}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def gpu() -> str | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def code_state(root: Path = ROOT) -> dict[str, Any]:
    """The commit the figures come from and whether the checkout differed from it.

    ``dirty_files`` lists tracked files changed since the commit and untracked ones (``git status
    --porcelain``), except under ``bench/results/``: result files are outputs, and one benchmark's
    uncommitted result says nothing about the code another one ran. Outside a git checkout (an
    installed copy) the commit is unknown and says so.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "--untracked-files=all")
    except (OSError, subprocess.SubprocessError) as exc:
        return {"commit": None, "clean": None, "dirty_files": None, "unknown_because": str(exc).strip()[:200]}
    dirty = sorted(path for path in (line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if line)
                   if not path.startswith("bench/results/"))
    return {"commit": commit, "clean": not dirty, "dirty_files": dirty}


# The code as the run started: a run that takes an hour may see the checkout change under it (a
# commit, an edit), and its modules were loaded at the start.
STARTED = code_state()


def run_code(outputs: Sequence[Path] = ()) -> dict[str, Any]:
    """``code_state`` at the start of the run; when the checkout changed while it ran, also as it was at the
    end (``changed_during_run``): the figures are the start's, modules imported later may be the end's.
    ``outputs``: files the run itself wrote into the checkout (a plot under docs/), which are no change."""
    now = code_state()
    own = {str(Path(path).resolve().relative_to(ROOT)) for path in outputs if Path(path).resolve().is_relative_to(ROOT)}
    if own and now.get("dirty_files") is not None:
        dirty = [path for path in now["dirty_files"] if path not in own or path in (STARTED.get("dirty_files") or [])]
        now = {**now, "clean": not dirty, "dirty_files": dirty}
    return STARTED if now == STARTED else {**STARTED, "changed_during_run": now}


def machine(threads: int | None = None) -> dict[str, Any]:
    """Everything a reader needs to know where a figure came from."""
    record: dict[str, Any] = {"cpu": cpu(), "threads": threads, "gpu": gpu(), "versions": versions(),
                              "platform": platform.platform(),
                              # other work on the machine skews seconds more than ratios: say how much
                              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if "torch" in sys.modules:
        import torch

        record["torch_threads"] = torch.get_num_threads()
    return record


def write_result(name: str, result: dict[str, Any], args: argparse.Namespace,
                 threads: int | None = None, outputs: Sequence[Path] = ()) -> Path:
    """Write ``NAME.json`` (``NAME.smoke.json`` in smoke mode) with the machine record; print it.
    ``outputs``: other files the run wrote inside the checkout (``run_code``)."""
    folder = Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{'.smoke' if args.smoke else ''}.json"
    body = {"benchmark": name, "smoke": bool(args.smoke), "command": " ".join(["python", *sys.argv]),
            "code": run_code(outputs), "machine": machine(threads), **result}
    text = json.dumps(body, indent=2, sort_keys=False) + "\n"
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
    print(text)
    print(f"wrote {path}", file=sys.stderr)
    return path
