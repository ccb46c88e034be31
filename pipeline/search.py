"""The search stage: SPLADE-encoded queries against a Lucene impact index, written as a run file.

Queries are encoded with the index's own encoder, pooling, scale and maximum length (recorded by the
index stage); anything else is refused unless ``--force``. Anserini's ``SimpleImpactSearcher``
scores ``sum(query weight x document impact)`` over the query's terms, in Java threads.

Scores are integers: integer query weights times integer impacts. Lucene returns float32 scores,
so a score is the exact integer dot product while it stays below 2^24 = 16,777,216; above that it
is rounded to a float32 (a multiple of 2, 4, ...; tested), so documents whose dot products differ
by less than that spacing tie, and the rounding may depend on the order Lucene adds the terms.
SPLADE scores are 10^4 to 10^6 (Anserini's SPLADE++ ED runs on TREC DL top out at 163,577, with
cached query weights up to about 3,000) and stay well below; the counters report any query whose
scores reach 2^24. Anserini's tie adjuster lowers tied scores by 1e-6 per position in float32,
which vanishes at these sizes or is removed by rounding.

Hits are ordered as trec_eval orders them: score (as float32) descending, then document id
descending. The run file then lists hits in the order trec_eval evaluates them, with exact integer
scores and nothing to keep apart by tiny offsets (a 1e-6 offset vanishes in float32 at 10^4-10^6).
Lucene picks which tied documents make the cut-off by internal document number, which depends on
indexing order and threads; to make run files byte-identical across rebuilds, a query is searched
deeper while ties straddle the cut-off, up to ``hits + TIE_DEPTH_LIMIT`` hits; a tie group larger
than that is broken among the fetched hits and counted (``ties_capped``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Collection, Iterable

from pipeline import jvm
from pipeline.collection import write_atomic
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.index import load_record

Hit = tuple[str, float]
FORMATS = ("trec", "msmarco")
EXTRA_DEPTH = 16  # hits fetched beyond the cut-off to see whether ties straddle it
TIE_DEPTH_LIMIT = 10_000  # at most this many hits beyond the cut-off are fetched to settle ties
FLOAT32_EXACT = 2 ** 24  # integers up to here are exact float32 values


def java_hits(found) -> dict[str, list[Hit]]:
    """Anserini's ``Map<String, ScoredDoc[]>`` as Python lists of (docid, score)."""
    return {entry.getKey(): [(hit.docid, float(hit.score)) for hit in entry.getValue()]
            for entry in found.entrySet().toArray()}


def java_list(values: Iterable[Any]):
    items = jvm.autoclass("java.util.ArrayList")()
    for value in values:
        items.add(value)
    return items


def require_index(index: Path) -> Path:
    """Fail early, before loading any model, when ``index`` is not a Lucene index."""
    index = Path(index)
    if not index.is_dir() or not any(index.glob("segments_*")):
        raise InputError(index, "not a Lucene index (no segments file); build it with the index stage")
    return index


class ImpactSearcher:
    """Anserini's SimpleImpactSearcher over ``index``, reached through pyjnius."""

    def __init__(self, index: Path):
        index = require_index(index)
        self._searcher = jvm.autoclass("io.anserini.search.SimpleImpactSearcher")(str(index))
        self._map = jvm.autoclass("java.util.HashMap")
        self._int = jvm.autoclass("java.lang.Integer")
        self.documents = int(self._searcher.get_total_num_docs())
        self.counters: dict[str, Any] = {}

    def _query(self, terms: dict[str, int]):
        query = self._map()
        for token, weight in terms.items():
            query.put(token, self._int(int(weight)))
        return query

    def _batch(self, queries: dict[str, dict[str, int]], depth: int, threads: int) -> dict[str, list[Hit]]:
        qids, jqueries = java_list(queries), java_list(self._query(terms) for terms in queries.values())
        found = self._searcher.batch_search(jqueries, qids, depth, threads)
        return {qid: [(docid, float(round(score))) for docid, score in hits]
                for qid, hits in java_hits(found).items()}

    def search(self, queries: dict[str, dict[str, int]], hits: int, threads: int = 1,
               remove_query: bool | Collection[str] = False) -> dict[str, list[Hit]]:
        """Top ``hits`` per query in trec_eval's order (score, then document id, descending).

        ``remove_query``: ``True`` drops each query's own id from its hits (BEIR), a collection of
        query ids does so only for those queries. ``self.counters`` says what happened: self hits
        removed, queries whose tie at the cut-off outgrew the depth limit, queries with scores that
        reached 2^24 (no longer exact in float32).
        """
        dropping = self_hit_queries(remove_query, queries)
        need = {qid: hits + (qid in dropping) for qid in queries}
        limit = min(hits + 1 + TIE_DEPTH_LIMIT, max(self.documents, 1))
        depth = min(hits + 1 + EXTRA_DEPTH, limit)
        searchable = {qid: terms for qid, terms in queries.items() if terms}
        results = self._batch(searchable, depth, threads) if searchable else {}
        capped: set[str] = set()
        while True:
            # A query is settled when it returned fewer hits than asked, or its last kept score beats
            # the deepest fetched one: no unseen document can tie with what we keep.
            unsettled = {qid for qid, found in results.items()
                         if len(found) >= depth and depth < self.documents
                         and found[min(need[qid], len(found)) - 1][1] == found[-1][1]}
            if unsettled and depth >= limit:
                capped = unsettled
                break
            if not unsettled:
                break
            depth = min(depth * 2, limit)
            results.update(self._batch({qid: searchable[qid] for qid in unsettled}, depth, threads))
        ranked, removed = {}, 0
        for qid in queries:
            found = trec_eval_order(results.get(qid, []))
            if qid in dropping:
                kept = [hit for hit in found if hit[0] != qid]
                removed += len(kept) < len(found)
                found = kept
            ranked[qid] = found[:hits]
        self.counters = {"self_hits_removed": removed, "ties_capped": len(capped),
                         "ties_capped_queries": sorted(capped)[:10],
                         "scores_beyond_2^24": sum(1 for found in results.values()
                                                   if found and found[0][1] >= FLOAT32_EXACT)}
        return ranked

    def raw(self, docid: str) -> str | None:
        """The stored JSON of a document (indexes built with --store-raw)."""
        return self._searcher.doc_raw(docid)

    def close(self) -> None:
        self._searcher.close()


