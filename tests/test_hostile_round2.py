"""Hostile input, second round (issue 22): the named cases, then a sweep of every surface.

Same contract as tests/test_hostile.py: each refused case asserts the exit status, exactly one
stderr line naming the file, line, option or request field, no traceback, nothing on stdout, and
(where files are at stake) the folder's files and their hashes unchanged. The CLI runs in-process;
one tiny collection, index and run are built once for the module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import cli, refused
from pipeline import outputs, stages

QUIET = {"say": lambda text: None}
DOCS = {f"d{i}": f"coral reef number {i} with ocean tides and fish" for i in range(1, 7)}
DOCS["d3"] = "tides follow the moon"


# -- helpers -------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones included), files with their sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(Path(folder).rglob("*"))}


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + end for line in lines).encode("utf-8"))
    return path


def beir(docs: dict[str, str]) -> list[str]:
    return [json.dumps({"_id": key, "title": "", "text": text}) for key, text in docs.items()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A BEIR corpus and TSV topics, their collection (3 shards), index and run, built once."""
    root = tmp_path_factory.mktemp("hostile2")
    corpus = write(root / "corpus.jsonl", beir(DOCS))
    topics = write(root / "topics.tsv", ["q1\tcoral reef", "q2\tmoon tides"])
    collection, index, run = root / "collections" / "toy", root / "indexes" / "toy", root / "runs" / "run.txt"
    stages.encode(corpus, collection, shard_size=2, progress=False, **QUIET)
    stages.index(collection, index, threads=1, **QUIET)
    stages.search(index, run, topics, hits=5, progress=False, **QUIET)
    return {"root": root, "corpus": corpus, "topics": topics, "collection": collection, "index": index, "run": run}


def runs(folder: Path) -> tuple[Path, Path]:
    a = write(folder / "a.txt", ["1 Q0 x 1 3.0 a", "1 Q0 y 2 2.0 a", "2 Q0 x 1 1.0 a"])
    b = write(folder / "b.txt", ["1 Q0 y 1 9.0 b", "1 Q0 z 2 8.0 b", "2 Q0 z 1 5.0 b"])
    return a, b


# == named cases =================================================================================

# -- 1. an output path through a folder that does not exist yet -----------------------------------

def _victim_file(tmp: Path) -> Path:
    return write(tmp / "victim.txt", ["the user's own file"])


def _victim_folder(tmp: Path) -> Path:
    write(tmp / "somedir" / "notes.txt", ["the user's notes"])
    return tmp / "somedir"


THROUGH_MISSING = {
    "search": lambda w, t: (_victim_file(t), ["search", "--index", w["index"], "--topics", w["topics"],
                                              "--output", "nothere/../victim.txt", "--quiet"]),
    "fuse": lambda w, t: (_victim_file(t), ["fuse", "--runs", *runs(t), "--output", "nothere/../victim.txt"]),
    "encode": lambda w, t: (_victim_folder(t), ["encode", "--corpus", w["corpus"], "--output", "nothere/../somedir",
                                                "--quiet"]),
    "encode --overwrite": lambda w, t: (_victim_folder(t), ["encode", "--corpus", w["corpus"], "--output",
                                                            "nothere/../somedir", "--overwrite", "--quiet"]),
    "index": lambda w, t: (_victim_folder(t), ["index", "--collection", w["collection"], "--index",
                                               "nothere/../somedir", "--quiet"]),
    "train": lambda w, t: (_victim_folder(t), ["train", "--output", "nothere/../somedir", "--triples",
                                               write(t / "t.jsonl", ['{"query": "q", "positive": "p", '
                                                                     '"negative": "n"}'] * 4),
                                               "--batch-size", "2", "--quiet"]),
}


@pytest.mark.parametrize("command", sorted(THROUGH_MISSING))
def test_an_output_through_a_folder_not_made_yet_is_checked_where_it_lands(tmp_path, capsys, monkeypatch, world,
                                                                           command):
    monkeypatch.chdir(tmp_path)
    victim, argv = THROUGH_MISSING[command](world, tmp_path)
    before = snapshot(tmp_path)
    message = refused(cli(argv, capsys), victim.name)
    assert "not written by splade-pipeline" in message or "splade-pipeline did not write" in message
    assert snapshot(tmp_path) == before and not (tmp_path / "nothere").exists()


