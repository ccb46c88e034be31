"""Hostile-but-realistic input across every command (encode, index, search, evaluate, run, fuse, train).

Each case asserts what a user must be able to rely on: the exit status, one line naming the file,
line or option, no traceback, no output that looks complete, and no file the tool did not write
removed or changed (the folder's files and their hashes are compared before and after). Most cases
run the CLI entry point in-process and fail before any model loads; one small real index is built
once for the module; concurrent writers and a signal run in real separate processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import cli, refused
from pipeline import outputs, stages

BOM = "\ufeff"
DOCS = {f"d{i}": f"coral reef number {i} with ocean tides and fish" for i in range(1, 11)}
DOCS["d3"] = "tides follow the moon"
QUIET = {"say": lambda text: None}


# -- helpers -------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with its sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def write(path: Path, lines: list[str], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((BOM if bom else "") + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A TSV corpus and topics that start with a BOM, their collection, index and run (built once)."""
    root = tmp_path_factory.mktemp("hostile")
    corpus = write(root / "collection.tsv", [f"{k}\t{v}" for k, v in DOCS.items()], bom=True)
    topics = write(root / "topics.tsv", ["q1\tcoral reef", "q2\tmoon tides", "q3\tocean fish"], bom=True)
    collection, index, run = root / "collections" / "toy", root / "indexes" / "toy", root / "runs" / "run.txt"
    stages.encode(corpus, collection, shard_size=4, progress=False, **QUIET)
    stages.index(collection, index, threads=1, **QUIET)
    stages.search(index, run, topics, hits=5, progress=False, **QUIET)
    foreign = root / "foreign-collection"  # a JsonVectorCollection made elsewhere, and its index
    write(foreign / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 120, "reef": 30}}',
                                   '{"id": "b", "contents": "y", "vector": {"tide": 7}}'])
    stages.index(foreign, root / "indexes" / "foreign", **QUIET)
    return {"root": root, "corpus": corpus, "topics": topics, "collection": collection, "index": index,
            "run": run, "foreign_index": root / "indexes" / "foreign"}


# -- 1. numeric and choice options of every command: one line naming the option ----------------

OPTION_CASES = [
    ("encode", ["--threads", "-1"], "--threads"),
    ("encode", ["--threads", "0"], "--threads"),
    ("encode", ["--batch-size", "0"], "--batch-size"),
    ("encode", ["--shard-size", "0"], "--shard-size"),
    ("encode", ["--scale", "0"], "--scale"),
    ("encode", ["--scale", "-5"], "--scale"),
    ("encode", ["--scale", "nan"], "--scale"),
    ("encode", ["--scale", "inf"], "--scale"),
    ("encode", ["--max-length", "1"], "--max-length"),
    ("encode", ["--max-length", "abc"], "--max-length"),
    ("encode", ["--pooling", "mean"], "--pooling"),
    ("index", ["--threads", "-2"], "--threads"),
    ("search", ["--hits", "0"], "--hits"),
    ("search", ["--hits", "-10"], "--hits"),
    ("search", ["--hits", "1.5"], "--hits"),
    ("search", ["--scale", "0"], "--scale"),
    ("search", ["--threads", "0"], "--threads"),
    ("search", ["--format", "csv"], "--format"),
    ("fuse", ["--k", "-1"], "--k"),
    ("fuse", ["--k", "0"], "--k"),
    ("fuse", ["--k", "nan"], "--k"),
    ("fuse", ["--hits", "0"], "--hits"),
    ("fuse", ["--weights", "0.5", "inf"], "--weights"),
    ("fuse", ["--weights", "nan", "1"], "--weights"),
    ("train", ["--epochs", "0"], "--epochs"),
    ("train", ["--epochs", "-1"], "--epochs"),
    ("train", ["--learning-rate", "0"], "--learning-rate"),
    ("train", ["--lambda-q", "-0.1"], "--lambda-q"),
    ("train", ["--lambda-d", "nan"], "--lambda-d"),
    ("train", ["--batch-size", "0"], "--batch-size"),
    ("train", ["--save-steps", "0"], "--save-steps"),
    ("train", ["--max-steps", "0"], "--max-steps"),
    ("train", ["--warmup-steps", "-1"], "--warmup-steps"),
    ("train", ["--max-length", "1"], "--max-length"),
    ("train", ["--threads", "-1"], "--threads"),
    ("train", ["--max-minutes", "0"], "--max-minutes"),
    ("run", ["--hits", "0"], "--hits"),
    ("run", ["--threads", "-1"], "--threads"),
    ("run", ["--scale", "-1"], "--scale"),
    ("run", ["--batch-size", "-3"], "--batch-size"),
    ("evaluate", ["--level", "0"], "--level"),
    ("evaluate", ["--level", "-1"], "--level"),
]
REQUIRED = {"encode": ["--corpus", "c.jsonl", "--output", "out"], "index": ["--collection", "c", "--index", "i"],
            "search": ["--index", "i", "--topics", "t.tsv", "--output", "r.txt"],
            "fuse": ["--runs", "a.txt", "b.txt", "--output", "f.txt", "--method", "linear"],
            "train": ["--output", "m", "--triples", "t.jsonl"], "run": ["--dataset", "d"],
            "evaluate": ["--run", "r.txt", "--qrels", "q.txt"]}


