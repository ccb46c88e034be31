"""Encoding a planned collection's shards on a Ray cluster (``splade-pipeline encode --ray``).

The plan's shards are already independent units; here they run on a pool of Ray actors, each
loading the model once. ``--ray`` alone starts a Ray runtime on this machine; ``--ray ADDRESS``
joins a running cluster (``ray start --head`` on one machine, ``ray start --address ...`` on the
others).

Where shards are written: only by the driver (the process that runs ``encode``). The driver reads
each shard's documents from the corpus and sends them to a worker; the worker encodes them and
returns the shard's bytes and record (``collection.shard_content``); the driver checks the
checksum and writes both with ``collection.write_shard``, atomically, exactly as a single-process
run does. Workers never open the corpus or the collection folder, so the nodes need no shared
storage, and a run can never leave a half-written shard on some other machine.

Guarantees are the single-process ones: every document exactly once in plan order (shard
``part-N`` holds the plan's shard N whichever worker encoded it), a killed driver resumes from the
shards already written, and a worker or node that dies mid-shard only costs that shard, which goes
to another worker (Ray restarts the actor where the cluster has room). Shard bytes do not depend
on the worker: batches are fixed by the plan (``--batch-size`` over length-sorted documents of the
shard), and the torch thread count does not change the encoder's results on x86 (the tests
compare one-thread workers with a two-thread single process, byte for byte). Nodes whose CPUs run
other kernels (or GPUs) can round differently: keep a cluster to one CPU or GPU type.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline import extras, models
from pipeline.collection import read_shard, release_memory, shard_content, steady_memory, write_shard
from pipeline.errors import PipelineError
from pipeline.models import ModelRef

LOCAL = "local"  # ``--ray`` without an address
ATTEMPTS = 3  # workers a shard may lose (killed process, lost node) before the run gives up
IN_FLIGHT = 2  # shards queued per worker: the next one travels while the current one encodes
LOCAL_OBJECT_STORE = 256 * 1024 * 1024  # bytes; shards in flight are a few MB each
WAIT_NOTICE_S = 120.0  # say so when no worker has been alive for this long


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and how to size the worker pool."""

    address: str = LOCAL  # LOCAL, or a cluster address such as ``10.0.0.1:6379`` or ``auto``
    workers: int | None = None  # default: as many as the cluster's CPUs (GPUs) allow
    threads: int = 1  # torch threads per worker
    device: str = "cpu"


def require_ray():
    """Ray is an optional dependency (the 'ray' extra): say how to install it instead of a traceback."""
    extras.require("--ray", "ray")
    import ray

    return ray


def uses_gpu(device: str | None) -> bool:
    return bool(device) and str(device).startswith("cuda")


def local_model(model: ModelRef) -> ModelRef:
    """The driver's model as found on this node: by its path, else by its name; the same files or an error.

    The embedded splade-tiny lies inside the installed package, whose path can differ between
    machines; a checkpoint folder must be copied to each node (or lie on storage they share).
    """
    here = models.resolve(model.location if Path(model.location).exists() else model.name)
    if here.fingerprint != model.fingerprint:
        raise PipelineError(f"--ray: node {socket.gethostname()} has another {model.name} "
                            f"({here.fingerprint}, the driver's is {model.fingerprint})")
    return here


class ShardWorker:
    """One model load per worker; encodes the documents it is sent and writes nothing."""

    def __init__(self, model: ModelRef, load: Callable[[ModelRef], Any]):
        steady_memory()
        self.encoder, self.failure = None, None
        try:
            self.encoder = load(local_model(model))
        except Exception as exc:  # kept for the probe: Ray would only report a failed creation task
            self.failure = exc

    def where(self) -> tuple[str, int]:
        """Host and process id: the readiness probe (which raises what loading the model raised)."""
        if self.failure is not None:
            raise self.failure
        return socket.gethostname(), os.getpid()

    def encode(self, plan: dict[str, Any], index: int, docs: list) -> tuple[bytes, dict[str, Any]]:
        try:
            return shard_content(plan, index, docs, self.encoder)
        finally:
            release_memory()