def test_a_new_output_through_a_folder_not_made_yet_is_written_where_it_lands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = runs(tmp_path)
    assert cli(["fuse", "--runs", a, b, "--output", "nothere/../fused.txt"], capsys)[0] == 0
    state, _ = outputs.file_state(tmp_path / "fused.txt", "--output")
    assert state == "ours"  # the record lies beside the file where it landed, so a rerun finds it
    code, err, _ = cli(["fuse", "--runs", a, b, "--output", "fused.txt"], capsys)
    assert code == 0 and "nothing to do" in err[0]


# -- 2. mining BM25 negatives keeps its work files to itself ---------------------------------------

def test_bm25_index_never_deletes_a_folder_named_like_its_work_folder(tmp_path):
    from pipeline.bm25 import bm25_search, build_bm25_index

    mine = write(tmp_path / ".bm25-index.collection" / "mine.txt", ["the user's file"]).parent
    corpus = write(tmp_path / "corpus.jsonl", beir(DOCS))
    before = snapshot(mine)
    build_bm25_index(corpus, tmp_path / "bm25-index")
    assert snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bm25-index.collection", "bm25-index", "corpus.jsonl"]
    assert bm25_search(tmp_path / "bm25-index", {"q": "moon"}, 3)["q"][0][0] == "d3"


def test_bm25_index_is_rebuilt_for_a_corpus_edited_in_place(tmp_path):
    from pipeline.bm25 import bm25_search, build_bm25_index

    corpus = write(tmp_path / "corpus.jsonl", beir(DOCS))
    build_bm25_index(corpus, tmp_path / "bm25-index")
    write(corpus, beir({**DOCS, "d5": "a lighthouse on the cliff"}))
    build_bm25_index(corpus, tmp_path / "bm25-index")
    assert bm25_search(tmp_path / "bm25-index", {"q": "lighthouse"}, 3)["q"][0][0] == "d5"


@pytest.mark.slow
def test_train_mining_writes_nothing_beside_its_output(tmp_path, capsys):
    from pipeline.demo import DEMO_DATA

    parent = tmp_path / "models"
    write(parent / ".bm25-index.collection" / "mine.txt", ["the user's file"])
    write(parent / "bm25-index" / "notes.txt", ["another of the user's files"])
    before = snapshot(parent)
    code, err, _ = cli(["train", "--output", parent / "model", "--queries", DEMO_DATA / "queries.jsonl",
                        "--qrels", DEMO_DATA / "qrels" / "test.tsv", "--corpus", DEMO_DATA / "corpus.jsonl",
                        "--max-steps", "1", "--batch-size", "4", "--save-steps", "1", "--quiet"], capsys)
    assert code == 0, err
    after = snapshot(parent)
    assert {k: v for k, v in after.items() if not k.startswith("model")} == before
    assert (parent / "model" / "training.json").is_file()


# -- 3. one rule for run tags -----------------------------------------------------------------------

BAD_TAGS = {"space": "my run", "tab": "my\trun", "empty": "", "newline": "run\n", "no-break space": "my\u00a0run",
            "line separator": "a\u2028b", "NUL": "a\x00b"}


@pytest.mark.parametrize("name", sorted(BAD_TAGS))
def test_search_refuses_a_run_tag_that_evaluate_cannot_read(tmp_path, capsys, world, name):
    refused(cli(["search", "--index", world["index"], "--topics", world["topics"], "--output",
                 tmp_path / "run.txt", "--run-tag", BAD_TAGS[name], "--quiet"], capsys), "--run-tag")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["space", "empty", "line separator"])
def test_fuse_refuses_a_run_tag_that_evaluate_cannot_read(tmp_path, capsys, name):
    a, b = runs(tmp_path)
    before = snapshot(tmp_path)
    refused(cli(["fuse", "--runs", a, b, "--output", tmp_path / "f.txt", "--run-tag", BAD_TAGS[name]], capsys),
            "--run-tag")
    assert snapshot(tmp_path) == before


def test_every_tag_search_accepts_evaluates(tmp_path, capsys, world):
    run = tmp_path / "run.txt"
    qrels = write(tmp_path / "qrels.txt", ["q1 0 d1 1", "q2 0 d3 1"])
    assert cli(["search", "--index", world["index"], "--topics", world["topics"], "--output", run,
                "--run-tag", "my-run_v2.1+é", "--hits", "3", "--quiet"], capsys)[0] == 0
    code, err, out = cli(["evaluate", "--run", run, "--qrels", qrels], capsys)
    assert code == 0 and "nDCG@10" in out, err


