"""bench/serve.py's HTTP client: answers read by their Content-Length on a keep-alive socket, and
anything it cannot read refused (a canned server on loopback sends the bytes under test)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import bench_module

serve = bench_module("serve")


def canned(answers: list[bytes], up_front: bool = False) -> tuple[int, list[bytes]]:
    """A server on a free loopback port that answers each request head with the next of ``answers``
    (sent in pieces of 7 bytes, so reads straddle heads and bodies; ``up_front``: all of them at once
    after the first head), hanging up after an answer that says ``connection: close`` and taking the
    next connection; returns the port and the request heads it received."""
    listener = socket.create_server((serve.HOST, 0))
    heads: list[bytes] = []
    queue = list(answers)

    def run() -> None:
        with listener:
            while queue:
                conn, _ = listener.accept()
                with conn:
                    serve_one(conn)

    def serve_one(conn: socket.socket) -> None:
        data = b""
        while queue:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            heads.append(head)
            sent = [queue.pop(0) for _ in range(len(queue) if up_front else 1)]
            try:
                for start in range(0, len(b"".join(sent)), 7):
                    conn.sendall(b"".join(sent)[start:start + 7])
            except OSError:  # the client hung up on an answer it refused
                return
            if b"connection: close" in sent[-1].lower():
                return
        try:
            while conn.recv(4096):  # answered everything: read on until the client hangs up
                pass
        except ConnectionResetError:  # a client that closes with unread data resets instead
            pass

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1], heads


def answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
            + extra + b"\r\n" + body)


def test_consecutive_answers_on_one_connection_each_read_to_its_length() -> None:
    bodies = [b'{"a": 1}', b"", b"x" * 200_000, '{"t": "\u00e9\r\n\r\n"}'.encode()]
    port, heads = canned([answer(bodies[0]), answer(bodies[1], "404 Not Found"), answer(bodies[2]),
                          answer(bodies[3], extra=b"X-Other:  yes \r\n")])
    conn = serve.Connection(port, timeout=5)
    got = [conn.get(f"/v1/x/search?query=q{n}") for n in range(4)]
    conn.close()
    assert got == [(200, bodies[0]), (404, bodies[1]), (200, bodies[2]), (200, bodies[3])]
    assert heads[1] == b"GET /v1/x/search?query=q1 HTTP/1.1\r\nHost: 127.0.0.1"


@pytest.mark.parametrize("raw, message", [
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", "exactly one Content-Length"),
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nabc", "exactly one Content-Length"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\nabc", "exactly one Content-Length"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabc", "exactly one Content-Length"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
])
def test_an_answer_it_cannot_read_by_length_is_refused(raw: bytes, message: str) -> None:
    port, _ = canned([raw])
    conn = serve.Connection(port, timeout=5)
    with pytest.raises(serve.BadResponse, match=message):
        conn.get("/health")
    conn.close()


def test_a_body_cut_short_is_a_connection_error_not_a_short_answer() -> None:
    port, _ = canned([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nabc"])  # hangs up
    conn = serve.Connection(port, timeout=5)
    with pytest.raises(ConnectionError):
        conn.get("/health")
    conn.close()


def test_after_connection_close_the_next_request_opens_a_new_connection() -> None:
    port, heads = canned([answer(b"{}", "429 Too Many Requests", b"connection: close\r\n"), answer(b"[]")])
    conn = serve.Connection(port, timeout=5)
    assert conn.get("/a") == (429, b"{}")
    assert conn.sock is None
    assert conn.get("/b") == (200, b"[]")
    conn.close()
    assert [head.split(b" ")[1] for head in heads] == [b"/a", b"/b"]


def test_answers_that_arrive_together_are_read_apart() -> None:
    port, _ = canned([answer(b"one"), answer(b"two"), answer(b"three")], up_front=True)
    conn = serve.Connection(port, timeout=5)
    assert [conn.get(f"/{n}") for n in range(3)] == [(200, b"one"), (200, b"two"), (200, b"three")]
    conn.close()


def test_a_server_that_is_not_there_fails_the_request_not_the_connection_object() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((serve.HOST, 0))
        port = probe.getsockname()[1]
    conn = serve.Connection(port, timeout=5)  # the load loop makes these outside its error handling
    with pytest.raises(OSError):
        conn.get("/health")


def test_the_held_probe_returns_the_encoding_unchanged_and_never_sooner_than_asked() -> None:
    held_serve = bench_module("_held_serve")
    calls = []

    def encode(self, texts):
        calls.append((self, texts))
        return [{"t": 1}]

    encode_held = held_serve.held(encode, 0.02)
    start = time.perf_counter()
    assert encode_held("index", ["a b"]) == [{"t": 1}]
    assert time.perf_counter() - start >= 0.02  # what the probe is for: a lower bound, not a speed
    assert calls == [("index", ["a b"])]
