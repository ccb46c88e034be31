"""The evaluate stage: trec_eval's measures with trec_eval's semantics, in pure Python.

Semantics followed (checked against trec_eval 9.0.4, the binary inside Anserini's jar):
* scores are 32-bit floats (trec_eval stores ``atof`` in a ``float``): scores equal in float32 are
  tied, e.g. SPLADE's integer scores of 10^4-10^6 minus a 1e-6 tie offset, or integers above 2^24;
* a run is re-sorted by score descending, ties by document id descending (``strcmp``); the rank
  column is ignored;
* only queries with judgments are scored; with ``-c`` (the default here, as in Pyserini's 2CR and
  BEIR) judged queries missing from the run count as zero;
* binary measures (MAP, recall, precision, reciprocal rank) count ``grade >= level`` as relevant;
  nDCG uses the grades themselves as gains (negative grades as 0) and ignores the level;
* a cut-off such as MRR@10 is trec_eval's ``-M 10 -m recip_rank``.

Which measures and relevance level apply is a preset (``beir``, ``msmarco``, ``dl``), chosen by
the user or, with ``auto``, derived from the qrels' content (never from the file's name) and
always reported.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.errors import InputError, PipelineError
from pipeline.readers import read_qrels, read_run
from pipeline.trec_order import trec_eval_order

PRESETS: dict[str, tuple[list[str], int]] = {  # measures, relevance level
    "msmarco": (["MRR@10", "R@1000"], 1),
    "beir": (["nDCG@10", "R@100"], 1),
    "dl": (["nDCG@10", "MAP", "R@1000"], 2),
}


@dataclass(frozen=True)
class Measure:
    """One measure: its display name and a function of (ranked grades, judged grades, level)."""

    name: str
    trec_name: str
    compute: Callable[[list[int], list[int], int], float]


def _relevant_count(judged: list[int], level: int) -> int:
    return sum(1 for grade in judged if grade >= level)


def _precision(k: int):
    def compute(ranked, judged, level):
        return sum(1 for grade in ranked[:k] if grade >= level) / k
    return compute


def _recall(k: int | None):
    def compute(ranked, judged, level):
        relevant = _relevant_count(judged, level)
        top = ranked if k is None else ranked[:k]
        return sum(1 for grade in top if grade >= level) / relevant if relevant else 0.0
    return compute


def _average_precision(k: int | None):
    def compute(ranked, judged, level):
        relevant = _relevant_count(judged, level)
        found, total = 0, 0.0
        for rank, grade in enumerate(ranked if k is None else ranked[:k], start=1):
            if grade >= level:
                found += 1
                total += found / rank
        return total / relevant if relevant else 0.0
    return compute


def _reciprocal_rank(k: int | None):
    def compute(ranked, judged, level):
        for rank, grade in enumerate(ranked if k is None else ranked[:k], start=1):
            if grade >= level:
                return 1.0 / rank
        return 0.0
    return compute


def _dcg(grades: list[int]) -> float:
    return sum(grade / math.log2(rank + 1) for rank, grade in enumerate(grades, start=1) if grade > 0)


def _ndcg(k: int | None):
    def compute(ranked, judged, level):
        ideal = _dcg(sorted(judged, reverse=True)[:k])
        return _dcg(ranked if k is None else ranked[:k]) / ideal if ideal > 0 else 0.0
    return compute


_PATTERNS: list[tuple[str, str, Callable]] = [
    # (regex over the lower-cased name, display template, factory)
    (r"(?:ndcg_cut\.|ndcg@)(\d+)", "nDCG@{}", _ndcg),
    (r"ndcg", "nDCG", _ndcg),
    (r"(?:recall\.|recall@|r@)(\d+)", "R@{}", _recall),
    (r"recall", "R", _recall),
    (r"(?:p\.|p@)(\d+)", "P@{}", _precision),
    (r"(?:map_cut\.|map@)(\d+)", "MAP@{}", _average_precision),
    (r"map", "MAP", _average_precision),
    (r"(?:mrr@|recip_rank@|rr@)(\d+)", "MRR@{}", _reciprocal_rank),
    (r"(?:mrr|recip_rank|rr)", "MRR", _reciprocal_rank),
]
_TREC_NAMES = {"nDCG@{}": "ndcg_cut.{}", "nDCG": "ndcg", "R@{}": "recall.{}", "R": "recall",
               "P@{}": "P.{}", "MAP@{}": "map_cut.{}", "MAP": "map", "MRR@{}": "-M {} recip_rank",
               "MRR": "recip_rank"}


def parse_measure(text: str) -> Measure:
    """``nDCG@10``, ``ndcg_cut.10``, ``R@1000``, ``recall.100``, ``MRR@10``, ``map``, ``P@30``, ..."""
    lowered = text.strip().lower()
    for pattern, template, factory in _PATTERNS:
        match = re.fullmatch(pattern, lowered)
        if match:
            k = int(match.group(1)) if match.groups() else None
            if k is not None and k <= 0:
                break
            name = template.format(k) if k is not None else template
            return Measure(name, _TREC_NAMES[template].format(k), factory(k))
    raise InputError(text, "unknown measure; use e.g. nDCG@10, R@100, R@1000, MRR@10, MAP, P@30 "
                           "(or trec_eval names ndcg_cut.10, recall.100, map, P.30)")


PRESET_CHOICES = ("auto", *PRESETS)
DL_GRADES = {0, 1, 2, 3}
DL_MIN_JUDGMENTS_PER_QUERY = 100  # TREC DL pools: ~210 per query; BEIR sets: 1-40 (TREC-COVID grades 0-2)


def derive_preset(qrels: dict[str, dict[str, int]]) -> tuple[str, str]:
    """``dl`` for TREC-DL-shaped judgments (grades 0-3, deep pools), else ``beir``; with the reason.

    MS MARCO dev qrels (one grade-1 judgment per query) look like most BEIR sets, so ``msmarco``
    is only ever chosen explicitly.
    """
    grades = {grade for judged in qrels.values() for grade in judged.values()}
    rows = sum(len(judged) for judged in qrels.values())
    per_query = rows / max(len(qrels), 1)
    shape = f"grades {sorted(grades)}, {per_query:.1f} judgments per query"
    if grades == DL_GRADES and per_query >= DL_MIN_JUDGMENTS_PER_QUERY:
        return "dl", f"{shape}, as TREC DL"
    return "beir", f"{shape}, not TREC DL's graded 0-3 pools"


def check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise PipelineError(f"--level must be an integer of at least 1 (the lowest grade counted relevant), "
                            f"got {level!r}")
    return level


def ranked_grades(hits: dict[str, float], judged: dict[str, int]) -> list[int]:
    """Grades in trec_eval's order (``pipeline.trec_order``); unjudged documents grade 0."""
    return [judged.get(docid, 0) for docid, _ in trec_eval_order(hits.items())]


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], measures: list[Measure],
             level: int = 1, complete: bool = True) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query values; ``complete`` is trec_eval's ``-c``."""
    check_level(level)
    queries = sorted(qrels) if complete else sorted(q for q in run if q in qrels)
    per_query: dict[str, dict[str, float]] = {}
    for qid in queries:
        judged = qrels[qid]
        ranked = ranked_grades(run.get(qid, {}), judged)
        grades = list(judged.values())
        per_query[qid] = {m.name: m.compute(ranked, grades, level) for m in measures}
    means = {m.name: (sum(v[m.name] for v in per_query.values()) / len(per_query) if per_query else 0.0)
             for m in measures}
    return means, per_query


