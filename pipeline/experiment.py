"""The ``run`` command: all four stages on a BEIR-format folder, then a results table.

Outputs follow Anserini's folders: ``collections/<name>.<model>``, ``indexes/<name>.<model>`` and
``runs/run.<name>.<model>.<split>.txt`` under ``root`` (the working directory by default).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline import stages
from pipeline.errors import InputError
from pipeline.evaluate import evaluate_files
from pipeline.readers import read_qrels, read_topics
from pipeline.search import default_run_name


def model_label(encoder: str | None) -> str:
    """Short model name for output paths: ``naver/splade_v2_max`` becomes ``splade_v2_max``."""
    return Path((encoder or "splade-tiny").rstrip("/")).name


def dataset_files(dataset: Path, split: str) -> tuple[Path, Path, Path]:
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise InputError(dataset, "no such dataset folder (expected BEIR layout: corpus.jsonl, "
                                  "queries.jsonl, qrels/<split>.tsv)")
    corpus = next((dataset / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (dataset / n).is_file()),
                  dataset / "corpus.jsonl")
    queries = next((dataset / n for n in ("queries.jsonl", "queries.jsonl.gz") if (dataset / n).is_file()),
                   dataset / "queries.jsonl")
    qrels = dataset / "qrels" / f"{split}.tsv"
    for path, what in ((corpus, "corpus"), (queries, "queries"), (qrels, f"qrels for split '{split}'")):
        stages.require_file(path, what)
    return corpus, queries, qrels


def judged_topics(queries: Path, qrels: Path) -> dict[str, str]:
    """The split's queries only: BEIR's queries.jsonl may hold every split."""
    topics = read_topics(queries)
    judged = read_qrels(qrels)
    missing = [qid for qid in judged if qid not in topics]
    if missing:
        raise InputError(qrels, f"{len(missing)} judged queries are not in {queries} (e.g. {missing[:3]})")
    return {qid: text for qid, text in topics.items() if qid in judged}


def run_dataset(dataset: Path, encoder: str | None = None, name: str | None = None, root: Path = Path("."),
                split: str = "test", hits: int = 1000, threads: int | None = None, batch_size: int = 32,
                scale: float = 100, pooling: str = "max", max_length: int = 512, overwrite: bool = False,
                store_raw: bool = False, remove_query: bool = True, progress: bool = True, verbose: bool = False,
                say: stages.Say = stages.stderr) -> dict[str, Any]:
    """Encode, index, search and evaluate one dataset; returns paths, timings and figures.

    ``remove_query`` drops hits whose id equals the query id, as BEIR does; turn it off for
    collections whose query and document ids are unrelated numbers (Cranfield).
    """
    dataset, root = Path(dataset), Path(root)
    corpus, queries, qrels = dataset_files(dataset, split)
    name = name or dataset.resolve().name
    label = model_label(encoder)
    collection = root / "collections" / f"{name}.{label}"
    index_dir = root / "indexes" / f"{name}.{label}"
    run_file = root / "runs" / default_run_name(name, label, split)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    manifest = stages.encode(corpus, collection, encoder, batch_size, max_length, pooling, scale, threads,
                             overwrite=overwrite, progress=progress, say=say)
    timings["encode_s"] = time.perf_counter() - start
    start = time.perf_counter()
    stages.index(collection, index_dir, threads, store_raw, overwrite, verbose, say, progress)
    timings["index_s"] = time.perf_counter() - start
    start = time.perf_counter()
    topics = judged_topics(queries, qrels)
    stages.search(index_dir, run_file, topics, encoder, hits, remove_query=remove_query, threads=threads,
                  batch_size=batch_size, overwrite=True, progress=progress, say=say)
    timings["search_s"] = time.perf_counter() - start
    result = evaluate_files(run_file, qrels, warn=say)
    return {"dataset": name, "encoder": label, "split": split, "queries": result["queries"],
            "metrics": result["metrics"], "postings_per_doc": manifest["postings"]["mean_per_doc"],
            "documents": manifest["documents"], "collection": str(collection), "index": str(index_dir),
            "run": str(run_file), "qrels": str(qrels),
            "timings": {k: round(v, 2) for k, v in timings.items()}}


def results_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of dataset, model and figures."""
    names = list(rows[0]["metrics"])
    header = ["dataset", "encoder", "queries", *names, "postings/doc"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["dataset"], row["encoder"], str(row["queries"]),
                 *(f"{row['metrics'][n]:.4f}" for n in names), f"{row['postings_per_doc']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