# -- 4. a corpus edited in place, size and modification time kept ------------------------------------

def test_a_corpus_edited_keeping_size_and_mtime_is_not_taken_for_the_old_one(tmp_path, capsys, world):
    corpus = write(tmp_path / "corpus.jsonl", beir(DOCS))
    out = tmp_path / "coll"
    assert cli(["encode", "--corpus", corpus, "--output", out, "--shard-size", "2", "--quiet"], capsys)[0] == 0
    stat = corpus.stat()
    data = corpus.read_bytes()
    corpus.write_bytes(data.replace(b"tides follow the moon", b"waves follow the moon"))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corpus.stat().st_size == stat.st_size and corpus.stat().st_mtime_ns == stat.st_mtime_ns
    before = snapshot(out)
    refused(cli(["encode", "--corpus", corpus, "--output", out, "--shard-size", "2", "--quiet"], capsys),
            str(out), "corpus file changed")
    assert snapshot(out) == before
    assert cli(["encode", "--corpus", corpus, "--output", out, "--shard-size", "2", "--overwrite", "--quiet"],
               capsys)[0] == 0
    assert "waves" in (out / "vectors" / "part-00001.jsonl").read_text()


def test_a_corpus_touched_without_change_is_still_the_same(tmp_path, capsys):
    corpus = write(tmp_path / "corpus.jsonl", beir(DOCS))
    out = tmp_path / "coll"
    assert cli(["encode", "--corpus", corpus, "--output", out, "--shard-size", "2", "--quiet"], capsys)[0] == 0
    os.utime(corpus, ns=(1, 1))
    code, err, _ = cli(["encode", "--corpus", corpus, "--output", out, "--shard-size", "2", "--quiet"], capsys)
    assert code == 0 and "already encoded" in err[0]


# -- 5. an id longer than Lucene accepts ------------------------------------------------------------

@pytest.mark.parametrize("size, fmt", [(32_767, "jsonl"), (40_000, "tsv"), (16_384, "jsonl")])
def test_an_id_longer_than_lucene_accepts_is_refused_at_encode(tmp_path, capsys, size, fmt):
    long_id = "é" * (size // 2) + "x" * (size % 2)  # two bytes a character in UTF-8
    docs = {"a": "coral reef", long_id: "ocean tides"}
    lines = beir(docs) if fmt == "jsonl" else [f"{k}\t{v}" for k, v in docs.items()]
    corpus = write(tmp_path / f"corpus.{fmt}", lines)
    out = tmp_path / "coll"
    if size <= 32_766:  # at the limit: encoded and indexed
        assert cli(["encode", "--corpus", corpus, "--output", out, "--quiet"], capsys)[0] == 0
        return
    refused(cli(["encode", "--corpus", corpus, "--output", out, "--quiet"], capsys),
            f"{corpus}:2:", "longer than Lucene's limit of 32,766 bytes")
    assert not (out / "manifest.json").exists() and not (out / "vectors").exists()


def test_an_overlong_id_in_a_collection_made_elsewhere_is_named_before_indexing(tmp_path, capsys):
    coll = write(tmp_path / "coll" / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 3}}',
                                                    json.dumps({"id": "b" * 40_000, "contents": "y",
                                                                "vector": {"reef": 2}})]).parent
    refused(cli(["index", "--collection", coll, "--index", tmp_path / "idx", "--quiet"], capsys),
            "docs.jsonl:2:", "32,766")
    assert not (tmp_path / "idx").exists()


# -- 6. a shard file deleted after a finished encode ------------------------------------------------

def test_a_deleted_shard_is_rebuilt_on_rerun(tmp_path, capsys, world):
    out = tmp_path / "coll"
    argv = ["encode", "--corpus", world["corpus"], "--output", out, "--shard-size", "2", "--quiet"]
    assert cli(argv, capsys)[0] == 0
    before = snapshot(out)
    (out / "vectors" / "part-00001.jsonl").unlink()
    code, err, _ = cli(argv, capsys)
    assert code == 0 and "encoded:" in err[0] and "already" not in err[0], err
    assert snapshot(out) == before  # the same bytes again, and the manifest back
    assert cli(["index", "--collection", out, "--index", tmp_path / "idx", "--quiet"], capsys)[0] == 0