def self_hit_queries(remove_query: bool | Collection[str], queries: Iterable[str]) -> set[str]:
    """The queries whose own id is dropped from their hits."""
    if isinstance(remove_query, bool):
        return set(queries) if remove_query else set()
    return set(remove_query)


def trec_eval_order(hits: Iterable[Hit]) -> list[Hit]:
    """Score (as float32, as trec_eval reads it) descending, then document id descending."""
    import numpy as np

    hits = list(hits)
    scores = np.asarray([score for _, score in hits], dtype=np.float64).astype(np.float32).tolist()
    order = sorted(range(len(hits)), key=lambda i: (scores[i], hits[i][0]), reverse=True)
    return [hits[i] for i in order]


def format_run(results: dict[str, list[Hit]], fmt: str = "trec", tag: str = "splade") -> bytes:
    """TREC ``qid Q0 docid rank score tag`` or MS MARCO ``qid<TAB>docid<TAB>rank`` lines.

    Hits are written in trec_eval's order with their scores unchanged, so trec_eval (which reads
    scores as float32 and breaks ties by document id descending) evaluates the file's order.
    """
    lines = []
    for qid, hits in results.items():
        for rank, (docid, score) in enumerate(trec_eval_order(hits), start=1):
            if fmt == "msmarco":
                lines.append(f"{qid}\t{docid}\t{rank}\n")
            else:
                lines.append(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    return "".join(lines).encode()


def check_settings(record: dict[str, Any] | None, wanted: dict[str, Any], force: bool, index: Path) -> None:
    """Refuse a query encoder that differs from the index's (encoder, pooling, scale, max length)."""
    if record is None or "encoder" not in record:
        return
    recorded = {"encoder": record["encoder"]["fingerprint"], "pooling": record["pooling"],
                "scale": record["scale"], "max_length": record["max_length"]}
    diff = [f"{name}: index {recorded[name]!r}, query {value!r}" for name, value in wanted.items()
            if value is not None and recorded[name] != value]
    if diff and not force:
        if "encoder" in wanted and wanted["encoder"] != recorded["encoder"]:
            diff[0] = (f"encoder: index built with {record['encoder']['name']} ({recorded['encoder']}), "
                       f"query encoder {wanted['encoder']}")
        raise ConsistencyError(f"{index} was built with other settings ({'; '.join(diff)}); "
                               "use --force to search anyway")


def encode_queries(encoder, topics: dict[str, str], scale: float, batch_size: int,
                   progress: bool = True) -> dict[str, dict[str, int]]:
    """Quantised ``{token: int}`` per query, in topic order."""
    from tqdm import tqdm

    with tqdm(total=len(topics), unit="q", desc="encode queries", disable=not progress,
              file=sys.stderr) as bar:
        vectors = encoder.encode(list(topics.values()), batch_size, on_batch=bar.update)
    return {qid: encoder.to_terms(vector, scale) for qid, vector in zip(topics, vectors)}


def write_run(path: Path, results: dict[str, list[Hit]], fmt: str, tag: str) -> None:
    if fmt not in FORMATS:
        raise PipelineError(f"unknown run format {fmt!r}; use one of {', '.join(FORMATS)}")
    write_atomic(Path(path), format_run(results, fmt, tag))


def run_search(index: Path, queries: dict[str, dict[str, int]], output: Path, hits: int = 1000,
               threads: int = 1, remove_query: bool | Collection[str] = False, fmt: str = "trec",
               tag: str = "splade",
               ) -> dict[str, Any]:
    """Search and write the run; returns counters (every query accounted for)."""
    searcher = ImpactSearcher(index)
    try:
        results = searcher.search(queries, hits, threads, remove_query)
    finally:
        searcher.close()
    write_run(output, results, fmt, tag)
    return {"queries": len(queries), "without_terms": sum(1 for t in queries.values() if not t),
            "without_hits": sum(1 for r in results.values() if not r),
            "hits": sum(len(r) for r in results.values()), **searcher.counters, "output": str(output)}


def default_run_name(collection: str, model: str, topics: str) -> str:
    """Anserini's naming: ``run.<collection>.<model>.<topics>.txt``."""
    clean = lambda text: "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")
    return f"run.{clean(collection)}.{clean(model)}.{clean(topics)}.txt"


def restrict(queries: dict[str, dict[str, int]], topics: Iterable[str], path: Path) -> dict[str, dict[str, int]]:
    """Pre-encoded queries limited to (and required for) the given topic ids."""
    topics = list(topics)
    missing = [qid for qid in topics if qid not in queries]
    if missing:
        raise InputError(path, f"{len(missing)} topics have no encoding (e.g. {missing[:3]})")
    return {qid: queries[qid] for qid in topics}


def index_record(index: Path) -> dict[str, Any] | None:
    return load_record(index) if Path(index).is_dir() else None

