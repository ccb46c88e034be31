"""Readers for corpora, topics, qrels, runs and pre-encoded queries.

Each reader streams its file and turns every problem into an ``InputError`` carrying the file and
line, so bad data stops a stage with one clear line instead of a traceback or a silent skip.
Plain and gzip files are read alike; corpus positions are byte offsets into the (decompressed)
stream so that an encoding shard can seek straight to its first document.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from pipeline.errors import InputError, PipelineError

@dataclass(frozen=True)
class Document:
    id: str
    text: str
    line: int


def _open(path: Path) -> IO[bytes]:
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


BOM = b"\xef\xbb\xbf"


def iter_lines(path: Path, start: int = 0, first_line: int = 1) -> Iterator[tuple[int, int, str]]:
    """Yield ``(line number, byte offset, text)`` for each non-blank line, decoding UTF-8 strictly.

    A UTF-8 byte-order mark at the start of a file (as Windows editors write) is dropped, the same
    for every reader and format, so it can never become part of a first id. Offsets still count it.
    """
    path = Path(path)
    with _open(path) as handle:
        if start:
            handle.seek(start)
        offset, number = start, first_line - 1
        try:
            for raw in handle:
                number += 1
                here, offset = offset, offset + len(raw)
                if here == 0 and raw.startswith(BOM):
                    raw = raw[len(BOM):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(path, f"invalid UTF-8 (byte {exc.start} of the line)", number) from None
                text = text.rstrip("\r\n")
                if "\r" in text:  # a CR only ends lines on old Macs; read as one line it would merge records
                    raise InputError(path, "carriage return (CR) inside the line: the file may use old Mac line "
                                           "ends; convert them to LF (\\n) or CRLF", number)
                if text.strip():
                    yield number, here, text
        except (OSError, EOFError) as exc:  # truncated or corrupt gzip stream
            raise InputError(path, f"cannot read: {exc}", number + 1) from None


def _base_suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def json_record(path: Path, number: int, text: str) -> dict:
    """One JSONL line as an object whose every string is valid Unicode text.

    JSON can carry what UTF-8 cannot: a ``\\ud800`` escape decodes to a lone surrogate, which no
    later stage can write (the collection, the run, a response), so it is refused here by line.
    """
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc.msg} at column {exc.colno})", number) from None
    if not isinstance(record, dict):
        raise InputError(path, f"expected a JSON object, got {type(record).__name__}", number)
    if "\\u" in text:  # only escapes can make a surrogate: skip the walk otherwise
        where = _surrogate(record)
        if where is not None:
            raise InputError(path, f"{where} holds a lone surrogate (a \\ud800-\\udfff escape that is not "
                                   "half of a pair): not valid Unicode text", number)
    return record


def _surrogate(value, where: str = "the record") -> str | None:
    """Where in a decoded JSON value a string holds an unpaired surrogate, or ``None``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate(key, "a key") or _surrogate(item, f"field {key[:40]!r}" if where == "the record"
                                                                   else where)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _surrogate(item, where)
            if found:
                return found
    return None


def _string_field(path: Path, number: int, record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise InputError(path, f"missing '{key}' field", number)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, f"'{key}' must be a string, got {type(value).__name__}", number)
    return str(value)


MAX_GRADE = 2 ** 31 - 1  # a 32-bit C integer, the smallest trec_eval may hold a grade in
LUCENE_INT_MAX = 2 ** 31 - 1  # Lucene counts term frequencies (impacts) and a document's total of them in Java ints
LUCENE_TERM_BYTES = 32_766  # Lucene's longest term (IndexWriter.MAX_TERM_LENGTH), in UTF-8 bytes