def test_a_shard_changed_after_a_finished_encode_is_reported_on_rerun(tmp_path, capsys, world):
    out = tmp_path / "coll"
    argv = ["encode", "--corpus", world["corpus"], "--output", out, "--shard-size", "2", "--quiet"]
    assert cli(argv, capsys)[0] == 0
    shard = out / "vectors" / "part-00002.jsonl"
    shard.write_text(shard.read_text().replace('"coral"', '"koral"'))
    before = snapshot(out)
    refused(cli(argv, capsys), "part-00002.jsonl", "changed since it was encoded")
    assert snapshot(out) == before


def test_a_truncated_shard_of_an_unfinished_encode_is_encoded_again(tmp_path, capsys, world):
    out = tmp_path / "coll"
    argv = ["encode", "--corpus", world["corpus"], "--output", out, "--shard-size", "2", "--quiet"]
    assert cli(argv, capsys)[0] == 0
    before = snapshot(out)
    (out / "manifest.json").unlink()  # as if killed before finishing
    shard = out / "vectors" / "part-00000.jsonl"
    shard.write_bytes(shard.read_bytes()[:40])
    assert cli(argv, capsys)[0] == 0
    assert snapshot(out) == before


# == the sweep ===================================================================================

# -- 7. text inputs: what JSON can carry that UTF-8 cannot, NUL, line ends, headers ------------------

TEXT_CASES = {  # name: (file name, bytes, command, what the one line must name)
    "corpus: lone surrogate in text": ("corpus.jsonl", b'{"_id": "a", "text": "x\\ud800y"}\n', "encode",
                                       ":1: field 'text' holds a lone surrogate"),
    "corpus: lone surrogate in id": ("corpus.jsonl", b'{"_id": "ok", "text": "x"}\n{"_id": "\\udfff", "text": "y"}\n',
                                     "encode", ":2: field '_id' holds a lone surrogate"),
    "corpus: NUL in a TSV id": ("collection.tsv", b"a\x00b\tcoral\n", "encode", ":1: document id 'a\\x00b' contains a "
                                                                               "control character"),
    "corpus: NUL escape in a JSON id": ("corpus.jsonl", b'{"_id": "a\\u0000", "text": "x"}\n', "encode",
                                        ":1: document id 'a\\x00' contains a control character"),
    "corpus: CR-only line ends": ("collection.tsv", b"a\tcoral reef\rb\tmoon tides\r", "encode",
                                  ":1: carriage return (CR) inside the line"),
    "corpus: TSV header line": ("collection.tsv", b"id\ttext\na\tcoral reef\n", "encode",
                                ":1: looks like a header line"),
    "topics: lone surrogate": ("queries.jsonl", b'{"_id": "q1", "text": "moon \\ud83d"}\n', "search",
                               ":1: field 'text' holds a lone surrogate"),
    "topics: CR-only line ends": ("topics.tsv", b"q1\tcoral\rq2\tmoon\r", "search", ":1: carriage return"),
    "topics: TSV header line": ("topics.tsv", b"qid\tquery\nq1\tcoral\n", "search", ":1: looks like a header line"),
    "topics: no-break space in an id": ("topics.tsv", "q\u00a01\tcoral\n".encode(), "search",
                                        ":1: query id 'q\\xa01' contains whitespace"),
    "triples: lone surrogate": ("triples.jsonl", b'{"query": "q\\udc00", "positive": "p", "negative": "n"}\n',
                                "train", ":1: field 'query' holds a lone surrogate"),
    "encoded queries: lone surrogate in a token": ("enc.jsonl", b'{"id": "q1", "vector": {"\\ud800": 3}}\n', "search",
                                                   ":1: a key holds a lone surrogate"),
}


def _text_argv(command: str, path: Path, world, tmp: Path) -> list:
    if command == "encode":
        return ["encode", "--corpus", path, "--output", tmp / "out", "--quiet"]
    if command == "train":
        return ["train", "--triples", path, "--output", tmp / "out", "--batch-size", "1", "--quiet"]
    option = "--encoded-queries" if path.name.startswith("enc") else "--topics"
    return ["search", "--index", world["index"], option, path, "--output", tmp / "out" / "run.txt", "--quiet"]


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_text_that_no_later_stage_could_write_is_refused_by_line(tmp_path, capsys, world, case):
    name, data, command, needle = TEXT_CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    refused(cli(_text_argv(command, path, world, tmp_path), capsys), str(path) + needle)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json*"))