@pytest.mark.parametrize("command, options, name", OPTION_CASES,
                         ids=[f"{c} {' '.join(o)}" for c, o, _ in OPTION_CASES])
def test_bad_option_values_are_one_line_errors(tmp_path, capsys, monkeypatch, command, options, name):
    monkeypatch.chdir(tmp_path)
    if command == "evaluate":  # --level is checked once the files are found
        write(tmp_path / "r.txt", ["1 Q0 a 1 2.0 t"])
        write(tmp_path / "q.txt", ["1 0 a 1"])
    if command == "fuse" and name == "--k":
        options = [*options, "--method", "rrf"]
    before = snapshot(tmp_path)
    refused(cli([command, *REQUIRED[command], *options], capsys), name)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


# -- 2. never delete or replace what the tool did not write -------------------------------------

def foreign_folder(root: Path, name: str = "mine") -> Path:
    folder = root / name
    write(folder / "notes.txt", ["my notes"])
    write(folder / "vectors" / "part-00000.jsonl", ["my own data"])
    write(folder / "shards" / "keep.json", ["{}"])
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
def test_encode_never_touches_a_folder_it_did_not_write(tmp_path, capsys, world, overwrite):
    target = foreign_folder(tmp_path)
    before = snapshot(tmp_path)
    argv = ["encode", "--corpus", world["corpus"], "--output", target, "--quiet"] + (["--overwrite"] * overwrite)
    message = refused(cli(argv, capsys), str(target), "did not write", "notes.txt")
    assert "--overwrite" not in message  # no suggestion that leads to data loss
    assert snapshot(tmp_path) == before


def test_encode_overwrite_keeps_strangers_in_its_own_collection(tmp_path, capsys, world):
    target = tmp_path / "coll"
    stages.encode(world["corpus"], target, shard_size=4, progress=False, **QUIET)
    write(target / "vectors" / "extra.jsonl", ["mine"])
    before = snapshot(tmp_path)
    refused(cli(["encode", "--corpus", world["corpus"], "--output", target, "--overwrite", "--shard-size", "4",
                 "--quiet"], capsys), "vectors/extra.jsonl")
    assert snapshot(tmp_path) == before


