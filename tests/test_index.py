"""The index stage through Anserini's IndexCollection, checked against Lucene and the manifest."""

import json

import pytest

from conftest import write_lines
from pipeline import stages
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.index import build_lucene_index, impact_arguments, lucene_document_count, parse_counters

QUIET = {"say": lambda text: None}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    docs = [{"_id": f"d{i}", "text": f"coral reef number {i} and ocean tides"} for i in range(9)]
    docs.append({"_id": "empty", "text": ""})
    corpus = write_lines(root / "corpus.jsonl", [json.dumps(d) for d in docs])
    folder = root / "collections" / "toy"
    stages.encode(corpus, folder, shard_size=3, progress=False, **QUIET)
    return folder


def test_index_holds_every_non_empty_document(tmp_path, collection):
    index = tmp_path / "indexes" / "toy"
    record = stages.index(collection, index, threads=2, **QUIET)
    assert record["counters"] == {"indexed": 9, "unindexable": 0, "empty": 1, "skipped": 0, "errors": 0}
    assert lucene_document_count(index) == record["documents"] == 9
    saved = json.loads((index / "splade-pipeline.json").read_text())
    assert saved["encoder"]["name"] == "splade-tiny" and saved["scale"] == 100 and saved["pooling"] == "max"
    assert not list(index.parent.glob(".toy.building-*"))


def test_rerun_is_a_no_op_and_overwrite_rebuilds(tmp_path, collection):
    index = tmp_path / "toy"
    stages.index(collection, index, **QUIET)
    said = []
    stages.index(collection, index, say=said.append)
    assert "already indexed" in said[0]
    said.clear()
    stages.index(collection, index, overwrite=True, say=said.append)
    assert said[0].startswith(f"{index}: indexed: indexed 9")


def test_asking_to_store_documents_in_an_index_built_without_is_refused_not_ignored(tmp_path, collection):
    index = tmp_path / "toy"
    stages.index(collection, index, **QUIET)
    with pytest.raises(ConsistencyError, match="built without --store-raw.*--overwrite"):
        stages.index(collection, index, store_raw=True, **QUIET)
    record = stages.index(collection, index, store_raw=True, overwrite=True, **QUIET)
    assert record["texts"]["documents"] == 9  # the empty document is not in Lucene, nor in the store
    assert "already indexed" in _said(lambda say: stages.index(collection, index, store_raw=True, say=say))
    assert "already indexed" in _said(lambda say: stages.index(collection, index, say=say))  # more than asked


def _said(call) -> str:
    said: list[str] = []
    call(said.append)
    return said[0]


def test_foreign_folder_is_not_overwritten(tmp_path, collection):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(PipelineError, match=r"taken holds files splade-pipeline did not write \(notes.txt\)"):
            stages.index(collection, target, overwrite=overwrite, **QUIET)
    assert (target / "notes.txt").read_text() == "mine"


def test_our_index_with_a_stranger_inside_is_not_replaced(tmp_path, collection):
    index = tmp_path / "idx"
    stages.index(collection, index, **QUIET)
    (index / "notes.txt").write_text("mine")
    with pytest.raises(PipelineError, match=r"did not write \(notes.txt\)"):
        stages.index(collection, index, overwrite=True, **QUIET)
    assert (index / "notes.txt").read_text() == "mine" and (index / "splade-pipeline.json").is_file()


def test_empty_folder_is_used_and_stale_builds_are_cleaned(tmp_path, collection):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".idx.building-{dead.pid}"
    (stale / "x").mkdir(parents=True)
    (tmp_path / "idx").mkdir()
    record = stages.index(collection, tmp_path / "idx", **QUIET)
    assert record["documents"] == 9 and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no lock or temporary folder left


def test_plain_json_vector_collection_from_elsewhere(tmp_path):
    folder = tmp_path / "pyserini-made"
    write_lines(folder / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 120, "reef": 30}}',
                                        '{"id": "b", "contents": "y", "vector": {"tide": 7}}'])
    record = stages.index(folder, tmp_path / "idx", **QUIET)
    assert record["documents"] == 2 and "encoder" not in record


def test_storing_documents_with_a_duplicate_id_names_both_lines_and_leaves_no_index(tmp_path):
    folder = tmp_path / "pyserini-made"
    write_lines(folder / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 120}}',
                                        '{"id": "b", "contents": "", "vector": {"reef": 0}}',
                                        '{"id": "b", "contents": "y", "vector": {"tide": 7}}',
                                        '{"id": "b", "contents": "z", "vector": {"tide": 8}}'])
    with pytest.raises(InputError, match=r"docs.jsonl:4: duplicate document id 'b' \(first at docs.jsonl line 3\)"):
        stages.index(folder, tmp_path / "idx", store_raw=True, **QUIET)
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx.building-*"))


def test_unfinished_or_missing_collection_is_refused(tmp_path, collection):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "plan.json").write_text((collection / "plan.json").read_text())
    with pytest.raises(PipelineError, match="encoding is unfinished"):
        stages.index(partial, tmp_path / "idx", **QUIET)
    with pytest.raises(InputError, match="no such collection folder"):
        stages.index(tmp_path / "absent", tmp_path / "idx", **QUIET)


def test_indexer_failure_leaves_no_index(tmp_path):
    folder = tmp_path / "broken"
    write_lines(folder / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 1}}', "{not json"])
    with pytest.raises(InputError, match=r"docs.jsonl:2: invalid JSON"):  # found before Anserini runs
        stages.index(folder, tmp_path / "idx", **QUIET)
    # Anserini's own failure on the same file: its log names no line, the message does
    with pytest.raises(InputError, match=r"docs.jsonl:2: invalid JSON .*Anserini IndexCollection failed"):
        build_lucene_index(folder, tmp_path / "idx", impact_arguments(1, False), (2, None), folder, False, {})
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx*"))


def test_records_anserini_would_silently_skip_are_errors(tmp_path):
    folder = tmp_path / "odd"
    write_lines(folder / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 1}}',
                                        '{"id": "b", "contents": "y", "vector": {"tide": "seven"}}'])
    with pytest.raises(InputError, match=r"docs.jsonl:2: weight of 'tide' in document 'b' is not a number"):
        stages.index(folder, tmp_path / "idx", **QUIET)


def test_parse_counters():
    log = "x - indexed:              5,183\nx - unindexable: 0\nx - empty: 2\nx - skipped: 0\nx - errors: 0\n"
    assert parse_counters(log) == {"indexed": 5183, "unindexable": 0, "empty": 2, "skipped": 0, "errors": 0}
