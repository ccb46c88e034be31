import gzip
import json

import pytest

from conftest import dataset, write_lines
from pipeline.errors import InputError
from pipeline.readers import (corpus_files, corpus_format, read_corpus, read_corpus_from, read_encoded_queries,
                              read_qrels, read_run, read_topics)


def docs(path):
    return [(d.id, d.text) for _, d in read_corpus(path)]


def test_beir_corpus_joins_title_and_text(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [
        json.dumps({"_id": "d1", "title": "Tides", "text": "The Moon pulls."}),
        json.dumps({"_id": 7, "title": "", "text": "No title."}),
    ])
    assert corpus_format(path) == "beir"
    assert docs(path) == [("d1", "Tides The Moon pulls."), ("7", "No title.")]


def test_jsoncollection_and_msmarco_tsv_and_gzip(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [json.dumps({"id": "a", "contents": "alpha"})])
    assert corpus_format(path) == "jsoncollection" and docs(path) == [("a", "alpha")]
    tsv = tmp_path / "collection.tsv.gz"
    with gzip.open(tsv, "wt") as handle:
        handle.write("0\tThe presence of communication\n1\tsecond\tpassage with a tab\n")
    assert corpus_format(tsv) == "tsv"
    assert docs(tsv) == [("0", "The presence of communication"), ("1", "second\tpassage with a tab")]


def test_seek_to_offset_reads_from_that_document_on_through_later_files(tmp_path):
    write_lines(tmp_path / "coll" / "docs00.tsv", ["a\tone", "b\ttwo", "c\tthree"])
    write_lines(tmp_path / "coll" / "docs01.tsv", ["d\tfour"])
    files = corpus_files(tmp_path / "coll")
    positions = [(i, offset, d.line) for i, offset, d in read_corpus_from(files, "tsv")]
    assert positions[3] == (1, 0, 1)
    rest = [(d.id, d.line) for _, _, d in read_corpus_from(files, "tsv", 0, positions[1][1], positions[1][2])]
    assert rest == [("b", 2), ("c", 3), ("d", 1)]


def test_corpus_folder_of_json_collection_files(tmp_path):
    write_lines(tmp_path / "c" / "docs01.jsonl", ['{"id": "b", "contents": "beta"}'])
    write_lines(tmp_path / "c" / "docs00.jsonl", ['{"id": "a", "contents": "alpha"}'])
    assert corpus_format(tmp_path / "c") == "jsoncollection" and docs(tmp_path / "c") == [("a", "alpha"), ("b", "beta")]
    write_lines(tmp_path / "c" / "extra.tsv", ["x\ty"])
    with pytest.raises(InputError, match="mixes .tsv and JSON files"):
        corpus_format(tmp_path / "c")
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        corpus_format(tmp_path / "e")


@pytest.mark.parametrize("line, message", [
    ('{"_id": "1", "text": "ok"', "invalid JSON"),
    ('{"_id": "1"}', "missing 'text'"),
    ('{"title": "x", "text": "y", "_id": null}', "missing '_id'"),
    ('{"_id": "a b", "text": "y"}', "contains whitespace"),
    ('{"_id": "", "text": "y"}', "empty document id"),
    ('[1, 2]', "expected a JSON object"),
    ('{"_id": "1", "text": ["a"]}', "'text' must be a string"),
])
def test_bad_corpus_lines_name_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "corpus.jsonl", ['{"_id": "0", "text": "fine"}', line])
    with pytest.raises(InputError) as error:
        docs(path)
    assert str(error.value).startswith(f"{path}:2: ") and message in str(error.value)


def test_invalid_utf8_and_unknown_format_and_missing_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "0", "text": "fine"}\n{"_id": "1", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:2: invalid UTF-8"):
        docs(path)
    with pytest.raises(InputError, match="unknown corpus format"):
        corpus_format(write_lines(tmp_path / "corpus.xml", ["<doc/>"]))
    with pytest.raises(InputError, match="unknown corpus format: expected BEIR"):
        corpus_format(write_lines(tmp_path / "other.jsonl", ['{"docid": "1", "body": "x"}']))
    with pytest.raises(InputError, match="no such file"):
        corpus_format(tmp_path / "absent.jsonl")
    with pytest.raises(InputError, match="empty file"):
        corpus_format(write_lines(tmp_path / "empty.jsonl", ""))


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    payload = gzip.compress(b"".join(b'{"_id": "%d", "text": "words words words"}\n' % i for i in range(2000)))
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(InputError, match="cannot read"):
        docs(path)


def test_topics_beir_and_tsv(tmp_path):
    beir = write_lines(tmp_path / "queries.jsonl", ['{"_id": "1", "text": "do goldfish grow"}'])
    assert read_topics(beir) == {"1": "do goldfish grow"}
    tsv = write_lines(tmp_path / "topics.tsv", ["2\twhat is wifi", "3\tbluetooth"])
    assert read_topics(tsv) == {"2": "what is wifi", "3": "bluetooth"}
    with pytest.raises(InputError, match=r"topics.tsv:2: duplicate query id '2'"):
        read_topics(write_lines(tmp_path / "topics.tsv", ["2\ta", "2\tb"]))
    with pytest.raises(InputError, match=r":1: expected 'qid<TAB>query text'"):
        read_topics(write_lines(tmp_path / "bad.tsv", ["no tab here"]))
    with pytest.raises(InputError, match="has no text"):
        read_topics(write_lines(tmp_path / "blank.tsv", ["4\t   "]))


def test_qrels_trec_and_beir(tmp_path):
    trec = write_lines(tmp_path / "qrels.txt", ["1 0 d1 2", "1 0 d2 0"])
    beir = write_lines(tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "1\td1\t2", "1\td2\t0"])
    assert read_qrels(trec) == read_qrels(beir) == {"1": {"d1": 2, "d2": 0}}
    with pytest.raises(InputError, match=r"qrels.txt:1: expected TREC qrels"):
        read_qrels(write_lines(tmp_path / "qrels.txt", ["1 d1"]))
    with pytest.raises(InputError, match=r":2: relevance 'high' is not an integer"):
        read_qrels(write_lines(tmp_path / "q.tsv", ["1\td1\t1", "1\td2\thigh"]))
    with pytest.raises(InputError, match=r":2: duplicate judgment"):
        read_qrels(write_lines(tmp_path / "q.tsv", ["1\td1\t1", "1\td1\t0"]))


