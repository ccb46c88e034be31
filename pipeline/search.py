"""The search stage: SPLADE-encoded queries against a Lucene impact index, written as a run file.

Queries are encoded with the index's own encoder, pooling, scale and maximum length (recorded by the
index stage); anything else is refused unless ``--force``. Anserini's ``SimpleImpactSearcher``
scores ``sum(query weight x document impact)`` over the query's terms, in Java threads.

Scores are integers: integer query weights times integer impacts. Anserini's tie adjuster lowers
tied scores by 1e-6 per position in float32; rounding restores them exactly. Lucene picks which
tied documents make the cut-off by internal document number, which depends on indexing order and
threads; to make run files byte-identical across rebuilds, a query is searched deeper whenever
ties straddle the cut-off, and hits are ordered by score, then document id. As Anserini does,
tied scores are then written lowered by 1e-6 per position, so trec_eval keeps the file's order.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

from pipeline import jvm
from pipeline.collection import write_atomic
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.index import load_record

Hit = tuple[str, float]
FORMATS = ("trec", "msmarco")
EXTRA_DEPTH = 16  # hits fetched beyond the cut-off to see whether ties straddle it


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
               remove_query: bool = False) -> dict[str, list[Hit]]:
        """Top ``hits`` per query, ordered by score then document id, deterministic under ties."""
        need = hits + (1 if remove_query else 0)
        depth = min(need + EXTRA_DEPTH, max(self.documents, 1))
        searchable = {qid: terms for qid, terms in queries.items() if terms}
        results = self._batch(searchable, depth, threads) if searchable else {}
        while True:
            # A query is settled when it returned fewer hits than asked, or its last kept score beats
            # the deepest fetched one: no unseen document can tie with what we keep.
            unsettled = {qid for qid, found in results.items()
                         if len(found) >= depth and depth < self.documents
                         and found[min(need, len(found)) - 1][1] == found[-1][1]}
            if not unsettled:
                break
            depth = min(depth * 2, self.documents)
            results.update(self._batch({qid: searchable[qid] for qid in unsettled}, depth, threads))
        ranked = {}
        for qid in queries:
            found = sorted(results.get(qid, []), key=lambda hit: (-hit[1], hit[0]))
            if remove_query:
                found = [hit for hit in found if hit[0] != qid]
            ranked[qid] = found[:hits]
        return ranked

    def raw(self, docid: str) -> str | None:
        """The stored JSON of a document (indexes built with --store-raw)."""
        return self._searcher.doc_raw(docid)

    def close(self) -> None:
        self._searcher.close()


TIE_STEP = 1e-6


def format_run(results: dict[str, list[Hit]], fmt: str = "trec", tag: str = "splade") -> bytes:
    """TREC ``qid Q0 docid rank score tag`` or MS MARCO ``qid<TAB>docid<TAB>rank`` lines."""
    lines = []
    for qid, hits in results.items():
        previous, tied = None, 0
        for rank, (docid, score) in enumerate(hits, start=1):
            if fmt == "msmarco":
                lines.append(f"{qid}\t{docid}\t{rank}\n")
                continue
            tied = tied + 1 if score == previous else 0
            previous = score
            lines.append(f"{qid} Q0 {docid} {rank} {score - tied * TIE_STEP:.6f} {tag}\n")
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
               threads: int = 1, remove_query: bool = False, fmt: str = "trec", tag: str = "splade",
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
            "hits": sum(len(r) for r in results.values()), "output": str(output)}


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