def test_encode_folder_with_only_our_kind_of_names_but_no_plan(tmp_path, capsys, world):
    target = tmp_path / "pyserini-out"
    write(target / "vectors" / "part-00000.jsonl", ['{"id": "x", "vector": {}}'])
    before = snapshot(tmp_path)
    refused(cli(["encode", "--corpus", world["corpus"], "--output", target, "--overwrite", "--quiet"], capsys),
            "did not write", "vectors/part-00000.jsonl")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_index_never_replaces_a_folder_it_did_not_build(tmp_path, capsys, world, overwrite):
    target = foreign_folder(tmp_path)
    before = snapshot(tmp_path)
    argv = ["index", "--collection", world["collection"], "--index", target] + (["--overwrite"] * overwrite)
    message = refused(cli(argv, capsys), str(target), "notes.txt")
    assert "--overwrite" not in message
    assert snapshot(tmp_path) == before


def test_index_dot_overwrite_is_refused_without_traceback(tmp_path, capsys, world, monkeypatch):
    write(tmp_path / "thesis.tex", ["chapter one"])
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    refused(cli(["index", "--collection", world["collection"], "--index", ".", "--overwrite"], capsys),
            "thesis.tex")
    assert snapshot(tmp_path) == before


def test_index_of_pyserini_index_is_not_replaced(tmp_path, capsys, world):
    """An index built elsewhere (Lucene files, no record of ours) is not replaced either."""
    import shutil

    target = tmp_path / "pyserini-index"
    shutil.copytree(world["index"], target)
    (target / "splade-pipeline.json").unlink()
    before = snapshot(tmp_path)
    refused(cli(["index", "--collection", world["collection"], "--index", target, "--overwrite"], capsys),
            "did not write")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_search_never_replaces_a_file_it_did_not_write(tmp_path, capsys, world, overwrite):
    target = write(tmp_path / "run.txt", ["my hand-made run"])
    before = snapshot(tmp_path)
    argv = ["search", "--index", world["index"], "--topics", world["topics"], "--output", target, "--quiet"]
    refused(cli(argv + ["--overwrite"] * overwrite, capsys), str(target), "not written by splade-pipeline")
    assert snapshot(tmp_path) == before


def test_search_output_that_is_a_folder(tmp_path, capsys, world):
    target = foreign_folder(tmp_path)
    before = snapshot(tmp_path)
    refused(cli(["search", "--index", world["index"], "--topics", world["topics"], "--output", target], capsys),
            str(target), "not a file")
    assert snapshot(tmp_path) == before


def test_search_will_not_replace_a_run_edited_by_hand(tmp_path, capsys, world):
    import shutil

    run = tmp_path / "run.txt"
    shutil.copy(world["run"], run)
    shutil.copy(outputs.record_path(world["run"]), outputs.record_path(run))
    run.write_text(run.read_text().replace("splade", "edited"))
    before = snapshot(tmp_path)
    refused(cli(["search", "--index", world["index"], "--topics", world["topics"], "--output", run, "--hits", "5",
                 "--overwrite"], capsys), "changed since splade-pipeline wrote it")
    assert snapshot(tmp_path) == before


def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = write(tmp_path / "a.txt", ["1 Q0 x 1 9 bm25", "1 Q0 y 2 5 bm25", "2 Q0 q 1 1 bm25"])
    b = write(tmp_path / "b.txt", ["1 Q0 y 1 300 s", "1 Q0 z 2 200 s"])
    return a, b