def test_runs_trec_and_msmarco(tmp_path):
    trec = write_lines(tmp_path / "run.txt", ["1 Q0 d1 1 9.5 tag", "1 Q0 d2 2 3 tag"])
    assert read_run(trec) == {"1": {"d1": 9.5, "d2": 3.0}}
    msmarco = write_lines(tmp_path / "run.tsv", ["1\td1\t1", "1\td2\t2"])
    assert read_run(msmarco) == {"1": {"d1": -1.0, "d2": -2.0}}
    with pytest.raises(InputError, match=r"run.txt:2: document 'd1' appears twice"):
        read_run(write_lines(tmp_path / "run.txt", ["1 Q0 d1 1 9 t", "1 Q0 d1 2 8 t"]))
    with pytest.raises(InputError, match=r"run.txt:1: score 'high' is not a number"):
        read_run(write_lines(tmp_path / "run.txt", ["1 Q0 d1 1 high t"]))


def test_encoded_queries_jsonl_and_anserini_cache(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", ['{"id": "1", "vector": {"goldfish": 120, "grow": 80, "x": 0}}'])
    assert read_encoded_queries(path) == {"1": {"goldfish": 120, "grow": 80}}
    with pytest.raises(InputError, match="must be an integer"):
        read_encoded_queries(write_lines(tmp_path / "f.jsonl", ['{"id": "1", "vector": {"a": 0.5}}']))
    cached = dataset("msmarco-passage-topics") / "encoded-queries" / "topics.dl19-passage.splade-pp-ed.tsv.gz"
    queries = read_encoded_queries(cached)
    assert len(queries) == 43
    goldfish = queries["156493"]
    assert goldfish["gold"] == 3002 and goldfish["##fish"] == 2684  # wordpieces, weight x 100
    assert all(isinstance(w, int) and w > 0 for w in goldfish.values())


BOM = "\ufeff"


@pytest.mark.parametrize("name, lines, read, expected", [
    ("corpus.tsv", ["d1\tcoral reef", "d2\ttides"], lambda p: docs(p)[0][0], "d1"),
    ("corpus.jsonl", ['{"_id": "d1", "text": "coral"}'], lambda p: docs(p)[0][0], "d1"),
    ("docs.jsonl", ['{"id": "d1", "contents": "coral"}'], lambda p: corpus_format(p), "jsoncollection"),
    ("topics.tsv", ["q1\tcoral reef", "q2\ttides"], lambda p: list(read_topics(p)), ["q1", "q2"]),
    ("queries.jsonl", ['{"_id": "q1", "text": "coral"}'], lambda p: list(read_topics(p)), ["q1"]),
    ("qrels.txt", ["q1 0 d1 1", "q2 0 d2 1"], lambda p: sorted(read_qrels(p)), ["q1", "q2"]),
    ("qrels.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1"], lambda p: read_qrels(p), {"q1": {"d1": 1}}),
    ("run.txt", ["q1 Q0 d1 1 9 t"], lambda p: read_run(p), {"q1": {"d1": 9.0}}),
    ("enc.jsonl", ['{"id": "q1", "vector": {"coral": 3}}'], lambda p: read_encoded_queries(p), {"q1": {"coral": 3}}),
    ("enc.tsv", ["q1\tcoral coral"], lambda p: read_encoded_queries(p), {"q1": {"coral": 2}}),
])
def test_a_byte_order_mark_is_dropped_by_every_reader(tmp_path, name, lines, read, expected):
    """One rule for a UTF-8 BOM at the start of any input: dropped, never part of the first id."""
    path = tmp_path / name
    path.write_text(BOM + "".join(line + "\n" for line in lines), encoding="utf-8")
    assert read(path) == expected


def test_bom_corpus_offsets_still_seek(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text(BOM + "a\tone\nb\ttwo\n", encoding="utf-8")
    positions = [(offset, d.id) for _, offset, d in read_corpus_from([path], "tsv")]
    assert positions == [(0, "a"), (len(BOM.encode()) + 6, "b")]
    assert [d.id for _, _, d in read_corpus_from([path], "tsv", 0, 0)] == ["a", "b"]
    assert [d.id for _, _, d in read_corpus_from([path], "tsv", 0, positions[1][0], 2)] == ["b"]


def test_a_bom_in_the_middle_is_still_an_error(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", ['{"_id": "a", "text": "x"}', BOM + '{"_id": "b", "text": "y"}'])
    with pytest.raises(InputError, match=r"corpus.jsonl:2: invalid JSON"):
        docs(path)


@pytest.mark.parametrize("weight", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_encoded_queries_with_a_non_finite_weight_name_file_and_line(tmp_path, weight):
    path = write_lines(tmp_path / "q.jsonl", ['{"id": "1", "vector": {"a": 2}}',
                                              '{"id": "2", "vector": {"b": %s}}' % weight])
    with pytest.raises(InputError, match=r"q\.jsonl:2: weight of 'b' must be an integer \(quantised\), got "):
        read_encoded_queries(path)