def run_field_problem(value: str) -> str | None:
    """What keeps ``value`` from being one column of a run file, or ``None``.

    The one rule for every column a run file holds (query and document ids, the run tag): ``read_run``
    and trec_eval split a line at any whitespace (Python's ``str.split`` counts more characters as
    whitespace than a space and a tab: no-break spaces, U+2028 and others), and C tools end a string
    at NUL, so a value with any of them would change the columns of its line.
    """
    if not value.strip():
        return "is empty"
    if any(c.isspace() for c in value):
        return "contains whitespace (run files could not hold it)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character (run files could not hold it)"
    return None


def _check_id(path: Path, number: int, value: str, what: str) -> str:
    if not value.strip():
        raise InputError(path, f"empty {what} id", number)
    problem = run_field_problem(value)
    if problem:
        raise InputError(path, f"{what} id {value[:80]!r} {problem}", number)
    return value


def check_run_tag(tag: str, option: str = "--run-tag") -> str:
    """A run tag that the run file's readers (``evaluate``, trec_eval) will read back as one column."""
    problem = run_field_problem(tag) if isinstance(tag, str) else "is not text"
    if problem:
        raise PipelineError(f"{option} {tag!r} {problem}; use letters, digits and punctuation such as - _ .")
    return tag


def corpus_files(path: Path) -> list[Path]:
    """A corpus file, or the files of a corpus folder (a Pyserini JsonCollection) in sorted order."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(path, "empty folder: no corpus files")
    return files


def corpus_format(path: Path) -> str:
    """Tell BEIR, Pyserini JsonCollection and MS MARCO TSV apart from the file name and first record."""
    files = corpus_files(path)
    formats = {_base_suffix(f) == ".tsv" for f in files}
    if len(formats) > 1:
        raise InputError(path, "mixes .tsv and JSON files; a corpus folder must hold one format")
    return _file_format(files[0])


def _file_format(path: Path) -> str:
    suffix = _base_suffix(path)
    if suffix == ".tsv":
        return "tsv"
    if suffix not in (".jsonl", ".json"):
        raise InputError(path, f"unknown corpus format '{suffix or path.name}': expected .jsonl "
                               "(BEIR or JsonCollection) or .tsv (MS MARCO), optionally .gz")
    for number, _, text in iter_lines(path):
        record = json_record(path, number, text)
        if "_id" in record:
            return "beir"
        if "id" in record and "contents" in record:
            return "jsoncollection"
        raise InputError(path, "unknown corpus format: expected BEIR fields (_id, title, text) "
                               "or JsonCollection fields (id, contents)", number)
    raise InputError(path, "empty file: no documents")


HEADER_IDS = {"id", "_id", "docid", "doc_id", "doc-id", "pid", "qid", "query_id", "query-id", "corpus-id", "topic"}
HEADER_TEXTS = {"text", "contents", "content", "passage", "query", "title", "body", "question"}


def _refuse_header(path: Path, number: int, key: str, text: str) -> None:
    """A TSV corpus or topics file has no header line (MS MARCO's have none); a first line that reads
    like one (``id<TAB>text``) would otherwise become a document or query named ``id``."""
    if number == 1 and key.strip().lower() in HEADER_IDS and text.strip().lower() in HEADER_TEXTS:
        raise InputError(path, f"looks like a header line ({key.strip()!r} / {text.strip()!r}); TSV corpora and "
                               "topics have none: remove it", number)


def parse_document(path: Path, fmt: str, number: int, text: str) -> Document:
    """One corpus line to a Document; title and text are joined as BEIR and Pyserini do."""
    if fmt == "tsv":
        doc_id, sep, body = text.partition("\t")
        if not sep:
            raise InputError(path, "expected 'id<TAB>text'", number)
        _refuse_header(path, number, doc_id, body)
        return Document(_document_id(path, number, doc_id), body.strip(), number)
    record = json_record(path, number, text)
    if fmt == "beir":
        doc_id = _string_field(path, number, record, "_id")
        body = _string_field(path, number, record, "text")
        title = _string_field(path, number, record, "title", required=False)
        contents = f"{title} {body}".strip() if title.strip() else body.strip()
    else:
        doc_id = _string_field(path, number, record, "id")
        contents = _string_field(path, number, record, "contents").strip()
    return Document(_document_id(path, number, doc_id), contents, number)


def _document_id(path: Path, number: int, doc_id: str) -> str:
    """A document id the index can hold: Lucene refuses a term over 32,766 UTF-8 bytes, and one such
    id fails the whole index after every document was encoded, so it is refused here, by line."""
    _check_id(path, number, doc_id, "document")
    size = len(doc_id.encode("utf-8", "surrogatepass"))
    if size > LUCENE_TERM_BYTES:
        raise InputError(path, f"document id of {size:,} bytes (UTF-8) is longer than Lucene's limit of "
                               f"{LUCENE_TERM_BYTES:,} bytes for a term", number)
    return doc_id


def read_corpus_from(files: list[Path], fmt: str, file_index: int = 0, start: int = 0,
                     first_line: int = 1) -> Iterator[tuple[int, int, Document]]:
    """Yield ``(file index, byte offset, Document)`` from a position, on through the later files."""
    for index in range(file_index, len(files)):
        begin, line = (start, first_line) if index == file_index else (0, 1)
        for number, offset, text in iter_lines(files[index], begin, line):
            yield index, offset, parse_document(files[index], fmt, number, text)


def read_corpus(path: Path, fmt: str | None = None) -> Iterator[tuple[int, Document]]:
    """Yield ``(byte offset in its file, Document)`` for a corpus file or folder."""
    files = corpus_files(path)
    for _, offset, doc in read_corpus_from(files, fmt or corpus_format(path)):
        yield offset, doc


def _unique(path: Path, number: int, seen: dict[str, int], key: str, what: str) -> None:
    if key in seen:
        raise InputError(path, f"duplicate {what} {key!r} (first at line {seen[key]})", number)
    seen[key] = number


def read_topics(path: Path) -> dict[str, str]:
    """Queries from BEIR ``queries.jsonl`` (``_id``, ``text``) or TSV ``qid<TAB>text``, in file order."""
    path = Path(path)
    suffix = _base_suffix(path)
    if suffix not in (".jsonl", ".json", ".tsv", ".txt"):
        raise InputError(path, f"unknown topics format '{suffix or path.name}': expected BEIR .jsonl "
                               "or 'qid<TAB>text' .tsv")
    topics: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, _, text in iter_lines(path):
        if suffix in (".jsonl", ".json"):
            record = json_record(path, number, text)
            key = "_id" if "_id" in record else "id"
            qid = _string_field(path, number, record, key)
            query = _string_field(path, number, record, "contents" if "contents" in record else "text")
        else:
            qid, sep, query = text.partition("\t")
            if not sep:
                raise InputError(path, "expected 'qid<TAB>query text'", number)
            _refuse_header(path, number, qid, query)
        _check_id(path, number, qid, "query")
        if not query.strip():
            raise InputError(path, f"query {qid!r} has no text", number)
        _unique(path, number, lines, qid, "query id")
        topics[qid] = query.strip()
    if not topics:
        raise InputError(path, "empty file: no queries")
    return topics


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Judgments from TREC qrels (``qid iter docid rel``) or BEIR TSV (``query-id corpus-id score``)."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    lines: dict[str, int] = {}
    for number, _, text in iter_lines(path):
        fields = text.split()
        if len(fields) == 3 and number == 1 and not fields[2].lstrip("-").isdigit():
            continue  # BEIR header: query-id corpus-id score
        if len(fields) == 4:
            qid, _, docid, grade = fields
        elif len(fields) == 3:
            qid, docid, grade = fields
        else:
            raise InputError(path, f"expected TREC qrels 'qid 0 docid rel' or BEIR 'qid docid score', "
                                   f"got {len(fields)} columns", number)
        try:
            value = int(grade)
        except ValueError:
            raise InputError(path, f"relevance {grade!r} is not an integer", number) from None
        if abs(value) > MAX_GRADE:
            raise InputError(path, f"relevance {grade[:20]!r} is beyond +-{MAX_GRADE:,} (trec_eval reads grades as "
                                   "C integers)", number)
        _unique(path, number, lines, f"{qid}\t{docid}", "judgment for query/doc")
        qrels.setdefault(qid, {})[docid] = value
    if not qrels:
        raise InputError(path, "empty file: no judgments")
    return qrels


def _float32(text: str) -> float:
    """A run score as trec_eval holds it: C ``atof`` (a double) stored in a 32-bit float.

    The Python float returned is exactly that float32 value, so scores that trec_eval sees as tied
    are tied here too (e.g. 140998 and 140998 - 1e-6, or 16777217 and 16777216).
    """
    import numpy as np

    value = float(text)  # ValueError for non-numbers, as the caller reports
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def read_run(path: Path) -> dict[str, dict[str, float]]:
    """A TREC run (6 columns) or MS MARCO run (``qid docid rank``; scored as -rank).

    Scores are read as trec_eval reads them, into 32-bit floats; NaN, infinite scores and scores
    beyond float32's range are input errors (trec_eval would rank them arbitrarily).
    """
    path = Path(path)
    run: dict[str, dict[str, float]] = {}
    for number, _, text in iter_lines(path):
        fields = text.split()
        if len(fields) == 6:
            qid, _, docid, _, score, _ = fields
            try:
                value = _float32(score)
            except ValueError:
                raise InputError(path, f"score {score!r} is not a number", number) from None
            if not math.isfinite(value):
                raise InputError(path, f"score {score!r} is not a finite 32-bit float (trec_eval reads "
                                       "scores as float32)", number)
        elif len(fields) == 3:
            qid, docid, rank = fields
            try:
                value = -float(int(rank))
            except ValueError:
                raise InputError(path, f"rank {rank!r} is not an integer", number) from None
        else:
            raise InputError(path, f"expected a TREC run line 'qid Q0 docid rank score tag' or MS MARCO "
                                   f"'qid docid rank', got {len(fields)} columns", number)
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise InputError(path, f"document {docid!r} appears twice for query {qid!r}", number)
        hits[docid] = value
    if not run:
        raise InputError(path, "empty run: no results")
    return run


def read_encoded_queries(path: Path) -> dict[str, dict[str, int]]:
    """Pre-encoded queries: JSONL ``{"id", "vector": {token: int}}`` or Anserini's cached TSV,
    where each token is repeated as many times as its quantised weight."""
    path = Path(path)
    suffix = _base_suffix(path)
    queries: dict[str, dict[str, int]] = {}
    lines: dict[str, int] = {}
    for number, _, text in iter_lines(path):
        if suffix in (".jsonl", ".json"):
            record = json_record(path, number, text)
            qid = _string_field(path, number, record, "id" if "id" in record else "_id")
            vector = record.get("vector")
            if not isinstance(vector, dict):
                raise InputError(path, "missing 'vector' object {token: weight}", number)
            weights = {}
            for token, weight in vector.items():
                # json accepts Infinity and NaN (and 1e999 becomes inf), which int() cannot take
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                        or weight != int(weight):
                    raise InputError(path, f"weight of {token!r} must be an integer (quantised), got {weight!r}",
                                     number)
                if int(weight) > 0:
                    weights[token] = int(weight)
        elif suffix in (".tsv", ".txt"):
            qid, sep, tokens = text.partition("\t")
            if not sep:
                raise InputError(path, "expected 'qid<TAB>token token ...'", number)
            weights = dict(Counter(tokens.split()))
        else:
            raise InputError(path, f"unknown encoded-queries format '{suffix or path.name}': expected "
                                   ".jsonl or Anserini's .tsv(.gz)")
        _check_id(path, number, qid, "query")
        _unique(path, number, lines, qid, "query id")
        queries[qid] = weights
    if not queries:
        raise InputError(path, "empty file: no queries")
    return queries
