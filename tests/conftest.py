"""Shared fixtures: the real splade-tiny encoder, the shared datasets, a SciFact slice, the demo
collection with its two indexes, and one running service.

Session fixtures are built once for the whole run (one encode of the demo corpus, one JVM, one
uvicorn server); tests must treat them as read-only and write their own outputs under tmp_path.

Integration tests use ../shared/datasets (beside the checkout, and in CI). Where it is absent they
are skipped with a reason, unless SPLADE_REQUIRE_DATASETS=1 (set by .ci/run) makes that a failure.

Tiers: tests marked ``slow`` (Ray clusters, the browser, the bench smokes, the wheel install, real
processes killed mid-write) are left out of the README's test command and run by ``.ci/run`` after it
(``pytest -m slow``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_QUERY = "who invented printing books"  # demo q9: expansion terms carry the top hit
SERVICE_LIMITS = dict(keep_alive_s=1, body_timeout_s=1.0, max_in_flight=8)
DATASETS = Path(os.environ.get("SPLADE_DATASETS", ROOT.parent / "shared" / "datasets"))


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        if os.environ.get("SPLADE_REQUIRE_DATASETS") == "1":
            pytest.fail(f"dataset {path} is missing and SPLADE_REQUIRE_DATASETS=1")
        pytest.skip(f"dataset {path} not available")
    return path


@pytest.fixture(scope="session")
def encoder():
    from pipeline import models
    from pipeline.encoder import SpladeEncoder

    return SpladeEncoder(models.resolve(None), "max", 512)


@pytest.fixture(scope="session")
def scifact() -> Path:
    return dataset("scifact")


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory, scifact) -> Path:
    """A BEIR folder with the judged documents of 30 test queries plus others, 200 docs in all."""
    from pipeline.readers import read_qrels

    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    qids = sorted(qrels, key=lambda q: int(q))[:30]
    wanted = {doc for q in qids for doc in qrels[q]}
    out = tmp_path_factory.mktemp("scifact-slice")
    (out / "qrels").mkdir()
    lines = (scifact / "corpus.jsonl").read_text().splitlines(keepends=True)
    ids = [json.loads(line)["_id"] for line in lines]
    others = set([i for i in ids if i not in wanted][:200 - len(wanted)])
    kept = [(i, line) for i, line in zip(ids, lines) if i in wanted or i in others]
    (out / "corpus.jsonl").write_text("".join(line for _, line in kept))
    with open(scifact / "queries.jsonl") as source:
        (out / "queries.jsonl").write_text("".join(l for l in source if json.loads(l)["_id"] in qids))
    rows = ["query-id\tcorpus-id\tscore\n"] + [f"{q}\t{d}\t{g}\n" for q in qids for d, g in qrels[q].items()]
    (out / "qrels" / "test.tsv").write_text("".join(rows))
    return out


def bench_module(name: str):
    """A bench script (``bench/NAME.py``) as a module, for tests of its pure logic; the scripts
    import their neighbour ``common`` by its bare name, so ``bench/`` is on the path while it loads."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as an import would: dataclasses and pickling look it up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def write_lines(path: Path, lines: list[str] | str, mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = lines if isinstance(lines, str) else "".join(line + "\n" for line in lines)
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def demo_indexes(tmp_path_factory) -> dict[str, Path]:
    """The demo corpus encoded once; ``demo`` indexes it with the documents stored (--store-raw),
    ``bare`` without, so tests see both explanation paths (stored vectors and Lucene's postings)."""
    from pipeline import stages

    from pipeline.demo import DEMO_DATA

    quiet = {"say": lambda text: None}
    root = tmp_path_factory.mktemp("demo")
    collection = root / "collections" / "demo"
    stages.encode(DEMO_DATA / "corpus.jsonl", collection, threads=1, progress=False, **quiet)
    stages.index(collection, root / "indexes" / "demo", threads=1, store_raw=True, **quiet)
    stages.index(collection, root / "indexes" / "bare", threads=2, **quiet)
    return {"demo": root / "indexes" / "demo", "bare": root / "indexes" / "bare", "collection": collection}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def service(demo_indexes):
    """Base URL of a running service (uvicorn in a thread of this process, the guarded protocol)."""
    import uvicorn

    from pipeline.service import create_app
    from pipeline.service.guard import Limits
    from pipeline.service.server import uvicorn_options

    limits = Limits(**SERVICE_LIMITS)
    app = create_app({"demo": demo_indexes["demo"], "bare": demo_indexes["bare"]}, threads=1, limits=limits)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **uvicorn_options(limits)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def cli(argv: list, capsys) -> tuple[int, list[str], str]:
    """``pipeline.cli.main`` in this process: its exit status, its stderr lines and its stdout."""
    from pipeline.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def refused(result, *needles: str, code: int = 2) -> str:
    """The one error line of a refused command (status ``code``, no traceback, nothing on stdout)."""
    status, err, out = result
    assert status == code, (status, err)
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and out == "", (err, out)
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]
