"""The fuse command: hybrid runs from two or more run files (BM25 + SPLADE, say).

* Reciprocal rank fusion (Cormack et al., 2009): ``sum_r 1 / (k + rank_r(d))``, k = 60.
* Linear: per query, each run's scores are min-max normalised to [0, 1] and mixed with weights;
  a document missing from a run gets 0 from it.
Ranks within a run follow the run's scores (ties by document id); fused ties also by document id.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline import outputs
from pipeline.errors import ConsistencyError, PipelineError
from pipeline.readers import check_run_tag, read_run
from pipeline.search import Hit, write_run

METHODS = ("rrf", "linear")
MAX_WEIGHT_SUM = 1e38  # a linear score is at most the sum of the weights; float32 ends at 3.4e38


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


def check_options(paths: list[Path], method: str, k: float, weights: list[float] | None, hits: int
                  ) -> list[float] | None:
    """Refuse settings that cannot give a meaningful fusion; returns the weights to use."""
    if len(paths) < 2:
        raise PipelineError("fuse needs at least two run files")
    if method not in METHODS:
        raise PipelineError(f"unknown fusion method {method!r}; use one of {', '.join(METHODS)}")
    if isinstance(hits, bool) or not isinstance(hits, int) or hits < 1:
        raise PipelineError(f"--hits must be an integer of at least 1, got {hits!r}")
    if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
        raise PipelineError(f"--k must be a positive finite number, got {k!r}")
    if method == "rrf":
        if weights is not None:
            raise PipelineError("--weights applies to --method linear only")
        return None
    weights = list(weights) if weights else [1.0 / len(paths)] * len(paths)
    if len(weights) != len(paths):
        raise PipelineError(f"--weights: {len(weights)} weights for {len(paths)} runs")
    if not all(math.isfinite(w) for w in weights) or not any(weights):
        raise PipelineError(f"--weights must be finite numbers, not all zero, got {weights}")
    if sum(abs(w) for w in weights) > MAX_WEIGHT_SUM:
        raise PipelineError(f"--weights add up to more than {MAX_WEIGHT_SUM:g} in size: fused scores would "
                            "overflow the 32-bit floats that evaluate and trec_eval read them as")
    return weights


def fuse(paths: list[Path], method: str = "rrf", k: float = 60, weights: list[float] | None = None,
         hits: int = 1000) -> dict[str, list[Hit]]:
    weights = check_options(paths, method, k, weights, hits)
    runs = [read_run(Path(path)) for path in paths]
    if method == "rrf":
        return top(reciprocal_rank_fusion(runs, k), hits)
    return top(linear_fusion(runs, weights), hits)


def fuse_files(paths: list[Path], output: Path, method: str = "rrf", k: float = 60,
               weights: list[float] | None = None, hits: int = 1000, tag: str | None = None,
               overwrite: bool = False, say=outputs.say_stderr) -> int | None:
    """Fuse run files into ``output`` (TREC format); returns the number of queries (None: kept).

    As with search, an existing output is kept when made from the same runs and settings, refused
    without ``--overwrite`` otherwise, and never replaced when splade-pipeline did not write it.
    """
    output = outputs.resolved(output)
    weights = check_options(paths, method, k, weights, hits)
    for path in paths:
        if outputs.absolute(outputs.resolved(path)) == outputs.absolute(output):
            raise PipelineError(f"--output {output} is one of the --runs; give the fused run another name")
    tag = check_run_tag(f"fused-{method}" if tag is None else tag)
    with outputs.locked(output, "fuse"):
        state, made = outputs.file_state(output, "--output")
        inputs = {"runs": [outputs.file_sha256(Path(p)) if Path(p).is_file() else str(p) for p in paths],
                  "method": method, "k": float(k) if method == "rrf" else None, "weights": weights, "hits": hits,
                  "tag": tag}
        if state == "ours" and not overwrite:
            diff = outputs.differences(made.get("inputs", {}), inputs)
            if diff:
                raise ConsistencyError(f"{output} was made from other inputs ({'; '.join(diff)}); "
                                       "use --overwrite to fuse again")
            say(f"{output}: exists, fused from the same runs and settings; nothing to do")
            return None
        results = fuse(paths, method, k, weights, hits)
        outputs.writable_parent(output, "--output")
        with outputs.claimed(output, "fused run", inputs):
            write_run(output, results, "trec", tag)
    return len(results)