def test_crlf_and_unicode_line_separators_inside_text_keep_every_document(tmp_path, capsys):
    corpus = tmp_path / "collection.tsv"
    corpus.write_bytes("a\tcoral\u2028reef\r\nb\tmoon\u0085tides\r\nc\tocean fish\r\n".encode())
    out = tmp_path / "coll"
    assert cli(["encode", "--corpus", corpus, "--output", out, "--quiet"], capsys)[0] == 0
    records = [json.loads(line) for line in (out / "vectors" / "part-00000.jsonl").read_bytes().split(b"\n") if line]
    assert [r["id"] for r in records] == ["a", "b", "c"] and records[0]["contents"] == "coral\u2028reef"
    assert cli(["index", "--collection", out, "--index", tmp_path / "idx", "--quiet"], capsys)[0] == 0


# -- 8. files the tool reads back: corrupt, empty, foreign but valid --------------------------------

def _copy_index(world, tmp: Path) -> Path:
    import shutil

    target = tmp / "idx"
    shutil.copytree(world["index"], target)
    return target


INDEX_RECORDS = {
    "empty": "",
    "truncated": '{"encoder": {"name": "splade-tiny"',
    "a list": "[1, 2]",
    "encoder as text": '{"encoder": "splade-tiny", "pooling": "max", "scale": 100, "max_length": 512, '
                       '"counters": {}, "documents": 6}',
    "scale NaN": None,  # filled from the real record below
}


@pytest.mark.parametrize("case", sorted(INDEX_RECORDS))
def test_a_damaged_index_record_is_named_before_search(tmp_path, capsys, world, case):
    index = _copy_index(world, tmp_path)
    record = index / "splade-pipeline.json"
    if INDEX_RECORDS[case] is None:
        value = json.loads(record.read_text())
        record.write_text(json.dumps({**value, "scale": float("nan")}))
    else:
        record.write_text(INDEX_RECORDS[case])
    refused(cli(["search", "--index", index, "--topics", world["topics"], "--output", tmp_path / "run.txt",
                 "--quiet"], capsys), str(record))
    assert not (tmp_path / "run.txt").exists()


@pytest.mark.parametrize("case", ["manifest.json empty", "manifest.json a list", "manifest.json no shards"])
def test_a_damaged_manifest_is_named_and_only_overwrite_replaces_it(tmp_path, capsys, world, case):
    import shutil

    coll = tmp_path / "coll"
    shutil.copytree(world["collection"], coll)
    manifest = coll / "manifest.json"
    manifest.write_text({"empty": "", "a list": "[]", "no shards": json.dumps(
        {**json.loads(manifest.read_text()), "shards": None})}[case.split(" ", 1)[1]])
    before = snapshot(tmp_path)
    argv = ["encode", "--corpus", world["corpus"], "--output", coll, "--shard-size", "2", "--quiet"]
    refused(cli(argv, capsys), str(manifest))
    refused(cli(["index", "--collection", coll, "--index", tmp_path / "idx", "--quiet"], capsys), str(manifest))
    assert snapshot(tmp_path) == before
    assert cli([*argv, "--overwrite"], capsys)[0] == 0  # the tool's own damaged file: replaced on request
    assert snapshot(coll) == snapshot(world["collection"])


def test_an_unfinished_collection_with_a_truncated_plan_is_left_alone(tmp_path, capsys, world):
    import shutil

    coll = tmp_path / "coll"
    shutil.copytree(world["collection"], coll)
    (coll / "manifest.json").unlink()
    (coll / "plan.json").write_text((coll / "plan.json").read_text()[:30])
    before = snapshot(tmp_path)
    for overwrite in ([], ["--overwrite"]):  # no record proves the folder ours any more: nothing is removed
        refused(cli(["encode", "--corpus", world["corpus"], "--output", coll, "--quiet", *overwrite], capsys),
                str(coll), "did not write")
        assert snapshot(tmp_path) == before


TRAIN_TRIPLE = '{"query": "coral", "positive": "coral reef", "negative": "moon tides"}'


def _train_record(output: Path, name: str, text: str) -> None:
    write(output / name, [text])


@pytest.mark.parametrize("name, text", [("training.json", '{"settings": '), ("training.json", "[]"),
                                        ("checkpoint/state.json", "{truncated"),
                                        ("checkpoint/state.json", '"a string"')])
