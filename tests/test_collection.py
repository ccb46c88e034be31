"""The encode stage with the real model: format, manifest, resume, guards, determinism."""

import json
import shutil

import pytest

from conftest import write_lines
from pipeline import stages
from pipeline.collection import load_manifest
from pipeline.encoder import SpladeEncoder
from pipeline.errors import ConsistencyError, InputError

DOCS = [{"_id": f"doc{i:02d}", "title": f"Title {i}", "text": f"Passage number {i} about tides and coral reefs."}
        for i in range(11)]
DOCS[4]["title"], DOCS[4]["text"] = "", "   "  # an empty document


@pytest.fixture()
def corpus(tmp_path):
    return write_lines(tmp_path / "corpus.jsonl", [json.dumps(d) for d in DOCS])


def encode(corpus, output, **options):
    options.setdefault("shard_size", 4)
    return stages.encode(corpus, output, progress=False, say=lambda text: None, **options)


def read_vectors(folder):
    return [json.loads(line) for path in sorted((folder / "vectors").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_writes_json_vector_collection_and_manifest(tmp_path, corpus, encoder):
    folder = tmp_path / "collections" / "toy"
    manifest = encode(corpus, folder)
    assert sorted(p.name for p in (folder / "vectors").iterdir()) == ["part-00000.jsonl", "part-00001.jsonl",
                                                                      "part-00002.jsonl"]
    records = read_vectors(folder)
    assert [r["id"] for r in records] == [d["_id"] for d in DOCS]
    expected = encoder.to_terms(encoder.encode(["Title 0 Passage number 0 about tides and coral reefs."])[0], 100)
    assert records[0]["contents"] == "Title 0 Passage number 0 about tides and coral reefs."
    assert records[0]["vector"] == expected and all(isinstance(v, int) and v > 0 for v in expected.values())
    assert records[4] == {"id": "doc04", "contents": "", "vector": {}}
    assert manifest["documents"] == 11 and manifest["empty_documents"] == 1
    settings = manifest["settings"]
    assert settings["encoder"]["name"] == "splade-tiny" and settings["scale"] == 100
    assert (settings["pooling"], settings["max_length"], settings["batch_size"], settings["shard_size"]) == \
        ("max", 512, 32, 4)
    lengths = [len(r["vector"]) for r in records]
    assert manifest["postings"] == {"total": sum(lengths), "mean_per_doc": round(sum(lengths) / 11, 2),
                                    "max_per_doc": max(lengths)}
    assert load_manifest(folder) == manifest


def test_rerun_is_a_no_op_and_other_settings_are_refused(tmp_path, corpus):
    folder = tmp_path / "toy"
    first = encode(corpus, folder)
    said = []
    again = stages.encode(corpus, folder, shard_size=4, progress=False, say=said.append)
    assert again == first and "already encoded" in said[0]
    with pytest.raises(ConsistencyError, match=r"scale 100 -> 50"):
        encode(corpus, folder, scale=50)
    with pytest.raises(ConsistencyError, match=r"shard_size 4 -> 5"):
        encode(corpus, folder, shard_size=5)
    assert encode(corpus, folder, scale=50, overwrite=True)["settings"]["scale"] == 50


def test_resume_encodes_only_missing_shards_byte_identically(tmp_path, corpus, monkeypatch):
    folder = tmp_path / "toy"
    encode(corpus, folder)
    before = {p.name: p.read_bytes() for p in (folder / "vectors").iterdir()}
    (folder / "manifest.json").unlink()
    (folder / "shards" / "part-00001.json").unlink()
    (folder / "vectors" / "part-00002.jsonl").unlink()
    encoded = []
    original = SpladeEncoder.encode

    def counting(self, texts, *args, **kwargs):
        encoded.extend(texts)
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(SpladeEncoder, "encode", counting)
    manifest = encode(corpus, folder)
    assert len(encoded) == 4 + 3 - 1  # shards 1 and 2; the empty document is not encoded
    assert {p.name: p.read_bytes() for p in (folder / "vectors").iterdir()} == before
    assert manifest["documents"] == 11


def test_same_input_gives_byte_identical_files(tmp_path, corpus):
    a, b = tmp_path / "a", tmp_path / "b"
    encode(corpus, a)
    encode(corpus, b, shard_size=4)
    for path in (a / "vectors").iterdir():
        assert path.read_bytes() == (b / "vectors" / path.name).read_bytes()


def test_duplicate_ids_stop_before_any_output(tmp_path):
    lines = [json.dumps(d) for d in DOCS[:3]] + [json.dumps({"_id": "doc01", "text": "again"})]
    corpus = write_lines(tmp_path / "corpus.jsonl", lines)
    folder = tmp_path / "dup"
    with pytest.raises(InputError, match=r"corpus.jsonl:4: duplicate document id 'doc01' \(first at line 2\)"):
        encode(corpus, folder)
    assert not (folder / "manifest.json").exists() and not (folder / "vectors").exists()


def test_bad_line_stops_before_any_encoding(tmp_path):
    corpus = write_lines(tmp_path / "corpus.jsonl", [json.dumps(DOCS[0]), '{"_id": "x"}'])
    with pytest.raises(InputError, match=r"corpus.jsonl:2: missing 'text' field"):
        encode(corpus, tmp_path / "bad")
    assert not (tmp_path / "bad" / "vectors").exists()


def test_option_checks(tmp_path, corpus):
    with pytest.raises(stages.PipelineError, match="--scale must be positive"):
        encode(corpus, tmp_path / "x", scale=0)
    with pytest.raises(stages.PipelineError, match="exceeds what splade-tiny supports"):
        encode(corpus, tmp_path / "y", max_length=1024)
    shutil.rmtree(tmp_path / "y", ignore_errors=True)


def test_corpus_folder_spanning_shards(tmp_path, encoder):
    folder = tmp_path / "jsoncollection"
    for part in range(3):
        write_lines(folder / f"docs{part:02d}.jsonl",
                    [json.dumps({"id": f"p{part}d{i}", "contents": f"passage {i} of file {part}"}) for i in range(3)])
    manifest = encode(folder, tmp_path / "out", shard_size=4)
    records = read_vectors(tmp_path / "out")
    assert [r["id"] for r in records] == [f"p{p}d{i}" for p in range(3) for i in range(3)]
    assert manifest["documents"] == 9 and len(manifest["shards"]) == 3
    assert records[5]["vector"] == encoder.to_terms(encoder.encode(["passage 2 of file 1"])[0], 100)


def test_overwrite_removes_only_what_encode_wrote(tmp_path, corpus):
    folder = tmp_path / "toy"
    encode(corpus, folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(stages.PipelineError, match=r"holds files splade-pipeline did not write \(notes.txt\)"):
        encode(corpus, folder, scale=50, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "manifest.json").is_file()
    (folder / "notes.txt").unlink()
    assert encode(corpus, folder, scale=50, overwrite=True)["settings"]["scale"] == 50


@pytest.mark.parametrize("layout", [{"notes.txt": "mine"}, {"vectors/part-00000.jsonl": "not ours"},
                                    {"plan.json": '{"my": "plan"}'}])
def test_a_folder_encode_did_not_write_is_refused_even_with_overwrite(tmp_path, corpus, layout):
    folder = tmp_path / "mine"
    for name, text in layout.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    for overwrite in (False, True):
        with pytest.raises(stages.PipelineError, match="did not write"):
            encode(corpus, folder, overwrite=overwrite)
    assert {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()} == layout


def test_empty_folder_is_used_and_no_lock_is_left(tmp_path, corpus):
    folder = tmp_path / "empty"
    folder.mkdir()
    encode(corpus, folder)
    assert (folder / "manifest.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "empty"]


def test_a_scale_that_empties_every_vector_is_refused_before_a_manifest(tmp_path, corpus):
    with pytest.raises(stages.PipelineError, match=r"--scale 1e-06 leaves every vector of shard 0 empty"):
        encode(corpus, tmp_path / "tiny", scale=1e-6)
    assert not (tmp_path / "tiny" / "manifest.json").exists() and not list((tmp_path / "tiny").glob("vectors/*"))


def test_documents_whose_weights_all_round_to_zero_are_counted_and_indexable(tmp_path, encoder):
    """A scale that empties only some vectors: the manifest counts them, and the index stage agrees."""
    texts = ["coral", "the"]  # largest weights about 2.8 and 1.6
    weights = [max(encoder.to_terms(v, 1e6).values()) / 1e6 for v in encoder.encode(texts)]
    scale = 0.45 / min(weights)  # "the" rounds to nothing, "coral" keeps its top term
    assert max(weights) * scale >= 0.5
    lines = [json.dumps({"_id": f"d{i}", "text": t}) for i, t in enumerate(texts)]
    manifest = encode(write_lines(tmp_path / "c.jsonl", lines), tmp_path / "c", scale=scale, shard_size=10)
    record = stages.index(tmp_path / "c", tmp_path / "i", say=lambda text: None)
    assert manifest["empty_documents"] + manifest["empty_vectors"] == record["counters"]["empty"]
