#!/usr/bin/env python
"""Search service under load on loopback: warm latency, throughput with 1 and 2 workers, memory.

The service runs as its users run it (``splade-pipeline serve``, a separate process) over a SciFact
index built with --store-raw (hits carry their text, as the page shows them), splade-tiny, one
torch thread per worker. Each client is a keep-alive HTTP/1.1 connection on a plain socket
(``Connection``: request paths built beforehand, the answer read by its Content-Length, as wrk or
hey read it) asking SciFact's queries in turn (encoding + search on every request, no cache).
* latency: one client, warm, one query at a time: p50/p99 at k=10 and k=1000 (k=1000 also without
  the documents' text), measured by the client around the whole HTTP exchange; at k=10 each query
  is also asked through Python's ``http.client``, the two clients taking turns (what a Python
  caller of the service sees: it parses every response's headers with the email package, time
  that is the client's, not the service's);
* throughput: N clients for a bounded time at k=10: queries per second, p50/p99 under load, errors;
  the same with ``--workers 2`` (two processes, each with its own JVM and model, sharing the port).
  The clients are threads of a separate, light process (no torch, no JVM; started before the
  clock runs), so they cost the servers little CPU and do not share this process's GIL;
* memory: the server's resident set (all its processes) before and after 10,000 more queries.
The machine's load average is recorded: on a shared machine other work slows every figure.

    python bench/serve.py --lock /tmp/bench.lock   # bench/results/serve.json (SciFact, 5,183 documents)
    python bench/serve.py --smoke              # the demo corpus, seconds
    python bench/serve.py --query-encoder idf --lock /tmp/bench.lock   # bench/results/serve.q-idf.json

``--query-encoder`` (``tokens``, ``idf``, ``idf:FILE``): the same collection indexed with an
inference-free query side (its own index folder, ``NAME.q-SIDE``), so the service loads no model;
the targets are then p50 under 5 ms and p99 under 15 ms at k=10, and the service's own overhead
(client p50 minus the server's encode and search p50) under 2 ms, reported for either side.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import itertools
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import common
import psutil

HOST = "127.0.0.1"


def build_index(corpus: Path, workdir: Path, query_encoder: str | None = None) -> Path:
    """Encode and index once (reused by later runs); an inference-free query side gets its own index."""
    from pipeline import stages

    name = corpus.parent.name
    collection, index = workdir / "collections" / name, workdir / "indexes" / name
    if query_encoder:
        index = index.with_name(f"{name}.q-{side_label(query_encoder)}")
    quiet = {"say": lambda text: None}
    stages.encode(corpus, collection, threads=2, progress=False, **quiet)
    stages.index(collection, index, threads=2, store_raw=True, query_encoder=query_encoder, **quiet)
    return index


def side_label(query_encoder: str) -> str:
    """``idf:/path/to/idf.json`` -> ``idf-idf.json``: a name for files."""
    rule, _, source = query_encoder.partition(":")
    return rule + (f"-{Path(source).name}" if source else "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    """``splade-pipeline serve`` in a child process, until stopped."""

    def __init__(self, index: Path, workers: int, hold_ms: float = 0):
        if hold_ms and workers > 1:  # workers that uvicorn spawns import the service afresh, unheld
            raise ValueError("the hold probe serves from one process")
        self.port = free_port()
        launch = ([str(Path(__file__).with_name("_held_serve.py")), f"{hold_ms:g}"] if hold_ms
                  else ["-m", "pipeline"])  # hold_ms: the probe (``_held_serve``), one process only
        command = [sys.executable, *launch, "serve", "--index", f"bench={index}", "--port",
                   str(self.port), "--workers", str(workers), "--threads", "1", "--quiet"]
        start = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited {self.process.returncode}: {self.process.stderr.read()[-2000:]}")
            try:
                probe = Connection(self.port, timeout=5)
                try:
                    status, _ = probe.get("/health")
                finally:
                    probe.close()
                if status == 200:
                    break
            except (OSError, BadResponse):
                pass
            time.sleep(0.2)
        self.startup_s = round(time.perf_counter() - start, 2)

    def rss_mb(self) -> float:
        """Resident memory of the server and its worker processes."""
        root = psutil.Process(self.process.pid)
        return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20, 1)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class BadResponse(ValueError):
    """An answer this client cannot read: no status line, no single Content-Length, or a chunked body."""


class Connection:
    """A keep-alive HTTP/1.1 connection on a plain socket, for GET requests.

    Reads the status line and the Content-Length that every answer of the service carries, and
    nothing else, so the client's own work stays small next to the service's; anything else in
    the answer (chunked encoding, no length, two lengths) is refused, never guessed. The socket is
    opened by the first request and again by the one after a ``Connection: close`` answer (or an
    HTTP/1.0 one), as ``http.client`` does; a server that refuses is an ``OSError`` of that request.
    """

    def __init__(self, port: int, timeout: float = 60):
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None
        self.pending = bytearray()  # bytes received past the last answer

    def get(self, path: str) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pending.clear()
        self.sock.sendall(b"GET " + path.encode("ascii") + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        while (end := self.pending.find(b"\r\n\r\n")) < 0:
            self._receive()
        status_line, *lines = bytes(self.pending[:end]).split(b"\r\n")
        del self.pending[:end + 4]
        fields: dict[bytes, list[bytes]] = {}
        for name, _, value in (line.partition(b":") for line in lines):
            fields.setdefault(name.strip().lower(), []).append(value.strip())
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"status line {status_line[:80]!r}")
        lengths = fields.get(b"content-length", [])
        if b"transfer-encoding" in fields or len(lengths) != 1 or not lengths[0].isdigit():
            raise BadResponse(f"the answer needs exactly one Content-Length, got {lengths[:3]!r}")
        length = int(lengths[0])
        while len(self.pending) < length:
            self._receive()
        body = bytes(memoryview(self.pending)[:length])
        del self.pending[:length]
        if parts[0] == b"HTTP/1.0" or b"close" in (value.lower() for value in fields.get(b"connection", [])):
            self.close()
        return int(parts[1]), body

    def _receive(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            self.close()
            raise ConnectionError("the server closed the connection")
        self.pending += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class StdlibConnection:
    """``Connection``'s interface through Python's ``http.client``, as a Python caller would ask;
    connected when made, so that no timed request includes the handshake."""

    def __init__(self, port: int, timeout: float = 60):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.conn.connect()

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def search_path(query: str, hits: int, doc: bool = True) -> str:
    params = {"query": query, "hits": hits}
    if not doc:
        params["doc"] = "false"
    return "/v1/bench/search?" + urlencode(params)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:  # a phase with nothing left to do (e.g. the RSS top-up in smoke mode)
        return {}
    return {"p50_ms": round(percentile(latencies, 0.50) * 1000, 2), "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2)}


Client = type[Connection] | type[StdlibConnection]


def sequential(port: int, queries: list[str], hits: int, doc: bool = True,
               clients: tuple[Client, ...] = (Connection,)) -> list[dict[str, object]]:
    """One warm client, one query at a time; one summary per client.

    With several ``clients`` (a connection each) they take turns, the order alternating from turn
    to turn, so that their figures come from the same moments of the machine; client N asks the
    queries from an offset of N / len(clients) of the list, so no query is asked twice in a row
    (the second answer would find the first's postings and documents warm).
    """
    conns = [client(port) for client in clients]
    seen = [Seen() for _ in clients]
    paths = [search_path(query, hits, doc) for query in queries]
    shift = len(paths) // len(conns)
    try:
        for turn in range(len(paths)):
            order = range(len(conns)) if turn % 2 == 0 else reversed(range(len(conns)))
            for slot in order:
                path = paths[(turn + slot * shift) % len(paths)]
                start = time.perf_counter()
                status, body = conns[slot].get(path)
                seen[slot].add(time.perf_counter() - start, status, body)
    finally:
        for conn in conns:
            conn.close()
    return [one.summary() for one in seen]


def k10_latency(port: int, queries: list[str]) -> dict[str, dict[str, object]]:
    """k=10 through both clients in turns: the socket client's row (``k10``) and ``http.client``'s."""
    socket_client, stdlib = sequential(port, queries, 10, clients=(Connection, StdlibConnection))
    return {"k10": socket_client, "k10_http_client": stdlib}


class Seen:
    """One client's sequential answers: latencies, errors, and the server's own timings."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.server: dict[str, list[float]] = {"encode": [], "search": [], "build": []}
        self.beyond: list[float] = []

    def add(self, seconds: float, status: int, body: bytes) -> None:
        self.latencies.append(seconds)
        if status != 200:
            self.errors += 1
            return
        timing = json.loads(body)["timing_ms"]
        for part, values in self.server.items():
            values.append(timing[part])
        self.beyond.append(seconds * 1000 - timing["encode"] - timing["search"])

    def summary(self) -> dict[str, object]:
        # build: the server reading the hits' stored documents and assembling the answer (part of the
        # service's own overhead, with HTTP and JSON); beyond_encode_search: that overhead per request
        return {"queries": len(self.latencies), "errors": self.errors, **summary(self.latencies),
                "server_p50_ms": {part: round(statistics.median(values), 2)
                                  for part, values in self.server.items() if values},
                "beyond_encode_search_p50_ms": round(statistics.median(self.beyond), 2) if self.beyond else None}


def load(port: int, queries: list[str], clients: int, seconds: float | None, total: int | None = None,
         hits: int = 10) -> dict[str, object]:
    """``clients`` connections asking in turn for ``seconds`` (or until ``total`` queries are
    answered), from a separate process (see the module's docstring)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(int, 0).result()  # the client process is up before the clock starts
        return pool.submit(load_here, port, queries, clients, seconds, total, hits).result()


def load_here(port: int, queries: list[str], clients: int, seconds: float | None, total: int | None = None,
              hits: int = 10) -> dict[str, object]:
    """The load itself, on threads of the calling process."""
    paths = [search_path(query, hits, doc=False) for query in queries]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    counter = itertools.count()  # next() on it is atomic under the GIL
    stop_at = time.perf_counter() + seconds if seconds else None

    def client(slot: int) -> None:
        conn = Connection(port)
        while True:
            n = next(counter)
            if (stop_at and time.perf_counter() >= stop_at) or (total is not None and n >= total):
                break
            start = time.perf_counter()
            try:
                status, _ = conn.get(paths[n % len(paths)])
            except (OSError, BadResponse):
                status = 0
                conn.close()
                conn = Connection(port)
            latencies[slot].append(time.perf_counter() - start)
            if status != 200:
                errors[slot] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    merged = [value for values in latencies for value in values]
    return {"clients": clients, "seconds": round(wall, 2), "queries": len(merged), "errors": sum(errors),
            "qps": round(len(merged) / wall, 1) if wall > 0 else 0.0, **summary(merged)}


def overhead(latency: dict) -> float | None:
    """Issue 20's definition: client p50 minus the server's p50 encode and search (build is overhead);
    None when no answer carried the server's timings."""
    server = latency["server_p50_ms"]
    if "encode" not in server:
        return None
    return round(latency["p50_ms"] - server["encode"] - server["search"], 2)


@contextlib.contextmanager
def timed(lock: Path | None):
    """Hold ``lock`` (flock) while figures are timed, so that timed benchmarks never overlap; the
    memory endurance run and server start-ups happen outside it."""
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", type=Path, default=common.DATASETS / "scifact")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for throughput (default 4)")
    parser.add_argument("--seconds", type=float, default=20, help="length of each throughput run (default 20)")
    parser.add_argument("--latency-queries", type=int, default=500, help="sequential queries per k (default 500)")
    parser.add_argument("--rss-queries", type=int, default=10_000, help="queries between memory readings")
    parser.add_argument("--workdir", type=Path, default=common.RESULTS / "work" / "serve")
    parser.add_argument("--lock", type=Path, default=None,
                        help="flock this file around the timed parts (e.g. /tmp/bench.lock on a shared machine)")
    parser.add_argument("--query-encoder", default=None, metavar="SIDE",
                        help="index with this inference-free query side (tokens, idf, idf:FILE) and serve it")
    parser.add_argument("--hold-ms", type=float, default=0, metavar="MS",
                        help="probe: the server holds every query's encoding on the CPU for at least MS ms "
                             "(bench/_held_serve.py); latency at k=10 only, result NAME.hold-MS")
    args = parser.parse_args()
    from pipeline.demo import DEMO_DATA
    from pipeline.readers import read_topics

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the servers
    if args.smoke:
        corpus, topics = DEMO_DATA / "corpus.jsonl", DEMO_DATA / "queries.jsonl"
        args.clients, args.seconds, args.latency_queries, args.rss_queries = 2, 2, 20, 100
        args.workdir = args.results / "work-serve"
    else:
        corpus, topics = args.dataset / "corpus.jsonl", args.dataset / "queries.jsonl"
    queries = list(read_topics(topics).values())
    index = build_index(corpus, args.workdir, args.query_encoder)
    record = json.loads((index / "splade-pipeline.json").read_text())
    loadavg_before = os.getloadavg()

    result: dict[str, object] = {"dataset": corpus.parent.name, "documents": record["documents"],
                                 "postings_per_doc": record.get("postings", {}).get("mean_per_doc"),
                                 "query_pool": len(queries), "encoder": "splade-tiny",
                                 "query_encoder": (record.get("query_encoder") or {}).get("name", "splade-tiny"),
                                 "torch_threads_per_worker": 1}
    name = f"serve.q-{side_label(args.query_encoder)}" if args.query_encoder else "serve"
    if args.hold_ms:
        held_probe(index, queries, args, result, f"{name}.hold-{args.hold_ms:g}")
        return
    server = Server(index, workers=1)
    try:
        result["startup_s"] = {"1_worker": server.startup_s}
        sequential(server.port, queries[:max(20, args.latency_queries // 5)], 10)  # warm the JIT and caches
        latency = queries[:args.latency_queries]
        rss_before = server.rss_mb()
        with timed(args.lock):
            loads = [round(os.getloadavg()[0], 2)]
            result["latency"] = {
                **k10_latency(server.port, latency),
                "k1000": sequential(server.port, latency, 1000)[0],
                "k1000_without_text": sequential(server.port, latency, 1000, doc=False)[0]}
            throughput = {"1_worker": load(server.port, queries, args.clients, args.seconds)}
        done = sum(r["queries"] for r in result["latency"].values()) + throughput["1_worker"]["queries"]
        endurance = load(server.port, queries, args.clients, None, total=max(0, args.rss_queries - done))
        result["memory"] = {"rss_before_mb": rss_before, "rss_after_mb": server.rss_mb(),
                            "queries_between": done + endurance["queries"], "errors": endurance["errors"]}
    finally:
        server.stop()
    server = Server(index, workers=2)
    try:
        result["startup_s"]["2_workers"] = server.startup_s
        load(server.port, queries, args.clients, max(1.0, args.seconds / 5))  # warm both workers
        with timed(args.lock):
            loads.append(round(os.getloadavg()[0], 2))
            throughput["2_workers"] = load(server.port, queries, args.clients, args.seconds)
        result["memory"]["rss_2_workers_mb"] = server.rss_mb()
    finally:
        server.stop()
    throughput["ratio_2_to_1"] = round(throughput["2_workers"]["qps"] / max(throughput["1_worker"]["qps"], 1e-9), 2)
    result["throughput_k10"] = throughput
    result["errors"] = (sum(r["errors"] for r in result["latency"].values()) + result["memory"]["errors"]
                        + throughput["1_worker"]["errors"] + throughput["2_workers"]["errors"])
    result["loadavg"] = {"before": [round(x, 2) for x in loadavg_before], "at_timed_parts_1min": loads,
                         "after": [round(x, 2) for x in os.getloadavg()]}
    k10 = result["latency"]["k10"]
    result["service_overhead_k10_ms"] = overhead(k10)
    # the same through http.client: the client's own header parsing counted in (not a target)
    result["service_overhead_k10_http_client_ms"] = overhead(result["latency"]["k10_http_client"])
    if args.query_encoder:  # issue 20's targets for an inference-free query side
        targets = {"p50_k10_under_5ms": k10["p50_ms"] < 5, "p99_k10_under_15ms": k10["p99_ms"] < 15}
    else:
        targets = {"p50_k10_under_10ms": k10["p50_ms"] < 10, "p99_k10_under_50ms": k10["p99_ms"] < 50}
    measured = result["service_overhead_k10_ms"]
    result["targets"] = {**targets, "service_overhead_k10_under_2ms": measured is not None and measured < 2,
                         "two_workers_at_least_1.6x": throughput["ratio_2_to_1"] >= 1.6,
                         "zero_errors": result["errors"] == 0}
    common.write_result(name, result, args, threads=1)


def held_probe(index: Path, queries: list[str], args, result: dict[str, object], name: str) -> None:
    """``--hold-ms``: k=10 latency of a server whose encoding is held (``_held_serve``), both clients."""
    server = Server(index, workers=1, hold_ms=args.hold_ms)
    try:
        sequential(server.port, queries[:max(20, args.latency_queries // 5)], 10)  # warm the JIT and caches
        with timed(args.lock):
            load_at_start = round(os.getloadavg()[0], 2)
            latency = k10_latency(server.port, queries[:args.latency_queries])
    finally:
        server.stop()
    held = latency["k10"]["server_p50_ms"].get("encode", 0)
    if held < args.hold_ms:  # the patch did not reach the server: no probe to report
        raise SystemExit(f"the server's encode p50 is {held} ms, under the {args.hold_ms:g} ms held")
    result.update(hold_ms=args.hold_ms, latency=latency, loadavg_1min_at_start=load_at_start,
                  service_overhead_k10_ms=overhead(latency["k10"]),
                  service_overhead_k10_http_client_ms=overhead(latency["k10_http_client"]),
                  errors=sum(row["errors"] for row in latency.values()))
    common.write_result(name, result, args, threads=1)


if __name__ == "__main__":
    main()
