"""Limits in front of the application: encodings, body size and time, requests in flight.

Every refusal is a small JSON body ``{"error": "FIELD: what is wrong", "field": FIELD}`` with a 4xx
status, sent before the application sees the request, so no bad input reaches a handler or leaves
work behind. ``GuardedH11Protocol`` adds what uvicorn lacks below the ASGI layer: a deadline for
the request head (a client that connects and stalls is answered 408 and closed) and JSON instead
of plain text for malformed HTTP.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class Limits:
    """Request limits; every one is enforced with a 4xx naming the field."""

    max_query_chars: int = 4096  # longer texts are truncated by the encoder anyway
    max_hits: int = 10_000
    max_batch: int = 1000  # queries per POST
    max_batch_hits: int = 100_000  # queries x hits per POST
    max_terms: int = 4096  # terms of a pre-encoded query
    max_term_chars: int = 256
    max_weight: int = 1_000_000
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0  # the whole body must arrive within this
    max_in_flight: int = 64  # requests being handled at once; more get 429
    max_connections: int = 512  # uvicorn's limit_concurrency, a backstop
    keep_alive_s: int = 5  # idle keep-alive, and the deadline for a request head
    max_head_bytes: int = 128 * 1024  # request line and headers: room for a 100 kB query to be refused by name


def error_body(status: int, field: str | None, message: str, request_id: str | None = None) -> bytes:
    """The one error body of the service (the guard's refusals and the application's errors alike);
    a 500 adds the ``request_id`` under which the server logged what went wrong."""
    text = f"{field}: {message}" if field else message
    body: dict[str, Any] = {"error": text, "field": field, "status": status}
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body).encode()


async def send_error(send, status: int, field: str | None, message: str,
                     headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = error_body(status, field, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def undecodable(scope: dict[str, Any]) -> tuple[str, str] | None:
    """The first path or query parameter whose percent-decoded bytes are not UTF-8: (field, message)."""
    try:
        unquote_to_bytes(scope.get("raw_path") or b"").decode("utf-8")
    except UnicodeDecodeError:
        return "path", "not valid UTF-8 after percent-decoding"
    for part in (scope.get("query_string") or b"").split(b"&"):
        name, _, value = part.partition(b"=")
        try:
            unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return unquote_to_bytes(name).decode("utf-8", "replace") or "query string", "not valid UTF-8"
    return None


class Refused(Exception):
    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


class Guard:
    """ASGI middleware: checks encodings, reads the body under size and time limits, caps concurrency."""

    def __init__(self, app, limits: Limits):
        self.app = app
        self.limits = limits
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = undecodable(scope)
        if problem:
            return await send_error(send, 400, *problem)
        # The body is read before a slot is taken: a client that sends slowly waits on its own deadline
        # (body_timeout_s) without holding one of the max_in_flight slots that searches need.
        try:
            body = await self._body(scope, receive)
        except Refused as refused:
            return await send_error(send, refused.status, refused.field, refused.message,
                                    [(b"connection", b"close")])
        if self.in_flight >= self.limits.max_in_flight:
            return await send_error(send, 429, None, f"{self.in_flight} requests in flight; retry shortly",
                                    [(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.in_flight -= 1

    async def _body(self, scope, receive) -> bytes:
        limit = self.limits.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise Refused(413, "body", f"{int(value):,} bytes; at most {limit:,}")
        chunks, size, more = [], 0, True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                raise Refused(408, "body", f"not received within {self.limits.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                raise Refused(400, "body", "client disconnected before sending it")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refused(413, "body", f"more than {limit:,} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Refused(400, "body", f"not valid UTF-8 (byte {exc.start})") from None
        return body


def _replay(body: bytes, receive):
    """A ``receive`` that hands the already-read body to the application once, then waits as usual."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def raw_response(status: int, reason: str, field: str | None, message: str) -> bytes:
    body = error_body(status, field, message)
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for the request head and JSON for malformed HTTP.

    uvicorn times out idle keep-alive connections only after a response; a client that connects
    and sends nothing, or half a request line, would hold its connection forever. Here the head
    must be complete within the keep-alive timeout, or the client gets 408 and is disconnected.
    """

    _head_timer: asyncio.TimerHandle | None = None
    _hanging_up = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._hanging_up:  # the answer is sent; what the client still sends is dropped
            return
        super().data_received(data)
        if not self._hanging_up and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.conn.trailing_data[0]:  # part of a request arrived: say why we hang up
                self._hang_up(raw_response(408, "Request Timeout", "request",
                                           f"head not received within {self.timeout_keep_alive} s"))
            else:
                self.transport.close()

    def _hang_up(self, response: bytes) -> None:
        """Send ``response`` and close; reading on for a moment, so that a client still sending gets
        the answer instead of a connection reset."""
        self._hanging_up = True
        self._cancel_head_timer()
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size
        if limit and len(self.conn.trailing_data[0]) >= limit:
            message = f"head larger than {limit:,} bytes"
        else:
            message = f"malformed HTTP ({msg.rstrip('.')})"
        self._hang_up(raw_response(400, "Bad Request", "request", message))
