"""What the service serves, without HTTP: warm indexes, their query encoders, search and explanation.

Each index is opened once with its own query encoder: the model, pooling, scale, maximum length
and backend recorded in the index (``splade-pipeline.json``), chosen as the search stage chooses
them. Indexes built with the same model and settings share one loaded model.

Sharing between request threads: one in-process JVM serves every thread (fixed heap, serial GC:
``JAVA_OPTIONS``); pyjnius attaches each thread to it on first use, releases the GIL while Java
runs, and the thread leaves the JVM when it ends (``pipeline.search.attached``). One
``ImpactSearcher`` per index is shared by all threads: Lucene's ``IndexSearcher`` is thread-safe
and the searcher keeps no per-search state (pyjnius is not: searches of two indexes take turns and
stored-field and postings reads hold one lock, ``pipeline.jvm``). One torch model per encoder is
shared too: the forward pass keeps no state and torch releases the GIL inside its kernels; a query is encoded alone,
unpadded, exactly as the search stage encodes it. Only tokenisation holds a lock, because a Hugging
Face fast tokenizer's settings are mutated per call and must not be borrowed by two threads at
once; it takes tens of microseconds.
"""

from __future__ import annotations

import ctypes
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson

from pipeline import blas, encoders, jvm, texts
from pipeline.errors import PipelineError
from pipeline.explain import explain, highlights
from pipeline.first_stage import open_companion
from pipeline.search import Hit, ImpactSearcher, index_record, require_full_index
from pipeline.two_step import TwoStepOptions, TwoStepSearcher

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SETTINGS = ("pooling", "scale", "max_length", "postings", "counters")
# The service's JVM: a fixed, pre-touched heap (as Elasticsearch runs), so its resident memory is
# taken at start and stays flat; the serial collector, so no pool of GC threads competes with the
# request threads and the other worker processes for a few cores (the live set is tiny: indexes
# are memory-mapped, outside the heap).
JAVA_OPTIONS = ("-Xms512m", "-Xmx512m", "-XX:+AlwaysPreTouch", "-XX:+UseSerialGC")
M_ARENA_MAX = -8  # glibc's mallopt parameter
# Document numbers of recent hits kept per index (``ImpactSearcher(remember_hits=)``): reading a
# hit's stored document then skips the id look-up; about 10 MB at most.
REMEMBERED_HITS = 65_536


def limit_malloc_arenas(count: int = 2) -> None:
    """glibc gives threads their own malloc arenas (up to 8 per core), and a server's request threads
    come and go: memory freed in an arena is rarely returned, so resident memory creeps up. A couple
    of arenas keep it flat at no measurable cost here. Does nothing off glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, count)
    except (OSError, AttributeError):
        pass


class WarmSearcher(ImpactSearcher):
    """An ImpactSearcher that also reads document impacts from the postings (for explanations)."""

    def impacts(self, docid: str, terms: Iterable[str]) -> dict[str, int]:
        """The document's impact for each of ``terms``, read from the postings (no stored text needed)."""
        lucene_id = self.lucene_id(docid)
        if lucene_id < 0:
            return {}
        multi_terms = jvm.autoclass("org.apache.lucene.index.MultiTerms")
        bytes_ref = jvm.autoclass("org.apache.lucene.util.BytesRef")
        found = {}
        with jvm.INSTANCE_CALLS:  # postings enumerators are made per call (see pipeline.jvm)
            for term in terms:
                postings = multi_terms.getTermPostingsEnum(self.reader, "contents",
                                                           bytes_ref(term.encode("utf-8")))
                if postings is not None and postings.advance(lucene_id) == lucene_id:
                    found[term] = int(postings.freq())
        return found