def connect(options: RayOptions):
    """Start a local Ray runtime or join a cluster; returns the ray module and whether we started it."""
    ray = require_ray()
    if ray.is_initialized():  # an embedding program (or a test) already chose the cluster
        return ray, False
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
             "logging_level": "warning"}
    try:
        if options.address == LOCAL:  # a new runtime, even where a cluster already runs on this machine
            gpus = 1 if uses_gpu(options.device) else 0
            workers = options.workers or max(1, _cores() // options.threads)
            # its token is generated and read here; the notice about it matters for clusters only
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(address="local", num_cpus=workers * options.threads, num_gpus=gpus or None,
                     object_store_memory=LOCAL_OBJECT_STORE, **quiet)
        else:
            _reachable(options.address)
            ray.init(address=options.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray runtime" if options.address == LOCAL else f"the Ray cluster at {options.address}"
        raise PipelineError(f"--ray: cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
    return ray, True


def _reachable(address: str, timeout: float = 10.0) -> None:
    """A ``host:port`` that does not answer fails in seconds; Ray itself would retry for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # "auto", "ray://...": left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise PipelineError(f"--ray: no Ray cluster answers at {address} ({exc.strerror or exc}); start one "
                            "with `ray start --head`, or use --ray alone for a local runtime") from None


def pool_size(ray, options: RayOptions, shards: int) -> int:
    """Workers to start: what was asked, else what the cluster's resources hold; never more than shards."""
    if options.workers:
        return min(options.workers, shards)
    resources = ray.cluster_resources()
    if uses_gpu(options.device):
        fit = int(resources.get("GPU", 0))
        if fit < 1:
            raise PipelineError(f"--device {options.device} with --ray: the Ray cluster has no GPU")
    else:
        fit = int(resources.get("CPU", 0)) // options.threads
    return max(1, min(fit, shards))


def runner(model: ModelRef, load: Callable[[ModelRef], Any], options: RayOptions):
    """A ``collection.RunShards`` that encodes the pending shards on Ray workers.

    ``load`` builds the encoder from the model as found on the worker's node (``local_model``);
    it travels to the workers by value (cloudpickle), so a closure over the stage's settings is fine.
    Ray's presence and the cluster's address are checked now, before the corpus is read.
    """
    require_ray()
    if options.address != LOCAL:
        _reachable(options.address)

    def run(folder: Path, plan: dict[str, Any], pending: list[int], bar) -> None:
        ray, started = connect(options)
        try:
            _run(ray, model, load, options, folder, plan, pending, bar)
        finally:
            if started:
                ray.shutdown()
    return run


def _run(ray, model: ModelRef, load: Callable[[ModelRef], Any], options: RayOptions, folder: Path,
         plan: dict[str, Any], pending: list[int], bar) -> None:
    from ray import exceptions as rex

    lost = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
            rex.OwnerDiedError, rex.LocalRayletDiedError)
    size = pool_size(ray, options, len(pending))
    gpus = 1 if uses_gpu(options.device) else 0
    actor_class = ray.remote(num_cpus=0 if gpus else options.threads, num_gpus=gpus,
                             max_restarts=-1, max_task_retries=0)(ShardWorker)
    actors = [actor_class.remote(model, load) for _ in range(size)]
    plan_ref = ray.put({"settings": plan["settings"], "shards": plan["shards"]})
    queue = deque(pending)
    attempts: Counter[int] = Counter()
    busy: dict[int, int] = {}  # actor number -> shards in flight; absent while not known alive
    flight: dict[Any, tuple[int, int | None]] = {}  # object ref -> (actor number, shard or None for a probe)
    probe_at: dict[int, float] = {number: 0.0 for number in range(size)}  # actors to probe, and when
    bar.set_postfix_str(f"workers 0/{size}")
    waiting_since, noticed = time.monotonic(), False
    try:
        while queue or any(shard is not None for _, shard in flight.values()):
            for number, when in list(probe_at.items()):
                if when <= time.monotonic():
                    del probe_at[number]
                    flight[actors[number].where.remote()] = (number, None)
            for number in sorted(busy, key=busy.get):  # least loaded first
                while queue and busy[number] < IN_FLIGHT:
                    index = queue.popleft()
                    docs = read_shard(plan, index)
                    flight[actors[number].encode.remote(plan_ref, index, docs)] = (number, index)
                    busy[number] += 1
            ready = []
            if flight:
                ready, _ = ray.wait(list(flight), num_returns=1, timeout=1.0)
            else:
                time.sleep(0.5)  # only probes, to be sent a little later
            for ref in ready:
                number, index = flight.pop(ref)
                try:
                    value = ray.get(ref)
                except lost as exc:  # the worker or its node died: the shard goes to another worker
                    if getattr(exc, "actor_init_failed", False):
                        raise PipelineError(f"--ray: a worker could not start: {_first_line(exc)}") from None
                    if index is not None:
                        attempts[index] += 1
                        if attempts[index] >= ATTEMPTS:
                            raise PipelineError(f"--ray: shard {index} was lost on {ATTEMPTS} workers; last: "
                                                f"{_first_line(exc)}") from None
                        queue.appendleft(index)
                    if number in busy or index is None:  # probe again: answers once Ray has restarted it
                        busy.pop(number, None)
                        probe_at.setdefault(number, time.monotonic() + (1.0 if index is None else 0.0))
                except rex.RayTaskError as exc:  # the encoding itself failed: the same everywhere
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
                    if isinstance(cause, PipelineError):
                        raise cause from None
                    what = "a worker could not start" if index is None else f"shard {index} failed on a worker"
                    raise PipelineError(f"--ray: {what}: {_first_line(cause)}") from None
                else:
                    if index is None:
                        busy.setdefault(number, 0)
                    else:
                        busy[number] = busy.get(number, 1) - 1
                        _write(folder, plan, index, *value)
                        bar.update(value[1]["documents"])
            alive = len(busy)
            bar.set_postfix_str(f"workers {alive}/{size}")
            if alive:
                waiting_since, noticed = time.monotonic(), False
            elif not noticed and time.monotonic() - waiting_since > WAIT_NOTICE_S:
                noticed = True
                print(f"--ray: waiting for a worker: none of {size} is up yet (Ray starts or restarts them "
                      "when the cluster has room)", file=sys.stderr)
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node: nothing left to stop
                pass


def _write(folder: Path, plan: dict[str, Any], index: int, data: bytes, info: dict[str, Any]) -> None:
    """Check what came back against the plan and its own checksum, then write it as a local run would."""
    planned = plan["shards"][index]
    if info.get("planned") != planned or info.get("documents") != planned["documents"] or \
            hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise PipelineError(f"--ray: shard {index} came back damaged (count or checksum differs)")
    write_shard(folder, index, data, info)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
