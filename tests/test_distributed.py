"""``encode --ray`` on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``, three nodes on
this machine): byte-identical to a plain ``encode`` of the same corpus and settings, also after a
node is removed mid-run, a worker process is killed mid-shard, and the driver is killed and rerun.

Corpora: Cranfield's first 400 documents (25 shards of 16); from SciFact, its first 300
documents (SciFact's long abstracts: 24 of them run past the 512-token limit, so truncation is
covered too). Shard bytes depend only on the shard's documents and the settings, so more SciFact
documents would only repeat the same comparison: each corpus is encoded twice (plain and on Ray)
on CI's two cores, which is most of this module's time. The plain references run with the default
threads (all cores), the Ray workers with one thread each, so the identity also covers the thread
count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from conftest import dataset

pytestmark = pytest.mark.slow  # Ray clusters of real processes

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
CRANFIELD_SHARDS = ("--shard-size", "16")  # 25 shards
SCIFACT_SHARDS = ("--shard-size", "15")  # 20 shards


@pytest.fixture(scope="module")
def references(tmp_path_factory, cranfield, scifact_head):
    """The plain ``encode`` of each corpus, run one after the other in the background from the
    start (so they overlap the cluster's start-up without two encoders fighting for CI's two
    cores); ``references(corpus)`` waits for that corpus's collection."""
    root = tmp_path_factory.mktemp("plain")
    jobs = [(corpus, root / name, encode_command(corpus, root / name, *settings))
            for name, corpus, settings in (("cranfield", cranfield, CRANFIELD_SHARDS),
                                           ("scifact", scifact_head, SCIFACT_SHARDS))]
    results: dict[Path, Future] = {corpus: Future() for corpus, _, _ in jobs}
    running: list[subprocess.Popen] = []
    stopping, starting = threading.Event(), threading.Lock()  # no encode starts after teardown's kill

    def chain() -> None:
        try:
            for corpus, folder, command in jobs:
                with starting:
                    if stopping.is_set():
                        break
                    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                               text=True, errors="replace")
                    running.append(process)
                stderr = process.communicate()[1]
                results[corpus].set_result((folder, process.returncode, stderr[-3000:]))
        except BaseException as error:  # a waiting test gets the error, not a half-hour timeout
            for future in results.values():
                if not future.done():
                    future.set_exception(error)
            raise
        for future in results.values():  # stopped: nobody waits, but nothing stays pending
            future.cancel()
    thread = threading.Thread(target=chain, daemon=True)
    thread.start()

    def wait(corpus: Path) -> Path:
        folder, code, stderr = results[corpus].result(timeout=1800)
        assert code == 0, stderr
        return folder
    yield wait
    with starting:
        stopping.set()
        for process in running:
            if process.poll() is None:
                process.kill()
    thread.join()


@pytest.fixture(scope="module")
def cluster(references):
    """Three one-CPU Ray nodes on this machine: the head and two that tests may remove or kill."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def cranfield(tmp_path_factory) -> Path:
    lines = (dataset("cranfield") / "corpus.jsonl").read_text().splitlines(keepends=True)[:400]
    path = tmp_path_factory.mktemp("cranfield-head") / "corpus.jsonl"
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def scifact_head(tmp_path_factory) -> Path:
    lines = (dataset("scifact") / "corpus.jsonl").read_text().splitlines(keepends=True)[:300]
    path = tmp_path_factory.mktemp("scifact-head") / "corpus.jsonl"
    path.write_text("".join(lines))
    return path


def encode_command(corpus: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "encode", "--corpus", str(corpus), "--output", str(output),
            "--quiet", *extra]


def encode(corpus: Path, output: Path, *extra: str) -> None:
    done = subprocess.run(encode_command(corpus, output, *extra), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]


def shards_done(folder: Path) -> list[Path]:
    return sorted((folder / "shards").glob("part-*.json")) if (folder / "shards").is_dir() else []


def wait_for(process: subprocess.Popen, ready, timeout: float = 1800) -> bool:
    """Poll until ``ready()``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.05)
    return False


def failure(process: subprocess.Popen) -> str:
    """The driver's stderr for an assertion message (killed first if it still runs)."""
    if process.poll() is None:
        process.kill()
    return process.communicate()[1][-3000:]


