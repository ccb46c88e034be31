"""Two-step search: candidates from the pruned first-stage index, then exact rescoring.

Each query is pruned to its ``query_terms`` largest weights and searched in the first-stage index
(documents pruned to their largest impacts, ``pipeline.first_stage``); the first ``candidates``
hits, and any further hit tied with the last of them (so the candidates do not depend on how Lucene
numbered the documents), are rescored with the full query against their full vectors from the
forward store. Final
scores are the exact integer dot products the exhaustive search computes, and hits are cut and
ordered by the same rule (``pipeline.trec_order``: score as float32, then document
id, descending), so a document found by both searches has the same score and the same place among
the documents both found. What two-step search can get wrong is only *which* documents it finds.

For that, each query carries a bound (cheap, from per-term maxima recorded at build time): a
document the first stage did not return scored at most ``threshold`` there (the last candidate's
first-stage score, or 0 when fewer than ``candidates`` matched), and its full score adds at most
``max_pruned[t] * q_t`` for each first-stage query term (a posting pruned from the document) and
``max_impact[t] * q_t`` for each pruned query term. When that bound is below the k-th exact score
no document was missed and the query's top k is provably the exhaustive one; otherwise the query
is counted as one that *could* have missed a document (it usually did not: the bound is loose).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np

from pipeline.errors import ConsistencyError, PipelineError
from pipeline.first_stage import Companion, open_companion
from pipeline.forward import ForwardStore, id_text, top_terms
from pipeline.search import FLOAT32_EXACT, Hit, ImpactSearcher, self_hit_queries, write_run
from pipeline.trec_order import trec_eval_positions, within_cut
from pipeline.collection import write_json

# Defaults chosen by quality from bench/results/two_step.json (splade-tiny; latency: bench/scale.py and
# bench/two_step.py --latency):
# with 128 postings per document (first_stage.DEFAULT_PRUNE_DOCS), 20 query terms and
# k' = max(2 x hits, 100), nDCG@10 stays within 0.002 of exhaustive search on SciFact, CACM, Cranfield
# and the TREC DL pools. 64 postings hold it on the DL pools (MS MARCO passages, 131 postings each)
# but not on SciFact (283 each); 10 query terms did not hold it on CACM or SciFact. ArguAna's long
# queries depart upwards (+0.008 nDCG@10 with these defaults).
DEFAULT_QUERY_TERMS = 20
DEFAULT_MIN_CANDIDATES = 100  # k' is at least this, and at least the hits asked for
DEFAULT_CANDIDATE_FACTOR = 2  # k' = max(factor x hits, minimum)
SIDE_SUFFIX = ".two-step.json"


@dataclass(frozen=True)
class TwoStepOptions:
    """``candidates``: k', the first-stage depth (None: the default rule); ``query_terms``: the query's
    largest weights kept for the first stage (None: all)."""

    candidates: int | None = None
    query_terms: int | None = DEFAULT_QUERY_TERMS

    def check(self, hits: int) -> None:
        for name, value in (("--candidates", self.candidates), ("--query-terms", self.query_terms)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise PipelineError(f"{name} must be an integer of at least 1, got {value!r}")
        if self.candidates is not None and self.candidates < hits:
            raise PipelineError(f"--candidates {self.candidates} is fewer than --hits {hits}: two-step search "
                                "rescores the candidates only, so it needs at least as many")

    def depth(self, hits: int) -> int:
        """k' for ``hits``: as given, else ``max(factor x hits, minimum)``."""
        if self.candidates is not None:
            return self.candidates
        return max(DEFAULT_CANDIDATE_FACTOR * hits, DEFAULT_MIN_CANDIDATES)

    def describe(self, hits: int) -> dict[str, Any]:
        """What the run's record keeps: the settings in force, defaults resolved."""
        return {**asdict(self), "candidates": self.depth(hits)}


