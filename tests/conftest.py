"""Shared fixtures: the real splade-tiny encoder, the shared datasets, and a SciFact slice.

Integration tests use ../shared/datasets (beside the checkout, and in CI). Where it is absent they
are skipped with a reason, unless SPLADE_REQUIRE_DATASETS=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
    """A BEIR folder with the judged documents of 60 test queries plus 340 others (400 docs)."""
    from pipeline.readers import read_qrels

    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    qids = sorted(qrels, key=lambda q: int(q))[:60]
    wanted = {doc for q in qids for doc in qrels[q]}
    out = tmp_path_factory.mktemp("scifact-slice")
    (out / "qrels").mkdir()
    lines = (scifact / "corpus.jsonl").read_text().splitlines(keepends=True)
    ids = [json.loads(line)["_id"] for line in lines]
    others = set([i for i in ids if i not in wanted][:400 - len(wanted)])
    kept = [(i, line) for i, line in zip(ids, lines) if i in wanted or i in others]
    (out / "corpus.jsonl").write_text("".join(line for _, line in kept))
    with open(scifact / "queries.jsonl") as source:
        (out / "queries.jsonl").write_text("".join(l for l in source if json.loads(l)["_id"] in qids))
    rows = ["query-id\tcorpus-id\tscore\n"] + [f"{q}\t{d}\t{g}\n" for q in qids for d, g in qrels[q].items()]
    (out / "qrels" / "test.tsv").write_text("".join(rows))
    return out


def write_lines(path: Path, lines: list[str] | str, mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = lines if isinstance(lines, str) else "".join(line + "\n" for line in lines)
    path.write_text(text)
    return path
