"""The text store: records without vectors, found by id, exactly the documents Lucene holds."""

from __future__ import annotations

import json

import pytest

from pipeline import texts
from pipeline.demo import collection_vectors
from pipeline.errors import DuplicateId, InputError
from pipeline.index import load_record
from pipeline.search import ImpactSearcher


def _write(folder, records):
    store = texts.write_store(folder / texts.FOLDER, records)
    return store, texts.TextStore(folder)


def test_records_come_back_without_their_vectors_and_unknown_ids_as_none(tmp_path):
    records = [{"id": "b", "contents": "second", "vector": {"x": 2}},
               {"id": "a", "contents": "first ünïcode", "title": "T", "vector": {"x": 1, "y": 3}},
               {"id": "empty", "contents": "no weight", "vector": {"x": 0}},  # Anserini leaves it out
               {"id": "odd\ud800", "contents": "lone surrogate \udfff", "big": 2 ** 70, "vector": {"z": 1}}]
    store, opened = _write(tmp_path, records)
    assert store["documents"] == 3 and opened.documents == 3
    found = opened.raw_many(["a", "missing", "b", "odd\ud800", "empty", "a" * 500])
    assert [None if raw is None else json.loads(raw) for raw in found] == [
        {"id": "a", "contents": "first ünïcode", "title": "T"}, None, {"id": "b", "contents": "second"},
        {"id": "odd\ud800", "contents": "lone surrogate \udfff", "big": 2 ** 70}, None, None]


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(DuplicateId, match="duplicate document id 'a'"):
        texts.write_store(tmp_path / texts.FOLDER, [{"id": "a", "vector": {"x": 1}}, {"id": "a", "vector": {"y": 1}}])


def test_a_changed_store_is_refused_at_open(tmp_path):
    _write(tmp_path, [{"id": "a", "contents": "first", "vector": {"x": 1}}])
    data = tmp_path / texts.FOLDER / "data.bin"
    data.write_bytes(data.read_bytes().replace(b"first", b"forst"))
    with pytest.raises(InputError, match="data.bin.*sha256 differs from texts.json"):
        texts.TextStore(tmp_path)


def test_the_index_stage_writes_the_lucene_documents_and_the_record_names_the_store(demo_indexes):
    index = demo_indexes["demo"]
    record = load_record(index)
    assert record[texts.FOLDER]["documents"] == record["documents"] == 40
    store = texts.open_store(index, record)
    searcher = ImpactSearcher(index)
    try:
        ids = sorted(collection_vectors(demo_indexes["collection"]))
        from_lucene = [texts.without_vector(json.loads(raw)) for raw in searcher.raw_many(ids)]
    finally:
        searcher.close()
    assert [json.loads(raw) for raw in store.raw_many(ids)] == from_lucene
    assert texts.open_store(demo_indexes["bare"], load_record(demo_indexes["bare"])) is None


def test_a_store_that_is_not_the_one_built_with_the_index_is_refused(tmp_path):
    _write(tmp_path, [{"id": "a", "contents": "first", "vector": {"x": 1}}])
    with pytest.raises(InputError, match="not the text store built with this index"):
        texts.open_store(tmp_path, {texts.FOLDER: {"sha256": "0" * 64}})


def test_a_page_of_hits_is_read_from_the_store_and_a_document_with_its_vector_from_lucene(demo_indexes, monkeypatch):
    from pipeline.service.backend import ServedIndex, WarmSearcher

    index = demo_indexes["demo"]
    record = load_record(index)
    searcher = WarmSearcher(index)
    served = ServedIndex("demo", searcher, None, record, True, texts=texts.open_store(index, record))
    try:
        ids = sorted(collection_vectors(demo_indexes["collection"]))[:10]
        with_vectors = served.stored_many(ids, vectors=True)
        assert all(isinstance(doc["vector"], dict) for doc in with_vectors)
        monkeypatch.setattr(searcher, "raw_many", lambda docids: pytest.fail("a page of text read Lucene"))
        assert served.stored_many(ids) == [texts.without_vector(doc) for doc in with_vectors]
    finally:
        searcher.close()
