"""The HTTP API and the page: ``create_app(indexes)`` builds a FastAPI application.

Endpoints follow Anserini's REST server (``GET /v1/{index}/search?query=&hits=``,
``GET /v1/{index}/doc/{docid}``, responses ``{"api", "index", "query", "candidates"}``, errors
``{"error"}``) and add ``POST /v1/{index}/search`` for batches of texts or pre-encoded vectors,
``explain=true``, ``GET /v1/indexes``, ``GET /health``, the schema at ``/openapi.json`` (no
Swagger page: it would load from a CDN) and the page at ``/``. Indexes and encoders are opened in
the lifespan, so the server accepts connections only once everything is warm, and closed at
shutdown. Index names are dictionary keys; nothing in a request becomes a path.

Searches run in the thread pool (FastAPI runs plain ``def`` endpoints there), so requests encode
and search side by side; see ``backend`` for how they share the JVM and the model.
"""

import contextlib  # no `from __future__ import annotations`: FastAPI reads the request model built at run time
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException

from pipeline import __version__
from pipeline.encoders import Options
from pipeline.service.backend import ServedIndex, close_indexes, elapsed_ms, open_indexes
from pipeline.service.guard import Guard, Limits, error_body
from pipeline.texts import without_vector

WEB = Path(__file__).resolve().parents[1] / "resources" / "web"
REQUEST_ID_HEADER = "x-request-id"
log = logging.getLogger("pipeline.service")
PAGE_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


class ApiResponse(JSONResponse):
    """A JSON response rendered by orjson (UTF-8, no NaN: the bodies hold none), a few times faster
    than the standard encoder on a page of stored documents; what orjson cannot encode (integers
    beyond 64 bits, lone surrogates read from a stored document) falls back to Starlette's own."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            return super().render(content)


class ApiError(HTTPException):
    """A refusal naming the request field at fault."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(status, message)
        self.field = field


def error_response(status: int, field: str | None, message: str, request_id: str | None = None) -> Response:
    """An error in the body ``guard.error_body`` makes; a request id also travels as ``x-request-id``."""
    headers = {REQUEST_ID_HEADER: request_id} if request_id is not None else None
    return Response(error_body(status, field, message, request_id), status_code=status,
                    media_type="application/json", headers=headers)