def test_damaged_training_records_are_named(tmp_path, capsys, name, text):
    triples = write(tmp_path / "t.jsonl", [TRAIN_TRIPLE] * 4)
    out = tmp_path / "model"
    _train_record(out, name, text)
    before = snapshot(tmp_path)
    refused(cli(["train", "--triples", triples, "--output", out, "--batch-size", "2", "--quiet"], capsys),
            str(out / name))
    assert snapshot(tmp_path) == before


# -- 9. resuming with changed inputs: training ------------------------------------------------------

def _settings(batch_size: int = 2, **changes):
    from dataclasses import asdict

    from pipeline.train import TrainSettings

    return asdict(TrainSettings(batch_size=batch_size, **changes))


@pytest.mark.parametrize("record", ["finished", "resumable"])
@pytest.mark.parametrize("change", ["triples", "learning rate"])
def test_training_again_with_other_inputs_is_refused(tmp_path, capsys, record, change):
    from pipeline import models
    from pipeline.train import Triple, triples_digest

    triples = write(tmp_path / "t.jsonl", [TRAIN_TRIPLE] * 4)
    made_from = [Triple("coral", "coral reef", "moon tides")] * 4
    digest = triples_digest(made_from if change == "learning rate" else made_from[:3])
    settings = _settings(learning_rate=1e-4) if change == "learning rate" else _settings()
    base = models.resolve(None)
    out = tmp_path / "model"
    if record == "finished":
        write(out / "training.json", [json.dumps({"base_encoder": base.describe(), "settings": settings,
                                                  "triples_sha256": digest, "finished": True})])
    else:
        write(out / "checkpoint" / "state.json", [json.dumps({"settings": settings, "base": base.fingerprint,
                                                             "triples": digest})])
    before = snapshot(tmp_path)
    message = refused(cli(["train", "--triples", triples, "--output", out, "--batch-size", "2", "--quiet"], capsys),
                      "other settings or triples", "--overwrite")
    assert ("triples '" in message) == (change == "triples") and ("learning_rate" in message) != (change == "triples")
    assert snapshot(tmp_path) == before


# -- 10. numeric extremes inside data ---------------------------------------------------------------

@pytest.mark.parametrize("scores", ["[NaN, 1]", "[Infinity, 0]", "[1e400, 0]", "[true, 0]", "[1e30, -1e30]"])
def test_teacher_scores_that_break_margin_mse_are_refused_by_line(tmp_path, capsys, scores):
    triples = write(tmp_path / "t.jsonl", [TRAIN_TRIPLE[:-1] + ', "scores": [1, 0]}',
                                           TRAIN_TRIPLE[:-1] + f', "scores": {scores}}}'])
    refused(cli(["train", "--triples", triples, "--output", tmp_path / "model", "--loss", "margin-mse",
                 "--batch-size", "1", "--quiet"], capsys), f"{triples}:2:", "'scores'")
    assert not (tmp_path / "model").exists()


def test_a_grade_beyond_a_c_integer_is_refused_by_line(tmp_path, capsys):
    run = write(tmp_path / "run.txt", ["1 Q0 a 1 2.0 t", "1 Q0 b 2 1.0 t"])
    qrels = write(tmp_path / "qrels.txt", ["1 0 b 1", "1 0 a " + "9" * 400])
    refused(cli(["evaluate", "--run", run, "--qrels", qrels], capsys), f"{qrels}:2:", "relevance")


# -- 11. a figure survives its own round trip ---------------------------------------------------------

@pytest.mark.parametrize("k", ["5000", "1000000"])
def test_a_fused_run_is_evaluated_in_its_own_order(tmp_path, capsys, k):
    from pipeline.readers import read_run

    a = write(tmp_path / "a.txt", ["1 Q0 x 1 3.0 a", "1 Q0 y 2 2.0 a", "1 Q0 z 3 1.0 a"])
    b = write(tmp_path / "b.txt", ["1 Q0 y 1 9.0 b", "1 Q0 z 2 8.0 b", "1 Q0 w 3 1.0 b"])
    out = tmp_path / "fused.txt"
    assert cli(["fuse", "--runs", a, b, "--output", out, "--k", k], capsys)[0] == 0
    in_file = [line.split()[2] for line in out.read_text().splitlines()]
    read_back = read_run(out)["1"]
    as_evaluated = sorted(read_back, key=lambda doc: (read_back[doc], doc), reverse=True)  # trec_eval's order
    assert in_file == as_evaluated == ["y", "z", "x", "w"]


