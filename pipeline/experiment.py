"""The ``run`` command: all four stages on one dataset, then a results table.

A dataset is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) or any
corpus, topics and qrels files given one by one, e.g. MS MARCO's ``collection.tsv`` with the TREC DL
topics and graded qrels (the evaluation preset is derived from the qrels and reported).

Outputs follow Anserini's folders: ``collections/<name>.<model>``, ``indexes/<name>.<model>`` and
``runs/run.<name>.<model>.<split>.txt`` under ``root`` (the working directory by default).

Hits whose document id equals the query id: BEIR drops them (ArguAna's queries are corpus
documents, never judged relevant to themselves). On sets whose query and document ids are
unrelated numbers that would drop judged relevant documents, so the default rule, ``auto``, drops
such a hit only when the qrels do not judge that (query, document) pair relevant: BEIR's figures
wherever BEIR's rule is meant, and never a judged relevant document lost. ``always`` is BEIR's rule
as is, ``never`` keeps every hit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline import stages
from pipeline.encoders import Options
from pipeline.errors import InputError, PipelineError
from pipeline.evaluate import evaluate_files
from pipeline.first_stage import DEFAULT_PRUNE_DOCS
from pipeline.readers import read_qrels, read_topics
from pipeline.search import default_run_name
from pipeline.two_step import TwoStepOptions

REMOVE_QUERY_RULES = ("auto", "always", "never")


def model_label(encoder: str | None) -> str:
    """Short model name for output paths: ``naver/splade_v2_max`` becomes ``splade_v2_max``."""
    return Path((encoder or "splade-tiny").rstrip("/")).name


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def dataset_files(dataset: Path | None, split: str = "test", corpus: Path | None = None,
                  topics: Path | None = None, qrels: Path | None = None) -> tuple[Path, Path, Path]:
    """Corpus, topics and qrels: from a BEIR folder (or one holding MS MARCO's ``collection.tsv``),
    each replaceable by a file of its own; without a folder all three files are needed."""
    if dataset is not None:
        dataset = Path(dataset)
        if not dataset.is_dir():
            raise InputError(dataset, "no such dataset folder (expected BEIR layout: corpus.jsonl, "
                                      "queries.jsonl, qrels/<split>.tsv; or give --corpus, --topics, --qrels)")
        corpus = corpus or _first(dataset, ("corpus.jsonl", "corpus.jsonl.gz", "collection.tsv",
                                            "collection.tsv.gz")) or dataset / "corpus.jsonl"
        topics = topics or _first(dataset, ("queries.jsonl", "queries.jsonl.gz")) or dataset / "queries.jsonl"
        qrels = qrels or dataset / "qrels" / f"{split}.tsv"
    missing = [flag for flag, value in (("--corpus", corpus), ("--topics", topics), ("--qrels", qrels))
               if value is None]
    if missing:
        raise PipelineError(f"run needs --dataset, or {', '.join(missing)} (with --corpus, --topics and --qrels)")
    for path, what in ((corpus, "corpus"), (topics, "topics (queries)"), (qrels, f"qrels")):
        stages.require_file(Path(path), what)
    return Path(corpus), Path(topics), Path(qrels)


def judged_topics(queries: Path, qrels: Path) -> dict[str, str]:
    """The split's queries only: BEIR's queries.jsonl may hold every split."""
    topics = read_topics(queries)
    judged = read_qrels(qrels)
    missing = [qid for qid in judged if qid not in topics]
    if missing:
        raise InputError(qrels, f"{len(missing)} judged queries are not in {queries} (e.g. {missing[:3]})")
    return {qid: text for qid, text in topics.items() if qid in judged}


def self_hit_rule(rule: str | bool, topics: dict[str, str], qrels: Path) -> tuple[bool | list[str], int]:
    """What ``search`` drops for a rule, and how many (query, query-id) pairs the qrels judge relevant."""
    if isinstance(rule, bool):
        rule = "always" if rule else "never"
    if rule not in REMOVE_QUERY_RULES:
        raise PipelineError(f"--remove-query must be one of {', '.join(REMOVE_QUERY_RULES)}, got {rule!r}")
    judged = read_qrels(qrels)
    relevant_self = {qid for qid in topics if judged.get(qid, {}).get(qid, 0) > 0}
    if rule == "always":
        return True, len(relevant_self)
    if rule == "never":
        return False, len(relevant_self)
    return sorted(qid for qid in topics if qid not in relevant_self), len(relevant_self)


def run_dataset(dataset: Path | None = None, encoder: str | None = None, name: str | None = None,
                root: Path = Path("."), split: str = "test", hits: int = 1000, threads: int | None = None,
                batch_size: int = 32, scale: float | None = None, pooling: str | None = None,
                max_length: int | None = None,
                overwrite: bool = False, store_raw: bool = False, remove_query: str | bool = "auto",
                progress: bool = True, verbose: bool = False, say: stages.Say = stages.stderr,
                corpus: Path | None = None, topics: Path | None = None, qrels: Path | None = None,
                preset: str = "auto", device: str | None = None, precision: str | None = None,
                backend: str = "torch", query_encoder: str | None = None, quantisation: str | None = None,
                two_step: TwoStepOptions | None = None, prune_docs: int | None = None,
                prune_impact: int | None = None) -> dict[str, Any]:
    """Encode, index, search and evaluate one dataset; returns paths, timings, figures and the
    remove-query rule that applied (``auto``, ``always``, ``never``; see the module docstring).

    Without ``name`` outputs are named after the dataset folder (or the corpus file's folder); the
    split is the qrels file's name when ``qrels`` is given. ``two_step``: the index stage also builds
    the two-step companion (``prune_docs`` postings per document, default
    ``first_stage.DEFAULT_PRUNE_DOCS``; ``prune_impact``: none under that impact) and the search is
    two-step; the run is named ``<model>-two-step``.
    """
    for flag, value in (("--prune-docs", prune_docs), ("--prune-impact", prune_impact)):
        if value is not None and two_step is None:
            raise PipelineError(f"{flag} needs --two-step")
    if two_step is not None:
        two_step.check(hits)  # before any stage runs
    root = Path(root)
    split = Path(qrels).name.split(".")[0] if qrels is not None else split
    corpus, queries, qrels = dataset_files(dataset, split, corpus, topics, qrels)
    name = name or (Path(dataset) if dataset is not None else corpus.parent).resolve().name
    label = model_label(encoder)
    collection = root / "collections" / f"{name}.{label}"
    index_dir = root / "indexes" / f"{name}.{label}"
    # one index serves every query side (only its record changes); each side gets its own run
    run_label = f"{label}.q-{model_label(query_encoder).replace(':', '-')}" if query_encoder else label
    run_label = f"{run_label}-two-step" if two_step else run_label
    run_file = root / "runs" / default_run_name(name, run_label, split)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    manifest = stages.encode(corpus, collection, encoder, batch_size, max_length, pooling, scale, threads,
                             overwrite=overwrite, progress=progress, say=say, device=device, precision=precision,
                             backend=backend, quantisation=quantisation)
    timings["encode_s"] = time.perf_counter() - start
    start = time.perf_counter()
    stages.index(collection, index_dir, threads, store_raw, overwrite, verbose, say, progress,
                 query_encoder=query_encoder, prune_docs=(prune_docs or DEFAULT_PRUNE_DOCS) if two_step else None,
                 prune_impact=prune_impact)
    timings["index_s"] = time.perf_counter() - start
    start = time.perf_counter()
    topic_texts = judged_topics(queries, qrels)
    rule = remove_query if isinstance(remove_query, str) else ("always" if remove_query else "never")
    dropping, relevant_self = self_hit_rule(rule, topic_texts, qrels)
    counters = stages.search(index_dir, run_file, topic_texts, hits=hits, remove_query=dropping,
                             options=Options(device=device, precision=precision, backend=backend),
                             threads=threads, batch_size=batch_size, overwrite=True, progress=progress, say=say,
                             two_step=two_step)
    timings["search_s"] = time.perf_counter() - start
    applied = {"rule": rule, "self_hits_removed": counters.get("self_hits_removed", 0),
               "judged_relevant_self_pairs": relevant_self,
               "kept_as_judged_relevant": relevant_self if rule == "auto" else 0}
    say(f"remove-query {rule}: {applied['self_hits_removed']} hits whose id is the query id removed; "
        + (f"{relevant_self} (query, query id) pairs judged relevant kept" if rule == "auto" else
           f"{relevant_self} (query, query id) pairs are judged relevant"))
    result = evaluate_files(run_file, qrels, warn=say, preset=preset)
    return {"dataset": name, "encoder": label, "query_encoder": query_encoder or label, "split": split, "queries": result["queries"],
            "metrics": result["metrics"], "preset": result["preset"],
            "relevance_level": result["relevance_level"], "remove_query": applied,
            "postings_per_doc": manifest["postings"]["mean_per_doc"],
            "documents": manifest["documents"], "collection": str(collection), "index": str(index_dir),
            "run": str(run_file), "qrels": str(qrels),
            **({"two_step": {**{k: counters[k] for k in ("two_step", "candidates_mean", "could_miss", "per_query")},
                             "prune_docs": prune_docs or DEFAULT_PRUNE_DOCS,
                             **({"prune_impact": prune_impact} if prune_impact else {})}} if two_step else {}),
            "timings": {k: round(v, 2) for k, v in timings.items()}}


def results_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of dataset, model and figures."""
    names = list(rows[0]["metrics"])
    header = ["dataset", "encoder", "queries", *names, "postings/doc"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        query = row.get("query_encoder", row["encoder"])
        encoder = row["encoder"] if query == row["encoder"] else f"{row['encoder']} (queries: {query})"
        cells = [row["dataset"], encoder, str(row["queries"]),
                 *(f"{row['metrics'][n]:.4f}" for n in names), f"{row['postings_per_doc']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
