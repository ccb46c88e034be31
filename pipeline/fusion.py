"""The fuse command: hybrid runs from two or more run files (BM25 + SPLADE, say).

* Reciprocal rank fusion (Cormack et al., 2009): ``sum_r 1 / (k + rank_r(d))``, k = 60.
* Linear: per query, each run's scores are min-max normalised to [0, 1] and mixed with weights;
  a document missing from a run gets 0 from it.
Ranks within a run follow the run's scores (ties by document id); fused ties also by document id.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.readers import read_run
from pipeline.search import Hit, write_run

METHODS = ("rrf", "linear")


def ranked(hits: dict[str, float]) -> list[str]:
    return [doc for doc, _ in sorted(hits.items(), key=lambda item: (-item[1], item[0]))]


def reciprocal_rank_fusion(runs: list[dict[str, dict[str, float]]], k: float = 60) -> dict[str, dict[str, float]]:
    fused: dict[str, dict[str, float]] = {}
    for run in runs:
        for qid, hits in run.items():
            scores = fused.setdefault(qid, {})
            for rank, doc in enumerate(ranked(hits), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


def linear_fusion(runs: list[dict[str, dict[str, float]]], weights: list[float]) -> dict[str, dict[str, float]]:
    fused: dict[str, dict[str, float]] = {}
    for run, weight in zip(runs, weights):
        for qid, hits in run.items():
            scores = fused.setdefault(qid, {})
            low, high = min(hits.values()), max(hits.values())
            for doc, score in hits.items():
                normalised = (score - low) / (high - low) if high > low else 1.0
                scores[doc] = scores.get(doc, 0.0) + weight * normalised
    return fused


def top(fused: dict[str, dict[str, float]], hits: int) -> dict[str, list[Hit]]:
    return {qid: [(doc, scores[doc]) for doc in ranked(scores)[:hits]] for qid, scores in sorted(fused.items())}


def fuse(paths: list[Path], method: str = "rrf", k: float = 60, weights: list[float] | None = None,
         hits: int = 1000) -> dict[str, list[Hit]]:
    if len(paths) < 2:
        raise PipelineError("fuse needs at least two run files")
    if method not in METHODS:
        raise PipelineError(f"unknown fusion method {method!r}; use one of {', '.join(METHODS)}")
    runs = [read_run(Path(path)) for path in paths]
    if method == "rrf":
        return top(reciprocal_rank_fusion(runs, k), hits)
    weights = weights or [1.0 / len(runs)] * len(runs)
    if len(weights) != len(runs):
        raise PipelineError(f"{len(weights)} weights for {len(runs)} runs")
    return top(linear_fusion(runs, weights), hits)


def fuse_files(paths: list[Path], output: Path, method: str = "rrf", k: float = 60,
               weights: list[float] | None = None, hits: int = 1000, tag: str | None = None) -> int:
    """Fuse run files into ``output`` (TREC format); returns the number of queries."""
    results = fuse(paths, method, k, weights, hits)
    write_run(Path(output), results, "trec", tag or f"fused-{method}")
    return len(results)