def shard_workers() -> list[int]:
    """Pids of this test's Ray actor processes that encode shards (descendants of this process)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            names[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False
    return [pid for pid, name in names.items() if name.startswith("ray::ShardWorker") and ours(pid)]


def assert_identical(folder: Path, reference: Path, corpus: Path) -> None:
    names = sorted(p.name for p in (reference / "vectors").iterdir())
    assert sorted(p.name for p in (folder / "vectors").iterdir()) == names  # nothing stray, nothing missing
    for name in names:
        assert (folder / "vectors" / name).read_bytes() == (reference / "vectors" / name).read_bytes(), name
    assert (folder / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    ids = [json.loads(line)["id"] for name in names for line in (folder / "vectors" / name).open()]
    assert ids == [json.loads(line)["_id"] for line in corpus.open()]  # every document once, in order
    assert not (folder / ".tmp").exists()


def test_node_removed_then_driver_killed_and_rerun(tmp_path, references, cluster, cranfield):
    reference = references(cranfield)

    folder = tmp_path / "ray"
    command = encode_command(cranfield, folder, *CRANFIELD_SHARDS, "--ray", cluster.address)
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(driver, lambda: len(shards_done(folder)) >= 2), failure(driver)
        removed = next(iter(cluster.worker_nodes))
        cluster.remove_node(removed)  # takes one of the three workers and whatever it was encoding
        after_removal = len(shards_done(folder))
        goal = min(after_removal + 3, 22)  # the run goes on without the node
        assert wait_for(driver, lambda: len(shards_done(folder)) >= goal), failure(driver)
        os.kill(driver.pid, signal.SIGKILL)  # the driver, mid-run: its workers go with it
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
    before = {p.name: p.stat().st_mtime_ns for p in shards_done(folder)}
    assert 0 < len(before) < 25 and not (folder / "manifest.json").exists()

    encode(cranfield, folder, *CRANFIELD_SHARDS, "--ray", cluster.address)  # resumes
    assert_identical(folder, reference, cranfield)
    assert {p.name: p.stat().st_mtime_ns for p in shards_done(folder) if p.name in before} == before


def test_worker_killed_mid_shard(tmp_path, references, cluster, scifact_head):
    settings = SCIFACT_SHARDS
    reference = references(scifact_head)

    folder = tmp_path / "ray"
    driver = subprocess.Popen(encode_command(scifact_head, folder, *settings, "--ray", cluster.address),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(driver, lambda: len(shards_done(folder)) >= 1), failure(driver)
        workers = shard_workers()
        assert workers
        os.kill(workers[0], signal.SIGKILL)  # each worker holds two shards in flight: one is mid-encoding
        finished_at_kill = len(shards_done(folder))
        assert driver.wait(timeout=1800) == 0, failure(driver)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert finished_at_kill < 20
    assert_identical(folder, reference, scifact_head)


def test_a_failing_shard_is_the_one_line_error_of_a_plain_run(tmp_path, cluster, cranfield):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(cranfield.read_text().splitlines(keepends=True)[:6]))
    folder = tmp_path / "ray"
    done = subprocess.run(encode_command(corpus, folder, "--scale", "0.0001", "--ray", cluster.address),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "--scale 0.0001 leaves every vector of shard 0 empty" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (folder / "manifest.json").exists() and not any((folder / "vectors").glob("*"))


def test_an_unreachable_cluster_fails_before_any_work(tmp_path, cranfield):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    done = subprocess.run(encode_command(cranfield, tmp_path / "out", "--ray", address), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(
        f"--ray: no Ray cluster answers at {address} (Connection refused); start one with `ray start --head`, "
        "or use --ray alone for a local runtime")
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_is_one_line(monkeypatch):
    from pipeline import distributed
    from pipeline.errors import PipelineError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(PipelineError, match=r"pip install 'splade-pipeline\[ray\]'"):
        distributed.require_ray()


def test_damaged_shard_content_is_refused(tmp_path):
    from pipeline import distributed
    from pipeline.errors import PipelineError

    plan = {"shards": [{"file": 0, "offset": 0, "line": 1, "documents": 1}]}
    info = {"planned": plan["shards"][0], "documents": 1, "sha256": "0" * 64}
    with pytest.raises(PipelineError, match="shard 0 came back damaged"):
        distributed._write(tmp_path, plan, 0, b'{"id": "d1"}\n', info)
    assert not any(tmp_path.iterdir())  # nothing written