@dataclass
class ServedIndex:
    """A warm index: its searcher, its query encoder and what its record says."""

    name: str
    searcher: WarmSearcher
    encoder: encoders.QueryEncoder
    record: dict[str, Any]
    stores_text: bool
    threads: int = 1
    two_step: TwoStepSearcher | None = None  # serve --two-step: pruned first stage, exact rescoring
    texts: texts.TextStore | None = None  # hits' stored documents without Lucene (pipeline.texts)
    documents: int = field(init=False)

    def __post_init__(self) -> None:
        self.documents = self.searcher.documents

    def describe(self) -> dict[str, Any]:
        """Name, size, encoder and settings; no file-system paths."""
        encoder = self.record.get("encoder") or {}
        query = self.record.get("query_encoder") or {}
        return {"name": self.name, "documents": self.documents, "stores_text": self.stores_text,
                "encoder": {key: encoder[key] for key in ("name", "fingerprint", "backend", "precision")
                            if key in encoder} or None,
                "query_encoder": {key: query[key] for key in ("kind", "name", "fingerprint", "backend", "precision")
                                  if key in query} or None,
                "inference_free": self.encoder.inference_free,
                **{key: self.record[key] for key in SETTINGS if key in self.record},
                "two_step": None if self.two_step is None else
                {"pruning": self.two_step.companion.record["pruning"], "query_terms": TwoStepOptions().query_terms,
                 "candidates": f"the larger of hits and {TwoStepOptions().depth(1)}"}}

    def encode(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """Quantised ``{term: weight}`` per text, exactly as the search stage encodes topics."""
        return self.encoder.encode(texts)

    def search(self, queries: dict[str, dict[str, int]], hits: int) -> dict[str, list[Hit]]:
        """Hits per query: one query on the request's thread, a batch over ``threads`` threads; two-step
        with its default settings when the service was started with ``--two-step``."""
        if self.two_step is not None:
            return self.two_step.search(queries, hits, threads=self.threads)[0]
        return self.searcher.search(queries, hits, threads=self.threads)[0]

    def stored(self, docid: str) -> dict[str, Any] | None:
        """The document as stored (parsed JSON, vector included), or None when the index keeps no raw
        documents."""
        return self.stored_many([docid], vectors=True)[0]

    def stored_many(self, docids: Sequence[str], vectors: bool = False) -> list[dict[str, Any] | None]:
        """``stored`` of each document, read together (one page of hits); without ``vectors`` (a page
        that shows text only) from the index's text store where it has one, which holds every field
        but the vector and skips Lucene altogether."""
        if not self.stores_text:
            return [None] * len(docids)
        if self.texts is not None and not vectors:
            raws: Sequence[str | bytes | None] = self.texts.raw_many(docids)
        else:
            raws = self.searcher.raw_many(docids)
        return [None if raw is None else parse_stored(raw) for raw in raws]

    def has(self, docid: str) -> bool:
        return self.searcher.lucene_id(docid) >= 0

    def explain_hit(self, query_terms: dict[str, int], query_tokens: set[str] | None, docid: str,
                    stored: dict[str, Any] | None) -> dict[str, Any]:
        """Per-term contributions of one hit, expansion marks, and where matched terms sit in its text."""
        vector = stored.get("vector") if stored else None
        if isinstance(vector, dict):
            impacts = {term: int(vector[term]) for term in query_terms if term in vector}
        else:
            impacts = self.searcher.impacts(docid, query_terms)
        text = stored.get("contents") if stored else None
        spans = self.encoder.spans(text) if isinstance(text, str) else None
        doc_tokens = {token for token, _, _ in spans} if spans is not None else None
        terms = explain(query_terms, query_tokens, impacts, doc_tokens)
        return {"terms": [{"term": term, "query_weight": query_terms[term], "doc_impact": impacts[term],
                           "contribution": value, "expansion": mark} for term, value, mark in terms],
                "total": sum(value for _, value, _ in terms),
                "highlights": [list(span) for span in highlights(spans, {t for t, _, _ in terms})]
                if spans is not None else None}

    def query_tokens(self, text: str) -> set[str]:
        return {token for token, _, _ in self.encoder.spans(text)}

    def close(self) -> None:
        self.searcher.close()
        if self.two_step is not None:
            self.two_step.close()


def parse_stored(raw: str | bytes) -> dict[str, Any]:
    """A stored document's JSON as a dict; text that is no JSON object comes back as ``{"raw": ...}``.

    orjson first: the stored JSON carries the document's whole vector (a few hundred terms), which
    is parsed only to be dropped, ten times a request. The standard parser takes what orjson
    refuses but JSON admits (lone surrogate escapes, integers beyond 64 bits).
    """
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return {"raw": raw}
    return parsed if isinstance(parsed, dict) else {"raw": parsed}


def index_names(paths: Sequence[str]) -> dict[str, Path]:
    """``PATH`` or ``NAME=PATH`` values to ``{name: path}``; a bare path is named by its folder."""
    named: dict[str, Path] = {}
    for value in paths:
        name, sep, path = value.partition("=")
        if not sep or not NAME.match(name):
            name, path = Path(value.rstrip("/")).name, value
        if not NAME.match(name):
            raise PipelineError(f"--index {value}: name {name!r} must be letters, digits, '.', '_' or '-' "
                                "(use NAME=PATH)")
        if name in named:
            raise PipelineError(f"--index {value}: two indexes named {name!r} (use NAME=PATH)")
        named[name] = Path(path)
    if not named:
        raise PipelineError("serve needs at least one --index")
    return named


def check_indexes(indexes: dict[str, Path], two_step: bool = False) -> None:
    """Fail before anything loads when a path is not a (full) Lucene index, or, for ``two_step``,
    has no two-step companion."""
    for path in indexes.values():
        require_full_index(path)
        if two_step:
            open_companion(path)


def open_indexes(indexes: dict[str, Path], threads: int | None = None,
                 options: encoders.Options = encoders.Options(), force: bool = False, two_step: bool = False
                 ) -> dict[str, ServedIndex]:
    """Start the JVM, open each index (and its two-step companion, for ``two_step``) and load each
    distinct query encoder once.

    Each index's query side is chosen as the search stage chooses it (``encoders.query_spec``;
    ``options`` may name another, refused unless ``force``). An inference-free side loads no model:
    the service then starts no torch at all.
    """
    check_indexes(indexes, two_step)
    limit_malloc_arenas()
    blas.set_threads(1)  # queries project on one BLAS thread (encode_queries); set once, not per request
    jvm.start(options=JAVA_OPTIONS)
    loaded: dict[tuple, encoders.QueryEncoder] = {}
    served: dict[str, ServedIndex] = {}
    try:
        for name, path in indexes.items():
            record = index_record(path) or {}
            spec = encoders.query_spec(record, options)
            encoders.check_index(record, spec, force, path)
            # an idf side weighs by this index's postings: shared only within the index
            key = (spec.fingerprint(), spec.scale, spec.quantisation, str(spec.side.describe()),
                   str(Path(path).resolve()) if spec.fingerprint() == "idf:index" else "")
            if key not in loaded:
                # one torch thread: queries encode exactly as the search stage's (encode_queries), and
                # request threads never change torch's process-wide thread count under each other
                loaded[key] = encoders.load_queries(spec, 1, options.device, path)
            searcher = WarmSearcher(path, remember_hits=REMEMBERED_HITS)
            served[name] = ServedIndex(name, searcher, loaded[key], record, searcher.stores_text(), threads or 1,
                                       TwoStepSearcher(path) if two_step else None, texts.open_store(path, record))
    except BaseException:
        close_indexes(served)
        raise
    return served


def close_indexes(served: dict[str, ServedIndex]) -> None:
    for index in served.values():
        index.close()
    served.clear()


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
