"""The search stage: SPLADE-encoded queries against a Lucene impact index, written as a run file.

Queries are encoded with the index's own query side, pooling, scale and maximum length (recorded by
the index stage; ``pipeline.encoders``); anything else is refused unless ``--force``. Anserini's ``SimpleImpactSearcher``
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

import binascii
import functools
import json
import numbers
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import numpy as np
import orjson

from pipeline import jvm
from pipeline.collection import write_atomic
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.index import PRUNING, load_record
from pipeline.trec_order import trec_eval_order, within_cut
from pipeline.readers import LUCENE_INT_MAX

Hit = tuple[str, float]
FORMATS = ("trec", "msmarco")
EXTRA_DEPTH = 16  # hits fetched beyond the cut-off to see whether ties straddle it
TIE_DEPTH_LIMIT = 10_000  # at most this many hits beyond the cut-off are fetched to settle ties
FLOAT32_EXACT = 2 ** 24  # integers up to here are exact float32 values
JAVA_INT_MAX = LUCENE_INT_MAX  # Anserini takes query weights as Java Integers
RAW_FIELD = "raw"  # Anserini's stored field of each document's JSON (Constants.RAW)


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


def require_full_index(index: Path) -> Path:
    """``require_index``, and refuse a pruned first-stage index: its scores are sums over the postings
    each document kept, not the full dot products, so searching it alone would look exact and not be."""
    index = require_index(index)
    record = load_record(index)
    if record is not None and PRUNING in record:
        rule = record[PRUNING]
        floor = f", none under impact {rule['min_impact']}" if rule.get("min_impact") else ""
        raise ConsistencyError(f"{index} is a pruned first-stage index ({rule['postings_per_doc']} postings per "
                               f"document{floor}); its scores are not the full dot products: search the index it "
                               "belongs to, with --two-step")
    return index


def query_json(terms: dict[str, int]) -> str:
    """The query as JSON for Java, after checking every weight is a positive Java ``int``.

    Impact scores are integer dot products only while weights are integers; a float weight would
    be silently truncated or rounded on the way into Lucene, so it is refused here.
    """
    for term, weight in terms.items():
        if isinstance(weight, bool) or not isinstance(weight, numbers.Integral) or not 0 < weight <= JAVA_INT_MAX:
            raise PipelineError(f"query weight of {term[:40]!r} must be an integer from 1 to {JAVA_INT_MAX:,}, "
                                f"got {weight!r}")
    return json.dumps({term: int(weight) for term, weight in terms.items()})


def top_docs(top_docs_json: str) -> list[dict[str, Any]]:
    """The hits of Lucene's ``TopDocs`` that Jackson wrote as JSON, in Lucene's order; ``doc`` is a
    hit's Lucene document number.

    Sorted by (score, id) (a ``TopFieldDocs``), a hit's first sort value is its score and the second
    its id, a ``BytesRef`` (base64 bytes, offset, length); Lucene is asked for no separate document
    scores there, which it would compute in a second pass over the hits (a fifth of a search's time
    at depth 1,000, measured at 1M documents). Sorted by score alone, ``score`` is the score.
    """
    return orjson.loads(top_docs_json)["scoreDocs"]


def sort_id(hit: dict[str, Any]) -> str:
    """The document id that a hit carries as its id sort value (no stored document is read)."""
    ref = hit["fields"][-1]
    return binascii.a2b_base64(ref["bytes"])[ref["offset"]:ref["offset"] + ref["length"]].decode("utf-8")


def sorted_hits(top_docs_json: str, numbers: DocumentNumbers | None = None) -> list[Hit]:
    """(document id, score) of each hit of ``top_docs`` in Lucene's order, ids from the sort values:
    reading stored documents (Anserini's ``ScoredDocs.fromTopDocs``) costs ~0.1 ms a hit.
    ``numbers`` is told each hit's Lucene document number, which the JSON carries anyway."""
    found = []
    for hit in top_docs(top_docs_json):
        docid = sort_id(hit)
        found.append((docid, float(round(hit["fields"][0]))))
        if numbers is not None:
            numbers.note(docid, hit["doc"])
    return found


class DocumentNumbers:
    """The Lucene document numbers of recent hits, by document id, so that reading a hit's stored
    document skips the id look-up (a search on the id field for each one).

    An opened index never changes, so a number once seen stays right; the memo is emptied when it
    reaches ``capacity`` entries, which bounds its memory (about 150 bytes an entry). Threads share
    it: a dict's single get and set are atomic under the GIL, and a lost entry only costs a look-up.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._numbers: dict[str, int] = {}

    def note(self, docid: str, number: int) -> None:
        if len(self._numbers) >= self.capacity:
            self._numbers = {}
        self._numbers[docid] = number

    def get(self, docid: str) -> int | None:
        return self._numbers.get(docid)


class _Detach:
    """Held in a thread-local slot: when a thread ends, its locals are dropped on that same thread,
    and this leaves the JVM. pyjnius attaches every thread that calls Java and never detaches it, so
    threads that come and go (a server's worker pool) would each leave a Java thread behind."""

    def __del__(self) -> None:
        jvm.start().detach()


_THREAD = threading.local()
# Lucene searches of different open indexes never overlap: pyjnius would bind one's search to the
# other's IndexSearcher (pipeline.jvm); searches of one index still run side by side.
SEARCHERS = jvm.OneInstanceAtATime()


def attached() -> None:
    """Mark the calling thread to leave the JVM when it ends (cheap after the first call). The main
    thread stays: the JVM ends with the process."""
    if getattr(_THREAD, "detach", None) is None and threading.current_thread() is not threading.main_thread():
        _THREAD.detach = _Detach()


def legacy_query(terms: dict[str, int]):
    """The query as the ``java.util.HashMap<String, Float>`` Anserini's own ``search(Map, k)`` takes
    (Lucene 8 indexes), built entry by entry. Not through Jackson's ``ObjectMapper`` by name: once a
    searcher has opened, pyjnius hands that name the typed class below, which has no ``readValue``."""
    query_json(terms)  # the same checks as the main path: positive Java ints only
    autoclass = jvm.autoclass
    with jvm.INSTANCE_CALLS:  # a map made per call (see jvm)
        weights, boxed = autoclass("java.util.HashMap")(), autoclass("java.lang.Float")
        for term, weight in terms.items():
            weights.put(term, boxed(float(weight)))
    return weights


@functools.cache
def _object_mapper_class():
    """Jackson's ObjectMapper with ``readerFor(JavaType)`` named by its signature: pyjnius picks the
    ``readerFor(Class)`` overload for a ``JavaType`` argument and fails. Built on first use, after
    the JVM has started with its options."""
    jnius = jvm.start()

    class ObjectMapper(jnius.JavaClass, metaclass=jnius.MetaJavaClass):
        __javaclass__ = "com/fasterxml/jackson/databind/ObjectMapper"
        getTypeFactory = jnius.JavaMethod("()Lcom/fasterxml/jackson/databind/type/TypeFactory;")
        readerFor = jnius.JavaMethod("(Lcom/fasterxml/jackson/databind/JavaType;)"
                                     "Lcom/fasterxml/jackson/databind/ObjectReader;")
        writeValueAsString = jnius.JavaMethod("(Ljava/lang/Object;)Ljava/lang/String;")

    return ObjectMapper


def cut_settled(returned: int, fetched: int, need: int, documents: int, score: Callable[[int], float]) -> bool:
    """Whether the first ``need`` of ``returned`` hits (asked for the best ``fetched``, best first,
    ``score(i)`` the i-th's score) are final together with every hit tied with the ``need``-th: fewer
    came back than asked, or the whole index was asked, or no more than ``need`` came, or the
    ``need``-th beats the deepest fetched, so no unseen document can tie with it. The one tie rule
    of a cut-off: the search stage deepens until it holds, and so does two-step's first stage."""
    return (returned < fetched or fetched >= documents or returned <= need
            or score(need - 1) > score(returned - 1))


class ImpactSearcher:
    """Anserini's SimpleImpactSearcher over ``index``, reached through pyjnius.

    A query is searched as Anserini's ``SimpleImpactSearcher.search(Map, k)`` searches it (the same
    ``BagOfWordsQueryGenerator`` query, impact similarity and sort: score, then document id), but
    with a handful of calls into Java instead of Anserini's own path, which first spells the query
    out as a string repeating each term weight times (thousands of tokens) and re-analyses it, and
    then reads every hit's stored document to get its id. The query map crosses into Java as one
    JSON string and the hits come back as one (Jackson on both sides); no per-term or per-hit call.
    Everything here is safe to share between threads: Lucene's ``IndexSearcher`` and Jackson's
    reader and writer are thread-safe, and the instance keeps no per-search state. pyjnius is not
    (``pipeline.jvm``): searches of different indexes take turns (``SEARCHERS``), reads of stored
    fields hold ``jvm.INSTANCE_CALLS``.
    """

    def __init__(self, index: Path, first_stage: bool = False, remember_hits: int = 0):
        """``first_stage``: the caller (two-step search) knows ``index`` is pruned and rescores its hits.
        ``remember_hits``: keep the document numbers of up to that many recent hits, for ``raw``
        (a service reads the stored documents of the hits it has just found)."""
        index = require_index(index) if first_stage else require_full_index(index)
        autoclass = jvm.autoclass
        self._searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(index))
        self.documents = int(self._searcher.get_total_num_docs())
        self._lucene = autoclass("org.apache.lucene.search.IndexSearcher")(self._searcher.reader)
        self._lucene.setSimilarity(self._searcher.get_similarity())
        self._generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        sort_field = autoclass("org.apache.lucene.search.SortField")
        # Anserini's BREAK_SCORE_TIES_BY_DOCID: which tied documents make a cut-off is Anserini's choice
        self._sort = autoclass("org.apache.lucene.search.Sort")(
            sort_field.FIELD_SCORE, sort_field("id", autoclass("org.apache.lucene.search.SortField$Type").STRING_VAL))
        mapper = _object_mapper_class()()
        self._writer = mapper
        weights = mapper.getTypeFactory().constructMapType(
            *(autoclass("java.lang.Class").forName(name) for name in ("java.util.HashMap", "java.lang.String",
                                                                      "java.lang.Float")))
        self._weights = mapper.readerFor(weights)  # Map<String, Float>, what the query generator takes
        self._numbers = DocumentNumbers(remember_hits) if remember_hits > 0 else None
        self._legacy = bool(self._searcher.backwardsCompatibilityLucene8)  # Anserini sorts those differently

    def _query(self, terms: dict[str, int]):
        """The Lucene query of ``terms``, as Anserini's ``BagOfWordsQueryGenerator`` builds it, on the
        calling thread (attached to the JVM)."""
        attached()
        return self._generator.buildQuery("contents", self._weights.readValue(query_json(terms)))

    def _top_docs(self, terms: dict[str, int], depth: int, by_id: bool = True) -> str:
        """Lucene's top ``depth`` hits of one query as JSON (``top_docs``): sorted by (score, id), or
        with ``by_id`` false by score alone (ties by document number)."""
        query = self._query(terms)
        with SEARCHERS.on(self):
            found = self._lucene.search(query, depth, self._sort, False) if by_id else self._lucene.search(query, depth)
        return self._writer.writeValueAsString(found)

    def _search_one(self, terms: dict[str, int], depth: int) -> list[Hit]:
        """Top ``depth`` hits of one query, in Lucene's order, on the calling thread."""
        if self._legacy:  # Lucene 8 indexes: Anserini's own path, which breaks ties arbitrarily
            attached()
            query = legacy_query(terms)
            with SEARCHERS.on(self):
                found = self._searcher.search(query, depth)
            return [(hit.docid, float(round(hit.score))) for hit in found]
        return sorted_hits(self._top_docs(terms, depth), self._numbers)

    def top_numbers(self, terms: dict[str, int], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``depth`` hits of one query by score, and every further hit tied with the
        ``depth``-th (up to ``TIE_DEPTH_LIMIT`` more), as Lucene document numbers and integer scores,
        int64, best first; no id is decoded, for a caller that maps numbers itself (two-step search
        reads its candidates' rows by number).

        Lucene is asked for its plain top hits, with no id sort: at depth 2,000 on a million
        documents the id sort costs Lucene a fifth more and doubles the JSON. Lucene breaks ties by
        document number, which depends on how the index was built, so the hits tied at the cut are
        all kept: the set is the same for every build of the same documents.
        """
        if not terms:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if self._legacy:
            raise PipelineError("a Lucene 8 index has no document numbers to search by; rebuild it")
        limit = min(depth + TIE_DEPTH_LIMIT, max(self.documents, 1))
        fetch = min(depth + EXTRA_DEPTH, limit)
        while True:
            hits = top_docs(self._top_docs(terms, fetch, by_id=False))
            if fetch >= limit or cut_settled(len(hits), fetch, depth, self.documents, lambda i: hits[i]["score"]):
                break
            fetch = min(fetch * 2, limit)
        numbers = np.fromiter((hit["doc"] for hit in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((round(hit["score"]) for hit in hits), dtype=np.int64, count=len(hits))
        keep = within_cut(scores, depth)  # best first still: positions come back in order
        return numbers[keep], scores[keep]

    def numbers_by_id(self, page: int = 1 << 18) -> Iterator[tuple[list[int], list[str]]]:
        """Every document's Lucene number and id, in id order (UTF-8 bytes, as Lucene sorts them), a
        page at a time: one sorted scan of the index per page, no stored document read."""
        attached()
        autoclass = jvm.autoclass
        everything = autoclass("org.apache.lucene.search.MatchAllDocsQuery")()
        by_id = autoclass("org.apache.lucene.search.Sort")(autoclass("org.apache.lucene.search.SortField")(
            "id", autoclass("org.apache.lucene.search.SortField$Type").STRING_VAL))
        after = None
        while True:
            with SEARCHERS.on(self):
                found = (self._lucene.search(everything, page, by_id, False) if after is None else
                         self._lucene.searchAfter(after, everything, page, by_id, False))
            hits = top_docs(self._writer.writeValueAsString(found))
            if not hits:
                return
            numbers, ids = [hit["doc"] for hit in hits], [sort_id(hit) for hit in hits]
            yield numbers, ids
            if len(hits) < page:
                return
            after = autoclass("org.apache.lucene.search.FieldDoc")(
                numbers[-1], float("nan"), [autoclass("org.apache.lucene.util.BytesRef")(ids[-1].encode("utf-8"))])

    def _batch(self, queries: dict[str, dict[str, int]], depth: int, threads: int) -> dict[str, list[Hit]]:
        """Top ``depth`` hits per query; a batch is spread over ``threads`` Python threads (pyjnius
        releases the GIL while Java searches), a single query stays on the calling thread."""
        items = list(queries.items())
        if threads <= 1 or len(items) <= 1:
            return self._search_chunk(items, depth)
        chunks = [items[lo::threads] for lo in range(threads)]
        with ThreadPoolExecutor(threads, thread_name_prefix="search") as pool:
            parts = list(pool.map(lambda chunk: self._search_chunk(chunk, depth), chunks))
        found = {qid: hits for part in parts for qid, hits in part.items()}
        return {qid: found[qid] for qid in queries}

    def _search_chunk(self, chunk: list[tuple[str, dict[str, int]]], depth: int) -> dict[str, list[Hit]]:
        return {qid: self._search_one(terms, depth) for qid, terms in chunk}

    def search(self, queries: dict[str, dict[str, int]], hits: int, threads: int = 1,
               remove_query: bool | Collection[str] = False) -> tuple[dict[str, list[Hit]], dict[str, Any]]:
        """Top ``hits`` per query in trec_eval's order (score, then document id, descending), and counters.

        ``remove_query``: ``True`` drops each query's own id from its hits (BEIR), a collection of
        query ids does so only for those queries. The counters say what happened: self hits
        removed, queries whose tie at the cut-off outgrew the depth limit, queries with scores that
        reached 2^24 (no longer exact in float32). They are returned, not kept, so that threads
        sharing a searcher never read each other's.
        """
        dropping = self_hit_queries(remove_query, queries)
        need = {qid: hits + (qid in dropping) for qid in queries}
        limit = min(hits + 1 + TIE_DEPTH_LIMIT, max(self.documents, 1))
        depth = min(hits + 1 + EXTRA_DEPTH, limit)
        searchable = {qid: terms for qid, terms in queries.items() if terms}
        results = self._batch(searchable, depth, threads) if searchable else {}
        capped: set[str] = set()
        while True:
            unsettled = {qid for qid, found in results.items()
                         if not cut_settled(len(found), depth, need[qid], self.documents,
                                            lambda i, found=found: found[i][1])}
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
        counters = {"self_hits_removed": removed, "ties_capped": len(capped),
                    "ties_capped_queries": sorted(capped)[:10],
                    "scores_beyond_2^24": sum(1 for found in results.values()
                                              if found and found[0][1] >= FLOAT32_EXACT)}
        return ranked, counters

    @property
    def reader(self):
        """Lucene's ``IndexReader`` of the index (for reading postings)."""
        return self._searcher.reader

    def stores_text(self) -> bool:
        """Whether the index keeps each document's JSON (built with --store-raw)."""
        attached()
        return self.documents > 0 and self._searcher.doc_raw(0) is not None

    def lucene_id(self, docid: str) -> int:
        """Lucene's internal number of a document, or -1 when the index has no such id."""
        attached()
        known = self._numbers.get(docid) if self._numbers is not None else None
        if known is not None:
            return known
        return int(jvm.autoclass("io.anserini.index.IndexReaderUtils").convertDocidToLuceneDocid(
            self.reader, docid))

    def raw(self, docid: str) -> str | None:
        """The stored JSON of a document (indexes built with --store-raw); None without one."""
        return self.raw_many([docid])[0]

    def raw_many(self, docids: Sequence[str]) -> list[str | None]:
        """The stored JSON of each document, None where there is none (no such id, no --store-raw).

        Read by document number, as Anserini's ``doc_raw`` does after looking the id up, through one
        ``StoredFields`` for the whole call: Lucene's are not to be shared between threads.
        """
        numbers = [self.lucene_id(docid) for docid in docids]
        if not any(number >= 0 for number in numbers):
            return [None] * len(numbers)
        with jvm.INSTANCE_CALLS:  # a StoredFields and its Documents are made per call (see jvm)
            fields = self._lucene.storedFields()
            return [fields.document(number).get(RAW_FIELD) if number >= 0 else None for number in numbers]

    def close(self) -> None:
        self._searcher.close()


def self_hit_queries(remove_query: bool | Collection[str], queries: Iterable[str]) -> set[str]:
    """The queries whose own id is dropped from their hits."""
    if isinstance(remove_query, bool):
        return set(queries) if remove_query else set()
    return set(remove_query)


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
                lines.append(f"{qid} Q0 {docid} {rank} {score_text(score)} {tag}\n")
    return "".join(lines).encode()


def score_text(score: float) -> str:
    """A score as the run file holds it: six decimals (as Anserini and Pyserini write them) when
    trec_eval reads that back as the same float32, else the float32 itself in 9 significant digits.

    Six decimals alone would merge scores that differ below 5e-7 (reciprocal rank fusion with a large
    --k gives 0.000200 for 1/5001 and 1/5002): the run's own order and ranks would then disagree with
    the order evaluate and trec_eval read back, which break the new tie by document id.
    """
    import numpy as np

    exact = np.float32(score)
    text = f"{score:.6f}"
    return text if np.float32(float(text)) == exact else f"{float(exact):.9g}"


def encode_queries(encoder, topics: dict[str, str], batch_size: int, progress: bool = True
                   ) -> dict[str, dict[str, int]]:
    """Quantised ``{token: int}`` per query, in topic order, by a ``pipeline.encoders`` query encoder
    (through a model, a query's vector does not depend on the other topics, and the service
    encodes it identically)."""
    from tqdm import tqdm

    with tqdm(total=len(topics), unit="q", desc="encode queries", disable=not progress,
              file=sys.stderr) as bar:
        terms = encoder.encode(list(topics.values()), batch_size, on_batch=bar.update)
    return dict(zip(topics, terms))


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
        results, counters = searcher.search(queries, hits, threads, remove_query)
    finally:
        searcher.close()
    write_run(output, results, fmt, tag)
    return {"queries": len(queries), "without_terms": sum(1 for t in queries.values() if not t),
            "without_hits": sum(1 for r in results.values() if not r),
            "hits": sum(len(r) for r in results.values()), **counters, "output": str(output)}


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

