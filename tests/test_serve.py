"""The search service: a real uvicorn server on a loopback port over real demo indexes and splade-tiny.

One server (one JVM, one model) serves the whole session (``service`` in conftest); the browser
test reuses it. Two indexes of the embedded demo corpus are served: ``demo`` stores the documents (--store-raw), ``bare``
does not, so explanations are checked both from stored vectors and from Lucene's postings.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import DEMO_QUERY, SERVICE_LIMITS
from pipeline.demo import DEMO_DATA, collection_vectors
from pipeline.readers import read_topics
from pipeline.search import ImpactSearcher

QUIET = {"say": lambda text: None}
QUERY = DEMO_QUERY
LIMITS = SERVICE_LIMITS


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service, timeout=60) as session:
        yield session


def test_health_indexes_and_offline_schema(client, demo_indexes):
    assert client.get("/health").json() == {"status": "ok", "indexes": ["demo", "bare"]}
    listed = client.get("/v1/indexes").json()["indexes"]
    assert [(i["name"], i["documents"], i["stores_text"]) for i in listed] == [("demo", 40, True), ("bare", 40, False)]
    assert listed[0]["encoder"]["name"] == "splade-tiny" and listed[0]["scale"] == 100
    assert str(demo_indexes["demo"].parent) not in json.dumps(listed)  # no file-system paths leak
    schema = client.get("/openapi.json").json()
    assert {"get", "post"} <= set(schema["paths"]["/v1/{index}/search"])
    assert {"/v1/{index}/doc/{docid}", "/v1/indexes", "/health"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # Swagger's page would load from a CDN
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "src=\"http" not in text and "href=\"http" not in text and "@import" not in text


def test_search_returns_what_the_search_stage_finds(client, demo_indexes, encoder):
    terms = encoder.to_terms(encoder.encode([QUERY])[0], 100)
    searcher = ImpactSearcher(demo_indexes["demo"])
    try:
        expected = searcher.search({"q": terms}, 10)[0]["q"]
    finally:
        searcher.close()
    body = client.get("/v1/demo/search", params={"query": QUERY, "hits": 10}).json()
    assert body["api"] == "v1" and body["index"] == "demo" and body["query"]["text"] == QUERY
    assert {t["term"]: t["weight"] for t in body["query"]["terms"]} == terms
    assert [(c["docid"], c["score"], c["rank"]) for c in body["candidates"]] == [
        (docid, score, rank) for rank, (docid, score) in enumerate(expected, start=1)]
    assert body["candidates"][0]["docid"] == "history-01"
    assert body["candidates"][0]["doc"]["contents"].startswith("The printing press")
    assert "vector" not in body["candidates"][0]["doc"]
    bare = client.get("/v1/bare/search", params={"query": QUERY, "hits": 10}).json()
    assert [c["docid"] for c in bare["candidates"]] == [c["docid"] for c in body["candidates"]]
    assert all(c["doc"] is None for c in bare["candidates"])


def test_explanations_add_up_to_the_score_and_mark_expansions(client, demo_indexes, encoder):
    docs = collection_vectors(demo_indexes["collection"])
    query_tokens = set(encoder.tokenizer.tokenize(QUERY))
    body = client.get("/v1/demo/search", params={"query": QUERY, "hits": 5, "explain": "true"}).json()
    bare = client.get("/v1/bare/search", params={"query": QUERY, "hits": 5, "explain": "true"}).json()
    weights = {t["term"]: t["weight"] for t in body["query"]["terms"]}
    assert {t["term"] for t in body["query"]["terms"] if not t["expansion"]} <= query_tokens
    for hit, bare_hit in zip(body["candidates"], bare["candidates"]):
        explained, doc = hit["explanation"], docs[hit["docid"]]
        doc_tokens = set(encoder.tokenizer.tokenize(doc["contents"]))
        assert explained["total"] == hit["score"] == sum(t["contribution"] for t in explained["terms"])
        assert {t["term"] for t in explained["terms"]} == {t for t in weights if t in doc["vector"]}
        for term in explained["terms"]:
            assert term["query_weight"] == weights[term["term"]] and term["doc_impact"] == doc["vector"][term["term"]]
            assert term["contribution"] == term["query_weight"] * term["doc_impact"]
            assert term["expansion"] == (("" if term["term"] in query_tokens else "+q")
                                         + ("" if term["term"] in doc_tokens else "+d"))
        marked = [doc["contents"][start:end].lower() for start, end in explained["highlights"]]
        literal = {t["term"] for t in explained["terms"] if "+d" not in t["expansion"]}
        assert bool(marked) == bool(literal)  # every term found in the text is highlighted, nothing else
        assert all(any(term.lstrip("#") in word for term in literal) for word in marked)
        # Without stored documents the impacts come from Lucene's postings: same figures, no '+d' judgement.
        assert [(t["term"], t["contribution"]) for t in bare_hit["explanation"]["terms"]] == [
            (t["term"], t["contribution"]) for t in explained["terms"]]
        assert bare_hit["explanation"]["highlights"] is None
        assert all("+d" not in t["expansion"] for t in bare_hit["explanation"]["terms"])
    top = body["candidates"][0]["explanation"]["terms"]
    assert any(t["expansion"] == "+q+d" for t in top[:3])  # q9's top hit is carried by expansion terms


def test_batch_of_texts_and_pre_encoded_vectors(client):
    topics = read_topics(DEMO_DATA / "queries.jsonl")
    single = {qid: client.get("/v1/demo/search", params={"query": text, "hits": 5}).json() for qid, text in topics.items()}
    queries = [{"id": qid, "text": text} for qid, text in topics.items()]
    queries.append({"id": "q9-vector", "vector": {t["term"]: t["weight"] for t in single["q9"]["query"]["terms"]}})
    body = client.post("/v1/demo/search", json={"queries": queries, "hits": 5, "explain": True}).json()
    results = {result["query"]["id"]: result for result in body["results"]}
    assert list(results) == [*topics, "q9-vector"]
    for qid in topics:
        assert [c["docid"] for c in results[qid]["candidates"]] == [c["docid"] for c in single[qid]["candidates"]]
    vector = results["q9-vector"]
    assert [c["score"] for c in vector["candidates"]] == [c["score"] for c in single["q9"]["candidates"]]
    assert vector["query"]["text"] is None and all(t["expansion"] is None for t in vector["query"]["terms"])
    assert all("+q" not in t["expansion"] for c in vector["candidates"] for t in c["explanation"]["terms"])


def test_documents_by_id(client):
    doc = client.get("/v1/demo/doc/history-01").json()
    assert doc["docid"] == "history-01" and doc["doc"]["contents"].startswith("The printing press")
    assert doc["doc"]["vector"]["print"] > 0
    assert client.get("/v1/bare/doc/history-01").json()["doc"] is None


BIG = "x" * 100_000
BAD_GETS = [
    ("/v1/demo/search?query=&hits=3", 400, "query"),
    ("/v1/demo/search?query=%20%20", 400, "query"),
    ("/v1/demo/search?hits=3", 400, "query"),
    ("/v1/demo/search?query=x&hits=-1", 400, "hits"),
    ("/v1/demo/search?query=x&hits=0", 400, "hits"),
    ("/v1/demo/search?query=x&hits=abc", 400, "hits"),
    ("/v1/demo/search?query=x&hits=10001", 400, "hits"),
    ("/v1/demo/search?query=x&hits=99999999999999999999999", 400, "hits"),
    ("/v1/demo/search?query=x&explain=maybe", 400, "explain"),
    ("/v1/demo/search?query=%FF%FEabc", 400, "query"),
    ("/v1/demo/doc/%C3%28", 400, "path"),
    ("/v1/nope/search?query=x", 404, "index"),
    ("/v1/..%2F..%2Fetc/search?query=x", 404, None),  # decodes to a path no route matches
    ("/v1/nope/doc/history-01", 404, "index"),
    ("/v1/demo/doc/no-such-doc", 404, "docid"),
    ("/static/..%2F..%2Fsearch.py", 404, None),
    ("/static/search.py", 404, "name"),
    ("/no/such/route", 404, None),
]


@pytest.mark.parametrize("path,status,field", BAD_GETS, ids=[p[:40] for p, _, _ in BAD_GETS])
def test_bad_queries_get_a_4xx_naming_the_field(client, path, status, field):
    response = client.get(path)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["field"] == field and body["error"].startswith(f"{field}: " if field else "no route")
    assert client.get("/health").status_code == 200


BAD_POSTS = [
    (b'{"queries": [{"id": "a", "text": "x"}', 400, "body"),  # truncated JSON
    (b"\xff\xfe{ not utf-8 }", 400, "body"),
    (b'[1, 2, 3]', 400, "body"),
    (b'{"queries": []}', 400, "queries"),
    (b'{"queries": [{"id": "a"}]}', 400, "queries[0]"),
    (b'{"queries": [{"id": "a", "text": "x", "vector": {"x": 1}}]}', 400, "queries[0]"),
    (b'{"queries": [{"id": "a", "vector": {"x": -3}}]}', 400, "queries[0]"),
    (b'{"queries": [{"id": "a", "vector": {"x": 1.5}}]}', 400, "queries[0].vector.x"),
    (b'{"queries": [{"id": "a", "text": "   "}]}', 400, "queries[0]"),
    (b'{"queries": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}', 400, "queries[1].id"),
    (b'{"queries": [{"id": "a", "text": "x"}], "hits": "abc"}', 400, "hits"),
    (b'{"queries": [{"id": "a", "text": "x"}], "colour": "red"}', 400, "colour"),
    (json.dumps({"queries": [{"id": str(i), "text": "x"} for i in range(20)], "hits": 10000}).encode(), 400, "hits"),
    (json.dumps({"queries": [{"id": "a", "text": BIG}]}).encode(), 400, "queries[0].text"),
    (b'{"queries": [{"id": "a", "text": "' + b"x" * (2 << 20) + b'"}]}', 413, "body"),
]


@pytest.mark.parametrize("body,status,field", BAD_POSTS, ids=[f"{i}:{b[:30]!r}" for i, (b, _, _) in enumerate(BAD_POSTS)])
def test_bad_bodies_get_a_4xx_naming_the_field(client, body, status, field):
    response = client.post("/v1/demo/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["field"] == field and response.json()["error"].startswith(f"{field}: ")
    assert client.get("/health").status_code == 200


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def raw_exchange(service: str, data: bytes, wait: float = 10) -> bytes:
    host, port = service.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as conn:
        conn.sendall(data)
        return read_all(conn)


def test_malformed_http_huge_heads_and_wrong_methods(client, service):
    answer = raw_exchange(service, f"GET /v1/demo/search?query={BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["field"] == "query"  # 100 kB query
    answer = raw_exchange(service, f"GET /v1/demo/search?query={BIG * 3} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and "larger than" in json.loads(body)["error"]  # beyond the head limit
    answer = raw_exchange(service, b"GET /v1/demo/search?query=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["field"] == "request"
    response = client.delete("/v1/demo/search")
    assert response.status_code == 405 and "not allowed" in response.json()["error"]
    assert client.get("/health").status_code == 200


def test_slow_clients_are_timed_out_while_others_are_served(client, service):
    host, port = service.removeprefix("http://").split(":")
    heads, bodies = [], []
    for _ in range(20):  # request heads that never finish
        conn = socket.create_connection((host, int(port)), timeout=15)
        conn.sendall(b"GET /v1/demo/search?query=slow HTTP/1.1\r\nHost: x\r\n")
        heads.append(conn)
    for _ in range(LIMITS["max_in_flight"]):  # bodies that never finish: as many as there are request slots
        conn = socket.create_connection((host, int(port)), timeout=15)
        conn.sendall(b"POST /v1/demo/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"queries\": ")
        bodies.append(conn)
    time.sleep(0.3)
    assert client.get("/health").status_code == 200  # slow bodies hold no slot (issue 22)
    answers = []
    for conn in heads + bodies:
        with conn:
            answers.append(read_all(conn))
    for answer, field in zip(answers, ["request"] * len(heads) + ["body"] * len(bodies)):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:200]
        assert json.loads(body)["field"] == field
    assert client.get("/v1/demo/search", params={"query": QUERY}).status_code == 200


def test_concurrent_requests_get_the_same_answers(client, service):
    topics = list(read_topics(DEMO_DATA / "queries.jsonl").values())
    expected = {text: client.get("/v1/demo/search", params={"query": text, "hits": 10}).json()["candidates"]
                for text in topics}

    def ask(text: str):
        with httpx.Client(base_url=service, timeout=60) as session:
            return [session.get("/v1/demo/search", params={"query": text, "hits": 10}) for _ in range(3)]

    with ThreadPoolExecutor(LIMITS["max_in_flight"] - 2) as pool:
        answers = dict(zip(topics, pool.map(ask, topics)))
    for text, responses in answers.items():
        for response in responses:
            assert response.status_code == 200 and response.json()["candidates"] == expected[text]


def test_serve_command_refuses_bad_indexes(tmp_path):
    from pipeline.cli import main

    assert main(["serve", "--index", str(tmp_path / "missing")]) == 2
    assert main(["serve", "--index", f"a={tmp_path}", "--index", f"a={tmp_path}"]) == 2


def test_stored_json_and_responses_beyond_orjson_fall_back_to_the_standard_library():
    """orjson parses stored documents and renders responses; what it refuses and JSON admits (a lone
    surrogate escape, an integer beyond 64 bits) takes the standard library's path, not an error."""
    from pipeline.service.app import ApiResponse
    from pipeline.service.backend import parse_stored

    assert parse_stored('{"id": "d1", "contents": "a\\ud800b", "n": 18446744073709551616}') == {
        "id": "d1", "contents": "a\ud800b", "n": 2 ** 64}
    assert parse_stored('["not", "an", "object"]') == {"raw": ["not", "an", "object"]}
    assert parse_stored("{broken") == {"raw": "{broken"}
    body = {"api": "v1", "score": 12.0, "doc": {"contents": "café ü", "n": 2 ** 64}}
    assert json.loads(ApiResponse(body).body) == body
    plain = {"api": "v1", "score": 12.0, "doc": {"contents": "café ü", "vector": {"caf": 3}}}
    assert ApiResponse(plain).body == json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode()