def field_name(loc: tuple) -> str:
    """``("body", "queries", 0, "text")`` -> ``queries[0].text``; ``("query", "hits")`` -> ``hits``."""
    parts = list(loc[1:]) if loc and loc[0] in ("query", "path", "body", "header") and len(loc) > 1 else list(loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or str(loc[0] if loc else "request")


# ---- response and request schemas (for /openapi.json; responses are built as plain dicts) --------------

class Term(BaseModel):
    term: str
    weight: int
    expansion: bool | None = Field(description="absent from the query text's tokens (null: no text)")


class QueryOut(BaseModel):
    id: Optional[str] = None
    text: Optional[str] = None
    terms: list[Term]


class Contribution(BaseModel):
    term: str
    query_weight: int
    doc_impact: int
    contribution: int = Field(description="query_weight x doc_impact")
    expansion: str = Field(description="'+q': absent from the query text; '+d': absent from the document text")


class Explanation(BaseModel):
    terms: list[Contribution]
    total: int = Field(description="sum of contributions; equals the score")
    highlights: Optional[list[list[int]]] = Field(description="[start, end) character spans of matched terms in "
                                                              "doc.contents; null when the index stores no text")


class Candidate(BaseModel):
    docid: str
    score: float
    rank: int
    doc: Optional[dict[str, Any]] = Field(description="the stored document without its vector; null when the "
                                                      "index was built without --store-raw")
    explanation: Optional[Explanation] = None


class SearchResponse(BaseModel):
    api: str = "v1"
    index: str
    query: QueryOut
    candidates: list[Candidate]
    timing_ms: dict[str, float]


class BatchResponse(BaseModel):
    api: str = "v1"
    index: str
    results: list[SearchResponse]
    timing_ms: dict[str, float]


class DocumentResponse(BaseModel):
    api: str = "v1"
    index: str
    docid: str
    doc: Optional[dict[str, Any]]


class ErrorResponse(BaseModel):
    error: str
    field: Optional[str]
    status: int
    request_id: Optional[str] = Field(None, description="500 only: the id the server logged the error under "
                                                        "(also the x-request-id header)")


def unicode_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8: JSON's ``\\ud800`` escapes decode to text that cannot,
    and the response that echoes it would fail after the search had run."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def batch_request(limits: Limits) -> type[BaseModel]:
    """The POST body model, with this service's limits in its schema."""

    class QueryIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str = Field(min_length=1, max_length=256)
        text: Optional[str] = Field(None, min_length=1, max_length=limits.max_query_chars)
        vector: Optional[dict[str, int]] = Field(None, min_length=1, max_length=limits.max_terms,
                                                 description="pre-encoded query: {term: positive integer weight}")

        @model_validator(mode="after")
        def one_of(self):
            for name, value in (("id", self.id), ("text", self.text), *(("vector", t) for t in self.vector or {})):
                if value is not None and not unicode_text(value):
                    raise ValueError(f"{name} holds a lone surrogate (a \\ud800-\\udfff escape that is not half "
                                     "of a pair): not valid Unicode text")
            if (self.text is None) == (self.vector is None):
                raise ValueError("give exactly one of 'text' or 'vector'")
            if self.text is not None and not self.text.strip():
                raise ValueError("text is blank")
            for term, weight in (self.vector or {}).items():
                if not term or len(term) > limits.max_term_chars:
                    raise ValueError(f"vector term {term[:40]!r} must have 1 to {limits.max_term_chars} characters")
                if not 1 <= weight <= limits.max_weight:
                    raise ValueError(f"vector weight of {term[:40]!r} must be 1 to {limits.max_weight:,}, got {weight}")
            return self

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        queries: list[QueryIn] = Field(min_length=1, max_length=limits.max_batch)
        hits: int = Field(10, ge=1, le=limits.max_hits)
        explain: bool = False
        doc: bool = True

    return BatchRequest


# ---- the application -------------------------------------------------------------------------------

def create_app(indexes: dict[str, Path], threads: int | None = None, limits: Limits = Limits(),
               served: dict[str, ServedIndex] | None = None, query_encoder: str | None = None,
               force: bool = False, two_step: bool = False) -> FastAPI:
    """The service over ``indexes`` (``{name: path}``), opened when the server starts; ``two_step``
    searches each through its two-step companion (default settings, ``pipeline.two_step``).

    ``served`` hands in indexes already open (then they are not closed at shutdown either).
    ``query_encoder``: another query side than the indexes' own, refused unless ``force``.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        own = served is None
        app.state.indexes = open_indexes(indexes, threads, Options(query_encoder=query_encoder), force,
                                         two_step) if own else served
        try:
            yield
        finally:
            if own:
                close_indexes(app.state.indexes)

    app = FastAPI(title="splade-pipeline search service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  description="SPLADE queries against Lucene impact indexes, with per-term explanations. "
                              "Shaped like Anserini's REST API (/v1/{index}/search, /v1/{index}/doc/{docid}).")
    app.add_middleware(Guard, limits=limits)
    errors = {status: {"model": ErrorResponse} for status in (400, 404, 408, 413, 429, 500)}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            detail = (first.get("ctx") or {}).get("error", "invalid JSON")
            return error_response(400, "body", f"malformed JSON ({detail} at character {loc[-1]})")
        message = first.get("msg", "invalid").removeprefix("Value error, ")
        given = first.get("input")
        shown = f" (got {given!r})" if isinstance(given, (str, int, float)) and len(repr(given)) <= 60 else ""
        return error_response(400, field_name(loc), message + shown)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Response:
        field = getattr(exc, "field", None)
        if exc.status_code == 404 and field is None:
            return error_response(404, None, f"no route {request.method} {request.url.path}")
        if exc.status_code == 405:
            return error_response(405, None, f"method {request.method} not allowed on {request.url.path}")
        return error_response(exc.status_code, field, str(exc.detail))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        # The exception stays on the server (it may name paths, settings or data); the client gets
        # an id to quote, which the log line carries with the traceback.
        request_id = uuid.uuid4().hex[:16]
        log.error("request %s: %s %s failed", request_id, request.method, request.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return error_response(500, None, f"internal error; the server logged it as request {request_id}",
                              request_id)

    def index_named(request: Request, name: str) -> ServedIndex:
        served_now: dict[str, ServedIndex] = request.app.state.indexes
        if name not in served_now:
            raise ApiError(404, "index", f"no index named {name[:80]!r}; served: {', '.join(served_now)}")
        return served_now[name]

    # -- page -------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response((WEB / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in PAGE_FILES:  # a fixed set of files: a request never names a path
            raise ApiError(404, "name", f"no such file {name[:80]!r}")
        return Response((WEB / name).read_bytes(), media_type=PAGE_FILES[name],
                        headers={"cache-control": "no-cache"})

    # -- API --------------------------------------------------------------------------------------

    @app.get("/health", tags=["service"])
    def health(request: Request) -> dict[str, Any]:
        return {"status": "ok", "indexes": list(request.app.state.indexes)}

    @app.get("/v1/indexes", tags=["service"])
    def list_indexes(request: Request) -> dict[str, Any]:
        """Every index this service was started with: name, documents, encoder and its settings."""
        return {"api": "v1", "indexes": [index.describe() for index in request.app.state.indexes.values()]}

    @app.get("/v1/{index}/search", response_model=SearchResponse, responses=errors, tags=["search"])
    def search(request: Request, index: str,
               query: str = Query(min_length=1, max_length=limits.max_query_chars, description="query text"),
               hits: int = Query(10, ge=1, le=limits.max_hits, description="number of hits"),
               explain: bool = Query(False, description="per-term contributions of each hit"),
               doc: bool = Query(True, description="include each hit's stored document")) -> ApiResponse:
        """Encode the query with the index's own encoder and search; Anserini's response shape."""
        served_index = index_named(request, index)
        if not query.strip():
            raise ApiError(400, "query", "blank")
        result = run_queries(served_index, [(None, query, None)], hits, explain, doc)
        return ApiResponse({"api": "v1", "index": index, **result["results"][0],
                            "timing_ms": result["timing_ms"]})

    BatchRequest = batch_request(limits)

    @app.post("/v1/{index}/search", response_model=BatchResponse, responses=errors, tags=["search"])
    def search_batch(request: Request, index: str, body: BatchRequest) -> ApiResponse:  # type: ignore[valid-type]
        """A batch of queries, each ``{"id", "text"}`` or pre-encoded ``{"id", "vector": {term: weight}}``."""
        served_index = index_named(request, index)
        seen: set[str] = set()
        for position, item in enumerate(body.queries):
            if item.id in seen:
                raise ApiError(400, f"queries[{position}].id", f"duplicate id {item.id[:80]!r}")
            seen.add(item.id)
        total = len(body.queries) * body.hits
        if total > limits.max_batch_hits:
            raise ApiError(400, "hits", f"{len(body.queries)} queries x {body.hits} hits = {total:,}; "
                                        f"at most {limits.max_batch_hits:,} per request")
        result = run_queries(served_index, [(q.id, q.text, q.vector) for q in body.queries], body.hits,
                             body.explain, body.doc)
        return ApiResponse({"api": "v1", "index": index, **result})

    # ``:path``: a document id may hold a slash (ids are any text without whitespace), percent-encoded or not
    @app.get("/v1/{index}/doc/{docid:path}", response_model=DocumentResponse, responses=errors, tags=["documents"])
    def document(request: Request, index: str, docid: str) -> ApiResponse:
        """A document by id: the stored JSON (text and vector), or null when the index stores none."""
        served_index = index_named(request, index)
        if len(docid) > 1024 or not served_index.has(docid):
            raise ApiError(404, "docid", f"no document {docid[:80]!r} in index {index!r}")
        return ApiResponse({"api": "v1", "index": index, "docid": docid, "doc": served_index.stored(docid)})

    return app


def run_queries(index: ServedIndex, queries: list[tuple[str | None, str | None, dict[str, int] | None]],
                hits: int, explain: bool, docs: bool = True) -> dict[str, Any]:
    """Encode the texts in one batch, search, and build each query's candidates (explained if asked)."""
    start = time.perf_counter()
    texts = [text for _, text, vector in queries if vector is None]
    encoded = iter(index.encode(texts) if texts else [])
    keys = [qid if qid is not None else str(position) for position, (qid, _, _) in enumerate(queries)]
    terms = {key: (vector if vector is not None else next(encoded)) for key, (_, _, vector) in zip(keys, queries)}
    timing = {"encode": elapsed_ms(start)}
    start = time.perf_counter()
    found = index.search(terms, hits)
    timing["search"] = elapsed_ms(start)
    start = time.perf_counter()
    results = []
    for key, (qid, text, _) in zip(keys, queries):
        query_tokens = index.query_tokens(text) if text is not None else None
        query_terms = terms[key]
        candidates = []
        page = index.stored_many([docid for docid, _ in found[key]], vectors=explain) if (explain or docs) else None
        for rank, (docid, score) in enumerate(found[key], start=1):
            stored = page[rank - 1] if page is not None else None
            candidate: dict[str, Any] = {"docid": docid, "score": score, "rank": rank,
                                         "doc": _without_vector(stored) if docs else None}
            if explain:
                candidate["explanation"] = index.explain_hit(query_terms, query_tokens, docid, stored)
            candidates.append(candidate)
        ordered = sorted(query_terms.items(), key=lambda item: (-item[1], item[0]))
        results.append({"query": {"id": qid, "text": text,
                                  "terms": [{"term": term, "weight": weight,
                                             "expansion": None if query_tokens is None else term not in query_tokens}
                                            for term, weight in ordered]},
                        "candidates": candidates})
    timing["build"] = elapsed_ms(start)
    return {"results": results, "timing_ms": timing}


def _without_vector(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if stored is None else without_vector(stored)
