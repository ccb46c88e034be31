"""SIGKILL at any moment, then the same command again: every document exactly once, and files
byte-identical to an uninterrupted run (real model, 100 SciFact documents in 10 shards, real CLI
processes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real encode processes killed mid-write


def start_encode(corpus: Path, output: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "encode", "--corpus", str(corpus),
                             "--output", str(output), "--shard-size", "10", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL the process as soon as ``ready()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.wait()
    return False


def finished_shards(folder: Path) -> int:
    shards = folder / "shards"
    return len(list(shards.glob("part-*.json"))) if shards.is_dir() else 0


def test_sigkill_then_rerun_gives_the_uninterrupted_result(tmp_path, scifact_slice):
    corpus = tmp_path / "corpus.jsonl"  # 10 shards: enough for every kill point below, before the last one
    corpus.write_text("".join((scifact_slice / "corpus.jsonl").read_text().splitlines(keepends=True)[:100]))
    reference = tmp_path / "reference"
    done = start_encode(corpus, reference)
    assert done.wait() == 0, done.stderr.read()

    folder = tmp_path / "interrupted"
    started = time.monotonic()
    kills = [
        lambda: time.monotonic() - started > 0.8,       # while starting up or validating
        lambda: (folder / "plan.json").exists(),          # right after the plan, before any shard
        lambda: finished_shards(folder) >= 2,             # mid-way, during a shard
        lambda: finished_shards(folder) >= 6,
        lambda: any((folder / ".tmp").glob("*")) if (folder / ".tmp").is_dir() else False,  # mid-write
    ]
    killed = 0
    for ready in kills:
        started = time.monotonic()
        killed += kill_when(start_encode(corpus, folder), ready)
    assert killed >= 3  # the interruptions really happened
    last = start_encode(corpus, folder)
    assert last.wait() == 0, last.stderr.read()

    names = sorted(p.name for p in (reference / "vectors").iterdir())
    assert sorted(p.name for p in (folder / "vectors").iterdir()) == names  # no stray temporary files
    for name in names:
        assert (folder / "vectors" / name).read_bytes() == (reference / "vectors" / name).read_bytes()
    ids = [json.loads(line)["id"] for name in names for line in (folder / "vectors" / name).read_text().splitlines()]
    source_ids = [json.loads(line)["_id"] for line in corpus.read_text().splitlines()]
    assert ids == source_ids and len(set(ids)) == len(ids)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["shards"] == json.loads((reference / "manifest.json").read_text())["shards"]
    assert not (folder / ".tmp").exists()