@pytest.mark.parametrize("case", ["foreign output", "output is an input", "output is a folder"])
def test_fuse_never_replaces_what_it_did_not_write(tmp_path, capsys, case):
    a, b = runs(tmp_path)
    output = {"foreign output": write(tmp_path / "fused.txt", ["mine"]), "output is an input": a,
              "output is a folder": foreign_folder(tmp_path)}[case]
    before = snapshot(tmp_path)
    refused(cli(["fuse", "--runs", a, b, "--output", output, "--overwrite"], capsys), str(output))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["foreign folder", "someone's checkpoint"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_train_never_deletes_a_folder_it_did_not_write(tmp_path, capsys, case, overwrite):
    triples = write(tmp_path / "triples.jsonl", ['{"query": "q", "positive": "p", "negative": "n"}'] * 4)
    if case == "foreign folder":
        target = foreign_folder(tmp_path)
    else:
        target = tmp_path / "my-model"
        for name in ("config.json", "model.safetensors", "vocab.txt"):
            write(target / name, ["precious"])
    before = snapshot(tmp_path)
    argv = ["train", "--output", target, "--triples", triples, "--batch-size", "2", "--quiet"]
    refused(cli(argv + ["--overwrite"] * overwrite, capsys), str(target), "did not write")
    assert snapshot(tmp_path) == before


def test_run_refuses_a_foreign_collection_folder(tmp_path, capsys):
    from pipeline.demo import DEMO_DATA

    foreign_folder(tmp_path / "collections", "demo.splade-tiny")
    before = snapshot(tmp_path)
    refused(cli(["run", "--dataset", DEMO_DATA, "--name", "demo", "--root", tmp_path, "--overwrite", "--quiet"],
                capsys), "did not write", "notes.txt")
    assert snapshot(tmp_path) == before


# -- 3. stages do not silently reuse or guess ------------------------------------------------------

@pytest.mark.parametrize("change, needle", [
    (["--hits", "3"], "hits 5 -> 3"),
    (["--hits", "5", "--remove-query"], "remove_query False -> True"),
    (["--hits", "5", "--format", "msmarco"], "format 'trec' -> 'msmarco'"),
    (["--hits", "5", "--run-tag", "other"], "tag 'splade' -> 'other'"),
    (["--hits", "5", "--topics", "OTHER"], "topics"),
    (["--hits", "5", "--index", "FOREIGN", "--encoder", "splade-tiny"], "index"),
])
def test_search_rerun_with_other_inputs_is_refused(tmp_path, capsys, world, change, needle):
    import shutil

    run = tmp_path / "run.txt"
    shutil.copy(world["run"], run)
    shutil.copy(outputs.record_path(world["run"]), outputs.record_path(run))
    other = write(tmp_path / "other.tsv", ["q1\tfish"])
    change = [str(other) if c == "OTHER" else str(world["foreign_index"]) if c == "FOREIGN" else c for c in change]
    argv = ["search", "--index", world["index"], "--topics", world["topics"], "--output", run, "--quiet"]
    before = snapshot(tmp_path)
    refused(cli(argv + change, capsys), str(run), "made from other inputs", needle)
    assert snapshot(tmp_path) == before


def test_search_rerun_with_the_same_inputs_is_a_no_op(tmp_path, capsys, world):
    import shutil

    run = tmp_path / "run.txt"
    shutil.copy(world["run"], run)
    shutil.copy(outputs.record_path(world["run"]), outputs.record_path(run))
    before = snapshot(tmp_path)
    code, err, _ = cli(["search", "--index", world["index"], "--topics", world["topics"], "--output", run,
                        "--hits", "5", "--quiet"], capsys)
    assert code == 0 and "nothing to do" in err[-1] and snapshot(tmp_path) == before


def test_search_on_an_index_built_elsewhere_needs_an_encoder(tmp_path, capsys, world):
    refused(cli(["search", "--index", world["foreign_index"], "--topics", world["topics"], "--output",
                 tmp_path / "run.txt"], capsys), "--encoder", "--encoded-queries")
    assert not any(tmp_path.iterdir())


def test_fuse_rerun_with_other_settings_is_refused(tmp_path, capsys):
    a, b = runs(tmp_path)
    out = tmp_path / "fused.txt"
    assert cli(["fuse", "--runs", a, b, "--output", out], capsys)[0] == 0
    before = snapshot(tmp_path)
    refused(cli(["fuse", "--runs", a, b, "--output", out, "--k", "10"], capsys), "k 60.0 -> 10.0")
    code, err, _ = cli(["fuse", "--runs", a, b, "--output", out], capsys)
    assert code == 0 and "nothing to do" in err[0] and snapshot(tmp_path) == before
    assert cli(["fuse", "--runs", a, b, "--output", out, "--k", "10", "--overwrite"], capsys)[0] == 0
    assert snapshot(tmp_path)["fused.txt"] != before["fused.txt"]


@pytest.mark.parametrize("weights, needle", [(["1"], "1 weights for 2 runs"), (["0", "0"], "not all zero")])
def test_fuse_weights_must_match_the_runs(tmp_path, capsys, weights, needle):
    a, b = runs(tmp_path)
    refused(cli(["fuse", "--runs", a, b, "--output", tmp_path / "f.txt", "--method", "linear", "--weights",
                 *weights], capsys), "--weights", needle)
    assert not (tmp_path / "f.txt").exists()


# -- 4. silently wrong figures ----------------------------------------------------------------------

@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-inf", "high", "1e400"])
def test_evaluate_rejects_non_numeric_scores(tmp_path, capsys, score):
    run = write(tmp_path / "run.txt", ["1 Q0 a 1 2.0 t", f"1 Q0 b 2 {score} t"])
    qrels = write(tmp_path / "qrels.txt", ["1 0 a 1"])
    refused(cli(["evaluate", "--run", run, "--qrels", qrels], capsys), f"{run}:2")


def test_evaluate_does_not_guess_trec_dl_from_a_path(tmp_path, capsys):
    folder = tmp_path / "trec-dl-2019" / "deep-learning"
    run = write(folder / "run.dl19.txt", ["1 Q0 a 1 3.0 t", "1 Q0 b 2 2.0 t"])
    qrels = write(folder / "qrels" / "dl19.tsv", ["query-id\tcorpus-id\tscore", "1\ta\t1", "1\tb\t1"])
    code, err, out = cli(["evaluate", "--run", run, "--qrels", qrels, "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and list(result["metrics"]) == ["nDCG@10", "R@100"] and result["relevance_level"] == 1
    assert result["metrics"]["R@100"] == 1.0


def test_bom_in_a_tsv_corpus_does_not_reach_the_ids(world):
    first = json.loads((world["collection"] / "vectors" / "part-00000.jsonl").read_text().splitlines()[0])
    assert first["id"] == "d1" and first["vector"]


def test_bom_in_tsv_topics_keeps_the_first_query(world):
    assert {line.split()[0] for line in world["run"].read_text().splitlines()} == {"q1", "q2", "q3"}


def test_bom_in_trec_qrels_adds_no_query(tmp_path, capsys, world):
    lines = [f"q1 0 d{i} 1" for i in (1, 2)] + ["q2 0 d3 1"]
    plain, marked = write(tmp_path / "plain.txt", lines), write(tmp_path / "bom.txt", lines, bom=True)
    results = []
    for qrels in (plain, marked):
        code, _, out = cli(["evaluate", "--run", world["run"], "--qrels", qrels, "--json", "--preset", "beir"], capsys)
        assert code == 0
        results.append(json.loads(out))
    assert results[0]["queries"] == results[1]["queries"] == 2 and results[0]["metrics"] == results[1]["metrics"]


@pytest.mark.parametrize("scale", ["1e-6", "0.001"])
def test_a_scale_that_empties_every_vector_is_refused(tmp_path, capsys, world, scale):
    out = tmp_path / "coll"
    refused(cli(["encode", "--corpus", world["corpus"], "--output", out, "--scale", scale, "--quiet"], capsys),
            "--scale", "empty")
    assert not (out / "manifest.json").exists() and not list(out.glob("vectors/*"))


# -- 5. concurrent writers ------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from contextlib import ExitStack
from pipeline.outputs import locked
with ExitStack() as stack:
    for target in sys.argv[1:]:
        stack.enter_context(locked(Path(target), "holder"))
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.fixture()
def holder(tmp_path):
    """A separate live process holding the locks of the given outputs."""
    started = []

    def hold(*targets: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, targets)], stdout=subprocess.PIPE,
                                   text=True, cwd=Path(__file__).resolve().parents[1])
        started.append(process)
        assert process.stdout.readline().strip() == "ready"
        return process
    yield hold
    for process in started:
        process.kill()
        process.wait()


def test_a_second_writer_fails_clearly_on_every_output(tmp_path, capsys, world, holder):
    a, b = runs(tmp_path)
    triples = write(tmp_path / "triples.jsonl", ['{"query": "q", "positive": "p", "negative": "n"}'] * 4)
    targets = {"encode": tmp_path / "coll", "index": tmp_path / "idx", "search": tmp_path / "run.txt",
               "fuse": tmp_path / "fused.txt", "train": tmp_path / "model"}
    process = holder(*targets.values())
    before = snapshot(tmp_path)
    commands = {
        "encode": ["encode", "--corpus", world["corpus"], "--output", targets["encode"]],
        "index": ["index", "--collection", world["collection"], "--index", targets["index"]],
        "search": ["search", "--index", world["index"], "--topics", world["topics"], "--output", targets["search"]],
        "fuse": ["fuse", "--runs", a, b, "--output", targets["fuse"]],
        "train": ["train", "--output", targets["train"], "--triples", triples, "--batch-size", "2"],
    }
    for name, argv in commands.items():
        message = refused(cli(argv + ["--quiet"], capsys), str(targets[name]), f"pid {process.pid}",
                          str(outputs.lock_path(targets[name])))
        assert "being written" in message, name
    assert snapshot(tmp_path) == before


def test_the_collection_being_written_is_not_indexed(tmp_path, capsys, world, holder):
    holder(world["collection"])
    refused(cli(["index", "--collection", world["collection"], "--index", tmp_path / "idx"], capsys),
            str(world["collection"]), "being written or read")
    assert not (tmp_path / "idx").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    a, b = runs(tmp_path)
    out = tmp_path / "fused.txt"
    lock = outputs.lock_path(out)
    lock.write_text(json.dumps({"pid": dead_pid(), "host": "here", "command": "fuse", "started": 0}))
    assert cli(["fuse", "--runs", a, b, "--output", out], capsys)[0] == 0
    assert out.is_file() and not lock.exists()


def test_two_encodes_at_once_one_fails_and_the_other_gets_its_own_collection(tmp_path):
    """Two real processes on different corpora and one --output: never two successes."""
    corpora = [write(tmp_path / f"c{n}.tsv", [f"{n}doc{i}\tcoral reef {i} of corpus {n}" for i in range(40)])
               for n in (1, 2)]
    out = tmp_path / "coll"
    processes = [subprocess.Popen([sys.executable, "-m", "pipeline", "encode", "--corpus", str(c), "--output",
                                   str(out), "--quiet", "--threads", "1"], stderr=subprocess.PIPE, text=True)
                 for c in corpora]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = [c for c, (code, _) in zip(corpora, results) if code == 0][0]
    loser_message = [err for code, err in results if code == 2][0].strip().splitlines()
    assert len(loser_message) == 1 and ("being written" in loser_message[0]
                                        or "encoded with other settings" in loser_message[0]), loser_message
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["path"] == str(winner.resolve())
    first = json.loads((out / "vectors" / "part-00000.jsonl").read_text().splitlines()[0])
    assert first["id"] == winner.stem[1] + "doc0"


# -- 6. no traceback, OS errors name their path, failed writes leave no temporary file ----------

@pytest.mark.parametrize("command", ["encode", "index", "search", "fuse", "train"])
def test_output_below_a_file_names_the_path(tmp_path, capsys, world, command):
    a, b = runs(tmp_path)
    blocker = write(tmp_path / "blocker", ["a file, not a folder"])
    triples = write(tmp_path / "triples.jsonl", ['{"query": "q", "positive": "p", "negative": "n"}'] * 4)
    target = blocker / "out"
    argv = {"encode": ["encode", "--corpus", world["corpus"], "--output", target],
            "index": ["index", "--collection", world["collection"], "--index", target],
            "search": ["search", "--index", world["index"], "--topics", world["topics"], "--output", target],
            "fuse": ["fuse", "--runs", a, b, "--output", target],
            "train": ["train", "--output", target, "--triples", triples, "--batch-size", "2"]}[command]
    before = snapshot(tmp_path)
    refused(cli(argv + ["--quiet"], capsys), str(blocker))
    assert snapshot(tmp_path) == before


def test_a_failed_write_leaves_no_temporary_file_and_names_the_path(tmp_path, capsys):
    """A full disk, simulated with a file-size limit: the write fails part-way (EFBIG)."""
    a = write(tmp_path / "a.txt", [f"1 Q0 d{i} {i} {1000 - i} bm25" for i in range(1, 400)])
    b = write(tmp_path / "b.txt", [f"1 Q0 d{i} {i} {500 - i} s" for i in range(1, 400)])
    out = tmp_path / "runs" / "fused.txt"
    out.parent.mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        result = cli(["fuse", "--runs", a, b, "--output", out], capsys)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    refused(result, str(out), "cannot write")
    assert not out.exists() and not any(p for p in out.parent.iterdir() if p.name != outputs.record_path(out).name)


def test_sigterm_during_index_leaves_no_building_folder(tmp_path, capsys, world):
    """SIGTERM while Anserini runs: exit 143, the child JVM stopped, no .building-PID folder left."""
    target = tmp_path / "idx"

    def terminate_when_building():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(tmp_path.glob(".idx.building-*")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_building, daemon=True)
    killer.start()
    code, err, _ = cli(["index", "--collection", world["collection"], "--index", target, "--quiet"], capsys)
    killer.join()
    assert code == 143 and err == ["splade-pipeline index: terminated"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("line, needle", [
    ("{not json", "docs.jsonl:2: invalid JSON"),
    ('{"id": "b", "contents": "y", "vector": {"tide": "seven"}}', "docs.jsonl:2: weight of 'tide'"),  # Anserini: "empty"
    ('{"id": "b", "contents": "y", "vector": [1, 2]}', "docs.jsonl:2: missing 'vector'"),
    ('["a", "list"]', "docs.jsonl:2: expected a JSON object"),
    ('{"contents": "y", "vector": {"tide": 7}}', "docs.jsonl:2: missing or empty 'id'"),
])
def test_anserini_errors_name_the_document_line(tmp_path, capsys, line, needle):
    folder = write(tmp_path / "coll" / "docs.jsonl", ['{"id": "a", "contents": "x", "vector": {"coral": 1}}', line])
    refused(cli(["index", "--collection", folder.parent, "--index", tmp_path / "idx", "--quiet"], capsys), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coll"]


@pytest.mark.parametrize("command, argv, needle", [
    ("encode", ["--corpus", "absent.jsonl", "--output", "out"], "absent.jsonl: no such file"),
    ("index", ["--collection", "absent", "--index", "idx"], "absent: no such collection folder"),
    ("search", ["--index", "absent", "--topics", "t.tsv", "--output", "r.txt"], "absent: not a Lucene index"),
    ("evaluate", ["--run", "absent.txt", "--qrels", "q.txt"], "absent.txt: no such file"),
    ("fuse", ["--runs", "absent.txt", "b.txt", "--output", "f.txt"], "absent.txt: no such file"),
    ("train", ["--output", "m", "--triples", "absent.jsonl"], "absent.jsonl: no such file"),
    ("run", ["--dataset", "absent"], "absent"),
])
def test_missing_inputs_are_named(tmp_path, capsys, monkeypatch, command, argv, needle):
    monkeypatch.chdir(tmp_path)
    refused(cli([command, *argv], capsys), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