class TwoStepSearcher:
    """The first-stage index and the forward store of one index, opened once (thread-safe to share:
    Lucene's searcher is, and the store is read-only memory maps)."""

    def __init__(self, index: Path, check: bool = True):
        self.companion: Companion = open_companion(index)
        self.first = ImpactSearcher(self.companion.first_stage, first_stage=True)
        self.store = ForwardStore(self.companion.forward, check=check)
        self.max_pruned = self.companion.max_pruned().astype(np.int64)
        self.max_impact = np.asarray(self.store.max_impact, dtype=np.int64)
        self.lucene_rows = self.companion.lucene_rows()
        self.documents = self.store.documents

    def search(self, queries: dict[str, dict[str, int]], hits: int, threads: int = 1,
               remove_query: bool | Collection[str] = False, options: TwoStepOptions = TwoStepOptions()
               ) -> tuple[dict[str, list[Hit]], dict[str, Any], dict[str, dict[str, Any]]]:
        """Top ``hits`` per query (trec_eval's order), counters, and per query what the first stage
        did (candidates rescored, the bound, whether a document could have been missed)."""
        options.check(hits)
        depth = options.depth(hits)
        dropping = self_hit_queries(remove_query, queries)
        items = list(queries.items())
        work = lambda chunk: [self._one(qid, terms, hits, depth, options.query_terms, qid in dropping)
                              for qid, terms in chunk]
        if threads <= 1 or len(items) <= 1:
            done = work(items)
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="two-step") as pool:
                done = [row for part in pool.map(work, [items[lo::threads] for lo in range(threads)])
                        for row in part]
        by_id = {row[0]: row for row in done}
        ranked = {qid: by_id[qid][1] for qid in queries}
        per_query = {qid: by_id[qid][2] for qid in queries}
        missable = sorted(qid for qid, info in per_query.items() if info["could_miss"])
        counts = [info["candidates"] for info in per_query.values()]
        counters = {"self_hits_removed": sum(info.get("self_hit_removed", False) for info in per_query.values()),
                    "candidates_mean": round(float(np.mean(counts)), 1) if counts else 0.0,
                    "candidates_max": max(counts, default=0),
                    "could_miss": len(missable), "could_miss_queries": missable[:10],
                    "scores_beyond_2^24": sum(1 for found in ranked.values() if found and found[0][1] >= FLOAT32_EXACT)}
        return ranked, counters, per_query

    def _one(self, qid: str, terms: dict[str, int], hits: int, depth: int, query_terms: int | None,
             drop_self: bool) -> tuple[str, list[Hit], dict[str, Any]]:
        kept = dict(top_terms(terms, query_terms))
        numbers, first_scores = self.first.top_numbers(kept, depth)
        rows = self._rows_of(numbers)
        exact = self.store.scores(terms, rows)
        info: dict[str, Any] = {"candidates": len(rows), "first_stage_terms": len(kept)}
        # only the candidates that can reach the cut-off (ties included) are ordered, by their stored
        # id bytes, and only those kept have their ids decoded
        reach = within_cut(exact, hits + drop_self)
        near_rows, near_scores = rows[reach], exact[reach]
        ids = self.store.id_bytes(near_rows)
        order = trec_eval_positions(ids, near_scores)
        if drop_self:  # the query's own document, by row (the store's id look-up, -1 when it has none)
            own = near_rows[order] == self.store.find([qid])[0]
            info["self_hit_removed"] = bool(own.any())
            order = order[~own]
        top = order[:hits]
        ranked = list(zip(map(id_text, ids[top]), near_scores[top].astype(np.float64).tolist()))
        threshold = int(first_scores[-1]) if len(first_scores) >= depth else 0
        bound = threshold + self._pruned_mass(terms, kept)
        kth = int(ranked[hits - 1][1]) if len(ranked) >= hits else 0
        info.update(threshold=threshold, bound=bound, kth_score=kth,
                    could_miss=bool(bound >= kth if len(ranked) >= hits else bound > 0))
        return qid, ranked, info

    def _rows_of(self, numbers: np.ndarray) -> np.ndarray:
        """Forward-store rows of first-stage hits, by Lucene document number."""
        rows = self.lucene_rows[numbers]
        if (rows < 0).any():
            raise ConsistencyError(f"{self.companion.folder}: a first-stage hit has no row in the forward store; "
                                   "rebuild the index with --prune-docs N --overwrite")
        return rows

    def _pruned_mass(self, terms: dict[str, int], kept: dict[str, int]) -> int:
        """The most a document's full score can exceed its first-stage score: pruned postings of kept
        query terms at their largest pruned impact, pruned query terms at their largest impact."""
        ids = self.store.term_ids
        mass = 0
        for term, weight in terms.items():
            term_id = ids.get(term)
            if term_id is not None:
                mass += weight * int(self.max_pruned[term_id] if term in kept else self.max_impact[term_id])
        return mass

    def close(self) -> None:
        self.first.close()


def side_file(output: Path) -> Path:
    """Where a two-step run's per-query record goes: beside the run, named after it."""
    return Path(output).with_name(Path(output).name + SIDE_SUFFIX)


def run_two_step(index: Path, queries: dict[str, dict[str, int]], output: Path, hits: int = 1000,
                 threads: int = 1, remove_query: bool | Collection[str] = False, fmt: str = "trec",
                 tag: str = "splade", options: TwoStepOptions = TwoStepOptions()) -> dict[str, Any]:
    """Search two-step, write the run and its per-query side file; returns counters."""
    options.check(hits)
    searcher = TwoStepSearcher(index)
    try:
        results, counters, per_query = searcher.search(queries, hits, threads, remove_query, options)
        companion = searcher.companion.record
    finally:
        searcher.close()
    write_run(output, results, fmt, tag)
    write_json(side_file(output), {"settings": options.describe(hits), "pruning": companion["pruning"],
                                   "counters": counters, "queries": per_query})
    return {"queries": len(queries), "without_terms": sum(1 for t in queries.values() if not t),
            "without_hits": sum(1 for r in results.values() if not r),
            "hits": sum(len(r) for r in results.values()), **counters, "output": str(output),
            "two_step": options.describe(hits), "per_query": str(side_file(output))}