def evaluate_files(run_path: Path, qrels_path: Path, metrics: list[str] | None = None,
                   level: int | None = None, complete: bool = True,
                   warn: Callable[[str], object] = lambda text: print(text, file=sys.stderr),
                   preset: str = "auto") -> dict[str, object]:
    """Evaluate a run file against a qrels file; the result is what ``--json`` prints.

    ``preset`` (``auto``, ``beir``, ``msmarco``, ``dl``) gives the default measures and level;
    ``metrics`` and ``level`` override them. The preset that applied is reported through ``warn``.
    """
    if preset not in PRESET_CHOICES:
        raise PipelineError(f"--preset must be one of {', '.join(PRESET_CHOICES)}, got {preset!r}")
    if level is not None:
        check_level(level)
    run, qrels = read_run(run_path), read_qrels(qrels_path)
    if preset == "auto":
        preset, reason = derive_preset(qrels)
        reason = f"derived from the qrels: {reason}; --preset beir|msmarco|dl chooses"
    else:
        reason = "chosen"
    names, preset_level = PRESETS[preset]
    measures = [parse_measure(m) for m in (metrics or names)]
    level = preset_level if level is None else level
    shared = set(run) & set(qrels)
    if not shared:
        raise InputError(run_path, f"none of its {len(run)} query ids appears in the qrels {qrels_path} "
                                   f"(run ids like {sorted(run)[:3]}, qrels ids like {sorted(qrels)[:3]})")
    warn(f"preset {preset} ({' '.join(names)} at level {preset_level}; {reason}); "
         f"measuring {' '.join(m.name for m in measures)} at level {level}")
    if len(shared) < len(run):
        warn(f"note: {len(run) - len(shared)} of {len(run)} run queries have no judgments and are not scored")
    if complete and len(shared) < len(qrels):
        warn(f"note: {len(qrels) - len(shared)} judged queries are missing from the run and score 0 (trec_eval -c)")
    means, per_query = evaluate(run, qrels, measures, level, complete)
    return {"run": str(run_path), "qrels": str(qrels_path), "preset": preset, "preset_reason": reason,
            "relevance_level": level, "queries": len(per_query), "metrics": means,
            "trec_eval": {m.name: f"trec_eval {'-c ' if complete else ''}-l {level} -m {m.trec_name}"
                          for m in measures},
            "per_query": per_query}
