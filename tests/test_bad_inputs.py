"""Every kind of bad input: one line naming the file (and line), exit status 2, no output that
looks complete. Runs the real CLI entry point in-process."""

import gzip
import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo import DEMO_DATA

GOOD_DOC = '{"_id": "a", "title": "T", "text": "coral reefs"}'


def corpus(tmp: Path, lines, name="corpus.jsonl") -> Path:
    path = tmp / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def bad_utf8(tmp: Path) -> Path:
    path = tmp / "corpus.jsonl"
    path.write_bytes((GOOD_DOC + "\n").encode() + b'{"_id": "b", "text": "caf\xe9"}\n')
    return path


def truncated_gzip(tmp: Path) -> Path:
    path = tmp / "corpus.jsonl.gz"
    data = gzip.compress(b"".join(b'{"_id": "%d", "text": "coral reef tides"}\n' % i for i in range(3000)))
    path.write_bytes(data[: len(data) // 2])
    return path


def not_mlm(tmp: Path) -> Path:
    folder = tmp / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    return folder


ENCODE_CASES = {
    "malformed JSON": (lambda t: corpus(t, [GOOD_DOC, '{"_id": "b", "text": "x"']), ":2: invalid JSON"),
    "no id field at all": (lambda t: corpus(t, ['{"text": "x"}']), ":1: unknown corpus format: expected BEIR"),
    "missing id later": (lambda t: corpus(t, [GOOD_DOC, '{"title": "x", "text": "y"}']), ":2: missing '_id' field"),
    "missing text": (lambda t: corpus(t, [GOOD_DOC, '{"_id": "b", "title": "x"}']), ":2: missing 'text' field"),
    "duplicate id": (lambda t: corpus(t, [GOOD_DOC, '{"_id": "b", "text": "y"}', GOOD_DOC]),
                     ":3: duplicate document id 'a' (first at line 1)"),
    "invalid UTF-8": (bad_utf8, ":2: invalid UTF-8"),
    "unknown format": (lambda t: corpus(t, ["<doc>x</doc>"], "corpus.xml"), "unknown corpus format '.xml'"),
    "TSV without tab": (lambda t: corpus(t, ["1\tfine", "2 no tab"], "collection.tsv"), ":2: expected 'id<TAB>text'"),
    "missing path": (lambda t: t / "absent.jsonl", "absent.jsonl: no such file or directory"),
    "empty file": (lambda t: corpus(t, []), "corpus.jsonl: empty file: no documents"),
    "truncated gzip": (truncated_gzip, "cannot read"),
}


@pytest.mark.parametrize("case", sorted(ENCODE_CASES))
def test_encode_rejects(tmp_path, capsys, case):
    make, expected = ENCODE_CASES[case]
    path = make(tmp_path)
    output = tmp_path / "out"
    assert main(["encode", "--corpus", str(path), "--output", str(output), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(path) in lines[0], lines
    assert not (output / "manifest.json").exists() and not (output / "vectors").exists()


@pytest.mark.parametrize("encoder, expected", [
    (not_mlm, "not a masked-LM checkpoint (architectures: BertModel)"),
    (lambda t: t / "no-such-model", "no such encoder directory"),
])
def test_bad_encoder(tmp_path, capsys, encoder, expected):
    path = corpus(tmp_path, [GOOD_DOC])
    assert main(["encode", "--corpus", str(path), "--output", str(tmp_path / "out"),
                 "--encoder", str(encoder(tmp_path)), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]


def test_empty_documents_are_kept_and_counted(tmp_path, capsys):
    path = corpus(tmp_path, [GOOD_DOC, '{"_id": "b", "title": "", "text": "  "}'])
    assert main(["encode", "--corpus", str(path), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert "2 documents (1 empty)" in capsys.readouterr().err


def test_output_path_is_a_file(tmp_path, capsys):
    path = corpus(tmp_path, [GOOD_DOC])
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["encode", "--corpus", str(path), "--output", str(blocker), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def index(demo_indexes):
    return demo_indexes["bare"]


SEARCH_CASES = {
    "topics without tab": (["1 what is coral"], "topics.tsv", ":1: expected 'qid<TAB>query text'"),
    "topics JSON without text": (['{"_id": "1"}'], "topics.jsonl", ":1: missing 'text' field"),
    "duplicate topic": (["1\tcoral", "1\treef"], "topics.tsv", ":2: duplicate query id '1'"),
    "empty topics": ([], "topics.tsv", "empty file: no queries"),
}


@pytest.mark.parametrize("case", sorted(SEARCH_CASES))
def test_search_rejects_bad_topics(tmp_path, capsys, index, case):
    lines, name, expected = SEARCH_CASES[case]
    topics = corpus(tmp_path, lines, name)
    run = tmp_path / "run.txt"
    assert main(["search", "--index", str(index), "--topics", str(topics), "--output", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(topics) in err[0]
    assert not run.exists()


EVALUATE_CASES = {
    "qrels with 2 columns": (["1 Q0 a 1 2.0 t"], ["1 a"], "qrels.txt:1: expected TREC qrels"),
    "run with 4 columns": (["1 Q0 a 1"], ["1 0 a 1"], "run.txt:1: expected a TREC run line"),
    "run matching no qrels": (["7 Q0 a 1 2.0 t"], ["1 0 a 1"], "none of its 1 query ids appears in the qrels"),
    "non-integer grade": (["1 Q0 a 1 2.0 t"], ["1 0 a yes"], "qrels.txt:1: relevance 'yes' is not an integer"),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_evaluate_rejects(tmp_path, capsys, case):
    run_lines, qrels_lines, expected = EVALUATE_CASES[case]
    run, qrels = corpus(tmp_path, run_lines, "run.txt"), corpus(tmp_path, qrels_lines, "qrels.txt")
    assert main(["evaluate", "--run", str(run), "--qrels", str(qrels)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and captured.out == ""