def test_linear_weights_whose_scores_overflow_a_run_reader_are_refused(tmp_path, capsys):
    a, b = runs(tmp_path)
    refused(cli(["fuse", "--runs", a, b, "--output", tmp_path / "f.txt", "--method", "linear", "--weights",
                 "1e308", "1e308"], capsys), "--weights")
    assert not (tmp_path / "f.txt").exists()


def test_search_scores_keep_their_six_decimals(world):
    lines = world["run"].read_text().splitlines()
    assert lines and all(line.split()[4].endswith(".000000") for line in lines)  # integer scores, as before


# -- 12. the service: URL-special ids, limits, surrogates, slow clients --------------------------------

ODD_IDS = ["a/b", "x?y", "100%", "h#1", "semi;colon", "plus+sign", "ü/ñ"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The app over an index (stored documents) whose ids hold URL-special characters, in-process."""
    from fastapi.testclient import TestClient

    from pipeline.service import create_app
    from pipeline.service.guard import Limits

    root = tmp_path_factory.mktemp("hostile2-serve")
    corpus = write(root / "corpus.jsonl", beir({doc: f"coral reef {n} and ocean tides" for n, doc in
                                                enumerate(ODD_IDS)}))
    stages.encode(corpus, root / "coll", progress=False, **QUIET)
    stages.index(root / "coll", root / "idx", threads=1, store_raw=True, **QUIET)
    limits = Limits(max_query_chars=64, max_hits=20, max_batch=3, max_batch_hits=40)
    with TestClient(create_app({"odd": root / "idx"}, threads=1, limits=limits)) as client:
        yield client


@pytest.mark.parametrize("docid", ODD_IDS)
def test_every_document_id_reaches_its_document(service, docid):
    from urllib.parse import quote

    response = service.get(f"/v1/odd/doc/{quote(docid, safe='')}")
    assert response.status_code == 200, response.text
    assert response.json()["docid"] == docid and response.json()["doc"]["id"] == docid


@pytest.mark.parametrize("params, status, field", [
    ({"query": "c" * 64}, 200, None), ({"query": "c" * 65}, 400, "query"),
    ({"query": "coral", "hits": 20}, 200, None), ({"query": "coral", "hits": 21}, 400, "hits"),
])
def test_queries_at_and_past_the_limits(service, params, status, field):
    response = service.get("/v1/odd/search", params=params)
    assert response.status_code == status, response.text
    if field:
        assert response.json()["field"] == field and "Traceback" not in response.text


@pytest.mark.parametrize("body, field", [
    ('{"queries": [{"id": "\\ud800", "text": "coral"}]}', "queries[0]"),
    ('{"queries": [{"id": "q", "text": "coral \\udc00"}]}', "queries[0]"),
    ('{"queries": [{"id": "q", "vector": {"\\ud800": 3}}]}', "queries[0]"),
    ('{"queries": [{"id": "a", "text": "x"}, {"id": "b", "text": "x"}, {"id": "c", "text": "x"}, '
     '{"id": "d", "text": "x"}]}', "queries"),
    ('{"queries": [{"id": "a", "text": "x"}, {"id": "b", "text": "x"}, {"id": "c", "text": "x"}], "hits": 20}',
     "hits"),
    ('{"queries": [{"id": "q", "vector": {"coral": 1000001}}]}', "queries[0]"),
    ('{"queries": [{"id": "q", "vector": {"coral": 0}}]}', "queries[0]"),
    ('{"queries": [{"id": "q", "vector": {"' + "t" * 257 + '": 3}}]}', "queries[0]"),
])
def test_batch_requests_past_a_limit_or_not_unicode_are_400_naming_the_field(service, body, field):
    response = service.post("/v1/odd/search", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith(field) and "Traceback" not in response.text


def test_slow_bodies_do_not_take_the_slots_of_other_requests():
    import asyncio

    from pipeline.service.guard import Guard, Limits

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario():
        guard = Guard(app, Limits(max_in_flight=2, body_timeout_s=5))
        stalled = asyncio.Event()

        async def never():  # a client that sent its head and then nothing
            await stalled.wait()
            return {"type": "http.disconnect"}

        scope = {"type": "http", "raw_path": b"/", "query_string": b"", "headers": []}
        slow = [asyncio.create_task(guard(scope, never, _sink([]))) for _ in range(5)]
        await asyncio.sleep(0.05)
        sent: list = []

        async def body():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        await asyncio.wait_for(guard(scope, body, _sink(sent)), 2)
        stalled.set()
        await asyncio.gather(*slow)
        return sent[0]["status"]

    assert asyncio.run(scenario()) == 200


def _sink(messages: list):
    async def send(message):
        messages.append(message)
    return send


# -- 13. more outputs and numbers that another stage reads back --------------------------------------

def test_a_scale_whose_impacts_lucene_cannot_count_is_refused_at_encode(tmp_path, capsys, world):
    refused(cli(["encode", "--corpus", world["corpus"], "--output", tmp_path / "coll", "--scale", "1e10",
                 "--quiet"], capsys), "--scale 1e+10", "beyond what Lucene counts")
    assert not (tmp_path / "coll" / "manifest.json").exists()


def test_weights_lucene_cannot_count_in_a_collection_made_elsewhere_are_named(tmp_path, capsys):
    coll = write(tmp_path / "coll" / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 3}}',
                                                    '{"id": "b", "contents": "y", "vector": {"reef": 3000000000}}'])
    refused(cli(["index", "--collection", coll.parent, "--index", tmp_path / "idx", "--quiet"], capsys),
            "docs.jsonl:2:", "Lucene counts")
    assert not (tmp_path / "idx").exists()


def test_fuse_output_that_is_an_input_through_dot_dot(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = runs(tmp_path)
    before = snapshot(tmp_path)
    refused(cli(["fuse", "--runs", "a.txt", "b.txt", "--output", "nothere/../a.txt"], capsys), "is one of the --runs")
    assert snapshot(tmp_path) == before


def test_an_index_into_its_own_collection_is_refused(tmp_path, capsys, world):
    import shutil

    coll = tmp_path / "coll"
    shutil.copytree(world["collection"], coll)
    before = snapshot(tmp_path)
    refused(cli(["index", "--collection", coll, "--index", coll / "vectors" / "..", "--overwrite", "--quiet"],
                capsys), "did not write")
    assert snapshot(tmp_path) == before


def test_a_damaged_checkpoint_is_named_before_resuming(tmp_path, capsys):
    from pipeline import models
    from pipeline.train import Triple, triples_digest

    triples = write(tmp_path / "t.jsonl", [TRAIN_TRIPLE] * 4)
    out = tmp_path / "model"
    write(out / "checkpoint" / "state.json", [json.dumps({
        "settings": _settings(), "base": models.resolve(None).fingerprint,
        "triples": triples_digest([Triple("coral", "coral reef", "moon tides")] * 4)})])
    write(out / "checkpoint" / "checkpoint-2" / "trainer_state.json", ['{"global_step": 2, "log_hist'])
    before = snapshot(tmp_path)
    refused(cli(["train", "--triples", triples, "--output", out, "--batch-size", "2", "--quiet"], capsys),
            "checkpoint-2/trainer_state.json")
    assert snapshot(tmp_path) == before


# -- 14. the exported int8 graph cache: damaged, empty, another model's ---------------------------------

@pytest.mark.slow
def test_a_damaged_or_foreign_graph_cache_is_exported_again(tmp_path):
    import shutil

    pytest.importorskip("onnxruntime")
    from pipeline import models
    from pipeline.backends import onnx_runner
    from pipeline.encoder import SpladeEncoder

    location = tmp_path / "model"  # a writable copy: the cache goes beside it, not in the shared one
    shutil.copytree(models.resolve(None).location, location, ignore=shutil.ignore_patterns(".splade-pipeline"))
    ref = models.resolve(str(location))
    texts = ["coral reef", "moon tides"]
    def encoded() -> list:
        vectors = SpladeEncoder(ref, "max", 64, threads=1, backend="onnx").encode(texts)
        return [dict(zip(v.ids.tolist(), v.weights.tolist())) for v in vectors]

    expected = encoded()
    graph = onnx_runner.exported_graph(ref, None, "onnx")
    recipe = graph.parent / "recipe.json"
    for damage in ("truncated", "empty", "another model's"):
        if damage == "truncated":
            graph.write_bytes(graph.read_bytes()[:1000])
        elif damage == "empty":
            graph.write_bytes(b"")
        else:
            value = json.loads(recipe.read_text())
            value["model"]["model_fingerprint"] = "sha256:another"
            recipe.write_text(json.dumps(value))
        assert encoded() == expected, damage
