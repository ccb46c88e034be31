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

from pipeline import outputs, stages
from pipeline.cli import main

QUIET = {"say": lambda text: None}
DOCS = {f"d{i}": f"coral reef number {i} with ocean tides and fish" for i in range(1, 7)}
DOCS["d3"] = "tides follow the moon"


# -- helpers -------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones included), files with their sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(Path(folder).rglob("*"))}


def cli(argv: list, capsys) -> tuple[int, list[str], str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def refused(result, *needles: str, code: int = 2) -> str:
    status, err, out = result
    assert status == code, (status, err)
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and out == "", (err, out)
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


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
