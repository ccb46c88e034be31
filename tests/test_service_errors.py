"""A failure inside the service: logged on the server under a request id; the client gets only the id."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipeline.service import create_app

SECRET = "/srv/private/model.bin: CUDA out of memory"


class BrokenIndex:
    """A served index whose encoder fails, as a real one might (the message names a private path)."""

    def encode(self, texts):
        raise RuntimeError(SECRET)


@pytest.fixture()
def client():
    app = create_app({"broken": Path("unused")}, served={"broken": BrokenIndex()})
    with TestClient(app, raise_server_exceptions=False) as session:
        yield session


def test_500_names_a_request_id_not_the_exception(client, caplog):
    with caplog.at_level(logging.ERROR, logger="pipeline.service"):
        response = client.get("/v1/broken/search", params={"query": "anything"})
    assert response.status_code == 500
    body = response.json()
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 16 and body == {
        "error": f"internal error; the server logged it as request {request_id}", "field": None, "status": 500,
        "request_id": request_id}
    assert "RuntimeError" not in response.text and "private" not in response.text
    (record,) = [r for r in caplog.records if r.name == "pipeline.service"]
    assert request_id in record.getMessage() and "GET /v1/broken/search" in record.getMessage()
    assert record.exc_info[0] is RuntimeError and str(record.exc_info[1]) == SECRET


def test_each_failure_gets_its_own_id_and_refusals_carry_none(client):
    first = client.get("/v1/broken/search", params={"query": "a"}).headers["x-request-id"]
    second = client.get("/v1/broken/search", params={"query": "b"}).headers["x-request-id"]
    assert first != second
    refused = client.get("/v1/nosuch/search", params={"query": "a"})
    assert refused.status_code == 404 and "request_id" not in refused.json()
    assert "x-request-id" not in refused.headers
