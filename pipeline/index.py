"""The index stage: Anserini's IndexCollection builds a Lucene impact index from the collection.

IndexCollection runs in its own JVM (``-collection JsonVectorCollection -impact -pretokenized``):
its log is captured (shown with --verbose) and its final counters are checked against the
collection's manifest. The index is built in a temporary folder and renamed into place only after
Lucene confirms it holds every non-empty document, so a failed or killed run never leaves an index
that looks complete. ``splade-pipeline.json`` inside the index carries the encoder settings forward
to the search stage.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson

from pipeline import jvm, outputs, texts
from pipeline.collection import MANIFEST, PLAN, VECTORS, load_manifest, read_json, verify_vectors, write_json
from pipeline.errors import ConsistencyError, DuplicateId, InputError, PipelineError
from pipeline.readers import LUCENE_INT_MAX, LUCENE_TERM_BYTES

RECORD = "splade-pipeline.json"
COUNTERS = ("indexed", "unindexable", "empty", "skipped", "errors")


def collection_input(collection: Path) -> tuple[Path, dict[str, Any] | None]:
    """The folder Anserini should read, and the manifest if this project wrote the collection."""
    collection = Path(collection)
    if not collection.is_dir():
        raise InputError(collection, "no such collection folder")
    manifest = load_manifest(collection)
    if manifest is not None:
        verify_vectors(collection, manifest)
        return collection / VECTORS, manifest
    if (collection / PLAN).exists():
        raise PipelineError(f"{collection}: encoding is unfinished (no {MANIFEST}); run the same encode "
                            "command again to finish it")
    if not any(p.is_file() for p in collection.iterdir()):
        raise InputError(collection, "empty collection folder")
    return collection, None  # a plain JsonVectorCollection made elsewhere (e.g. by Pyserini)


def parse_counters(log: str) -> dict[str, int]:
    """IndexCollection's final counters ("indexed: 5,183", ...) from its log."""
    counters = {}
    for name in COUNTERS:
        match = re.search(rf"\b{name}:\s+([\d,]+)", log)
        if match:
            counters[name] = int(match.group(1).replace(",", ""))
    return counters


def impact_arguments(threads: int, store_raw: bool) -> list[str]:
    """IndexCollection options for a SPLADE JsonVectorCollection: impacts, no analysis."""
    args = ["-collection", "JsonVectorCollection", "-generator", "DefaultLuceneDocumentGenerator",
            "-threads", str(threads), "-impact", "-pretokenized", "-optimize"]
    return args + (["-storeRaw"] if store_raw else [])


FILE_DONE = re.compile(r": (\d+) docs added\.")


def run_indexer(source: Path, target: Path, options: list[str], verbose: bool, total: int | None = None,
                progress: bool = True) -> str:
    """Run IndexCollection in a child JVM; returns its log, raises with the log's first error on failure.

    Anserini's ``-verbose`` logs each finished input file ("N docs added"), which drives the bar.
    """
    from tqdm import tqdm

    args = ["-input", str(source), "-index", str(target), *options, "-verbose"]
    command = jvm.java_command("io.anserini.index.IndexCollection", *args, verbose=verbose)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace")
    lines = []
    try:
        with tqdm(total=total, unit="doc", desc="index", disable=not progress, file=sys.stderr) as bar:
            for line in process.stdout:  # type: ignore[union-attr]
                lines.append(line)
                if verbose:
                    sys.stderr.write(line)
                done = FILE_DONE.search(line)
                if done:
                    bar.update(int(done.group(1)))
        code = process.wait()
    finally:  # interrupted (Ctrl-C, SIGTERM): stop the indexer before its folder is removed
        if process.poll() is None:
            process.kill()
            process.wait()
    # A malformed segment makes Anserini skip the rest of that file without counting an error,
    # so any exception or error line fails the stage.
    problems = [line.strip() for line in lines if " ERROR " in line or "Exception" in line]
    if code != 0 or problems:
        detail = _log_message((problems or lines[-1:] or ["no output"])[0])[:300]
        bad = locate_bad_record(source)
        if bad is not None:
            path, number, what = bad
            raise InputError(path, f"{what}; Anserini IndexCollection failed there: {detail}", number)
        raise PipelineError(f"Anserini IndexCollection failed (exit {code}) on {source}: {detail}")
    return "".join(lines)


def locate_bad_record(source: Path) -> tuple[Path, int, str] | None:
    """The first line of a JsonVectorCollection that Anserini cannot index, found after it failed:
    its log names neither file nor line, and checking only on failure costs nothing otherwise."""
    for path in collection_files(source):
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    if raw.strip():
                        problem = _record_problem(raw)
                        if problem:
                            return path, number, problem
        except (OSError, EOFError) as exc:
            return path, 0, f"cannot read: {exc}"
    return None


def _record_problem(raw: bytes) -> str | None:
    return parse_record(raw)[1]


def parse_record(raw: bytes) -> tuple[dict | None, str | None]:
    """A JsonVectorCollection line as a record, or what is wrong with it.

    orjson first (a few times faster on vectors of hundreds of terms; every record of a collection
    passes here when counting or building the text store); the standard parser decides what orjson
    refuses and JSON admits (NaN, lone surrogate escapes, integers beyond 64 bits) and names what is wrong."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, f"invalid JSON ({exc})"
    if not isinstance(record, dict):
        return None, "expected a JSON object"
    if not isinstance(record.get("id"), str) or not record["id"].strip():
        return None, "missing or empty 'id'"
    size = len(record["id"].encode("utf-8", "surrogatepass"))
    if size > LUCENE_TERM_BYTES:
        return None, f"id of {size:,} bytes (UTF-8) is longer than Lucene's limit of {LUCENE_TERM_BYTES:,} bytes"
    vector = record.get("vector")
    if not isinstance(vector, dict):
        return None, "missing 'vector' object {token: weight}"
    for token, weight in vector.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return None, f"weight of {token!r} in document {record['id']!r} is not a number"
    if sum(weight for weight in vector.values() if weight > 0) > LUCENE_INT_MAX:
        return None, f"weights of document {record['id'][:80]!r} total more than Lucene counts ({LUCENE_INT_MAX:,})"
    return record, None


def _log_message(line: str) -> str:
    """The message part of a log4j line (after ' - '), or the line itself."""
    return line.split(" - ", 1)[1] if " - " in line else line


def count_records(folder: Path) -> tuple[int, int]:
    """Documents and empty vectors in a JsonVectorCollection made elsewhere, every record checked.

    Anserini silently counts a record it cannot read as "empty" (a weight that is not a number,
    say), so each line is validated here and a bad one stops the stage naming its file and line;
    the empty vectors counted here must then match Anserini's "empty" counter exactly.
    """
    total = empty = 0
    for _, _, record in vector_records(collection_files(folder)):
        total += 1
        empty += not any(weight > 0 for weight in record["vector"].values())
    return total, empty


def collection_files(source: Path) -> list[Path]:
    """The files Anserini reads from ``source`` (a file, or every file under a folder), in name order."""
    return [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())


def vector_records(files: Iterable[Path]) -> Iterator[tuple[Path, int, dict]]:
    """Every JsonVectorCollection record of ``files`` as (file, line, parsed), gzip or plain; a record
    Anserini could not read is a one-line error naming its file and line (``parse_record``)."""
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    if not raw.strip():
                        continue
                    record, problem = parse_record(raw)
                    if problem:
                        raise InputError(path, problem, number)
                    yield path, number, record
        except (OSError, EOFError) as exc:
            raise InputError(path, f"cannot read: {exc}") from None


def lucene_document_count(index: Path) -> int:
    """Documents Lucene itself sees in the index (independent of the indexer's counters)."""
    paths = jvm.autoclass("java.nio.file.Paths")
    directory = jvm.autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(index)))
    reader = jvm.autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        return int(reader.numDocs())
    finally:
        reader.close()
        directory.close()


def document_frequencies(index: Path) -> tuple[int, dict[str, int]]:
    """Documents in the index and each term's document frequency, read from its postings (the
    ``contents`` field's term dictionary, one pass): what an ``idf`` query side weights by."""
    paths = jvm.autoclass("java.nio.file.Paths")
    directory = jvm.autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(index)))
    reader = jvm.autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        found: dict[str, int] = {}
        for leaf in reader.leaves().toArray():  # a document lives in one segment: frequencies add up
            terms = leaf.reader().terms("contents")
            if terms is None:
                continue
            walk = terms.iterator()
            term = walk.next()
            while term is not None:
                token = term.utf8ToString()
                found[token] = found.get(token, 0) + int(walk.docFreq())
                term = walk.next()
        return int(reader.numDocs()), found
    finally:
        reader.close()
        directory.close()


def load_record(index: Path) -> dict[str, Any] | None:
    """The index's record, checked: search reads its encoder and settings, so a record that is valid
    JSON but not ours (or damaged by hand) is refused by name instead of failing somewhere later."""
    path = Path(index) / RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    problem = _record_shape(record)
    if problem:
        raise InputError(path, f"not an index record splade-pipeline can read ({problem}); rebuild the index "
                               "with --overwrite")
    return record


def _record_shape(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if "encoder" not in record:
        return None  # an index of a collection made elsewhere: no encoder settings to read
    encoder = record["encoder"]
    if not isinstance(encoder, dict) or not all(isinstance(encoder.get(key), str)
                                                for key in ("name", "location", "fingerprint")):
        return "'encoder' must name the model: name, location, fingerprint"
    if record.get("pooling") not in ("max", "sum"):
        return f"'pooling' must be max or sum, got {record.get('pooling')!r}"
    for key, kind in (("scale", (int, float)), ("max_length", int)):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or not (0 < value < math.inf):
            return f"'{key}' must be a positive number, got {value!r}"
    return None


COMPANION = "two-step"  # the two-step companion's subfolder of an index (pipeline.first_stage)
PRUNING = "pruning"  # the record key that marks a pruned (first-stage) index
INDEX_ENTRY = re.compile(r"segments(?:_\w+|\.gen)|pending_segments_\w+|write\.lock|_[^/]+"
                         r"|splade-pipeline\.json|\.splade-pipeline\.json\.\d+\.tmp"
                         rf"|{COMPANION}/(?:.+)?|{texts.FOLDER}/(?:.+)?")


def is_index_entry(name: str) -> bool:
    """Whether a name inside an index folder is Lucene's or our record."""
    return INDEX_ENTRY.fullmatch(name) is not None


def is_our_index(folder: Path) -> bool:
    """Whether ``folder`` holds our record: the proof that the index stage built it."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "counters" in record and "documents" in record


def check_index_folder(index: Path) -> bool:
    """True for an index we built, False for a new or empty folder; anything else is refused."""
    return outputs.check_folder(index, "--index", "an index", is_index_entry, is_our_index)


def _building_pid(name: str) -> int | None:
    match = re.search(r"\.building-(\d+)$", name)
    return int(match.group(1)) if match else None


# (the collection's manifest, the finished index's record or None) -> the query side to record, or
# None to leave it as it is
QuerySideRule = Callable[[dict[str, Any] | None, dict[str, Any] | None], dict[str, Any] | None]
QUERY_SIDE = "query_encoder"  # the record key of the query side; the only key a finished index's rewrite changes
RECORDED_SETTINGS = ("encoder", "pooling", "scale", "max_length", "quantisation", "prompt", "activation")


def build_index(collection: Path, index: Path, threads: int = 1, store_raw: bool = False,
                overwrite: bool = False, verbose: bool = False, progress: bool = False,
                query_encoder: QuerySideRule | None = None
                ) -> tuple[dict[str, Any], bool]:
    """Index ``collection`` into ``index``; returns the index record and whether work was done.

    ``query_encoder`` gives the query side to record (``pipeline.encoders``' description). The
    query side is the record's alone: on a finished index only the record is rewritten when it
    changes, the postings stay.
    """
    collection, index = Path(collection), outputs.resolved(index)
    with outputs.locked(index, "index"), outputs.locked(collection, "index", shared=True):
        return _build_index_locked(collection, index, threads, store_raw, overwrite, verbose, progress,
                                   query_encoder or (lambda manifest, existing: None))


def _build_index_locked(collection: Path, index: Path, threads: int, store_raw: bool, overwrite: bool,
                        verbose: bool, progress: bool, query_encoder: QuerySideRule
                        ) -> tuple[dict[str, Any], bool]:
    source, manifest = collection_input(collection)
    if check_index_folder(index) and not overwrite:
        existing = load_record(index)
        if manifest is not None and existing.get("collection_shards") == manifest["shards"]:
            if store_raw and texts.FOLDER not in existing:
                raise ConsistencyError(f"{index} was built without --store-raw (or by an earlier version, without "
                                       "a text store); use --overwrite to rebuild it with the documents stored")
            query = query_encoder(manifest, existing)
            if query is not None and existing.get(QUERY_SIDE) != query:
                existing = {**existing, QUERY_SIDE: query}
                write_json(index / RECORD, existing)
            return existing, False
        raise ConsistencyError(f"{index} was built from another collection; use --overwrite to rebuild it")
    # Anserini skips documents whose vector is empty: empty texts and texts whose weights all rounded to 0
    expected = ((manifest["documents"], manifest["empty_documents"] + manifest.get("empty_vectors", 0))
                if manifest else count_records(source))
    extra: dict[str, Any] = {}
    if manifest is not None:
        extra = {key: manifest["settings"][key] for key in RECORDED_SETTINGS if key in manifest["settings"]}
        extra.update(postings=manifest["postings"], collection_shards=manifest["shards"])
    query = query_encoder(manifest, None)
    if query is not None:
        extra[QUERY_SIDE] = query
    record = build_lucene_index(source, index, impact_arguments(threads, store_raw), expected, collection,
                                verbose, extra, progress, text_store=store_raw)
    return record, True


def build_lucene_index(source: Path, index: Path, options: list[str], expected: tuple[int, int | None],
                       collection: Path, verbose: bool, extra: dict[str, Any], progress: bool = False,
                       text_store: bool = False) -> dict[str, Any]:
    """Build into a temporary folder, verify every document is accounted for, then rename into place.

    ``text_store``: also write the records without their vectors (``pipeline.texts``), checked to
    hold exactly the documents Lucene holds, and name it in the record."""
    index = outputs.resolved(index)
    with outputs.locked(index, "index"):
        target = outputs.absolute(index)
        check_index_folder(index)  # never replace a folder the index stage did not build
        outputs.writable_parent(index, "--index")
        outputs.clean_stale(target.parent, f".{target.name}.building-*", _building_pid)
        temp = target.with_name(f".{target.name}.building-{os.getpid()}")
        shutil.rmtree(temp, ignore_errors=True)
        try:
            documents, empty = expected
            log = run_indexer(source, temp, options, verbose, documents - (empty or 0), progress)
            record = {**_verify(temp, parse_counters(log), expected, collection), **extra}
            if text_store:
                record[texts.FOLDER] = write_text_store(source, temp, record["documents"], progress)
            write_json(temp / RECORD, record)
            if check_index_folder(index):
                outputs.remove_owned(index, is_index_entry)
            elif target.is_dir():
                target.rmdir()  # empty
            os.replace(temp, target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return record


def write_text_store(source: Path, index: Path, documents: int, progress: bool) -> dict[str, Any]:
    """The index's text store from the collection it was built from; what the record says of it."""
    from tqdm import tqdm

    files = collection_files(source)
    with tqdm(vector_records(files), total=documents, unit="doc", desc="texts", disable=not progress,
              file=sys.stderr) as records:
        try:
            store = texts.write_store(index / texts.FOLDER, (record for _, _, record in records))
        except DuplicateId as duplicate:
            raise duplicate_error(files, duplicate.docid) from None
    if store["documents"] != documents:
        raise ConsistencyError(f"{source}: {store['documents']:,} documents with a positive weight, but the index "
                               f"holds {documents:,}")
    return {"documents": store["documents"], "bytes": store["arrays"]["data"]["length"],
            "sha256": outputs.file_sha256(index / texts.FOLDER / texts.RECORD)}


def duplicate_error(files: list[Path], docid: str) -> InputError:
    """The second record with ``docid``, named by file and line (looked for only once one is known)."""
    first = None
    for path, line, record in vector_records(files):
        if record["id"] == docid and any(weight > 0 for weight in record["vector"].values()):
            if first is not None:
                return InputError(path, f"duplicate document id {docid[:80]!r} (first at {first[0].name} line "
                                        f"{first[1]}); documents are read back by id", line)
            first = (path, line)
    return InputError(files[0].parent if files else Path("."), f"duplicate document id {docid[:80]!r}")


def _verify(index: Path, counters: dict[str, int], expected: tuple[int, int | None],
            collection: Path) -> dict[str, Any]:
    """Every document accounted for: indexed + empty = collection size, nothing skipped or failed."""
    if set(counters) != set(COUNTERS):
        raise PipelineError(f"Anserini IndexCollection did not report its counters for {collection}")
    bad = {name: counters[name] for name in ("unindexable", "skipped", "errors") if counters[name]}
    if bad:
        raise PipelineError(f"indexing {collection} lost documents: "
                            + ", ".join(f"{n} {v}" for n, v in bad.items()) + " (rerun with --verbose)")
    in_lucene = lucene_document_count(index)
    if in_lucene != counters["indexed"]:
        raise PipelineError(f"Lucene sees {in_lucene} documents in {index}, Anserini reported {counters['indexed']}")
    documents, empty = expected
    if in_lucene + counters["empty"] != documents or (empty is not None and counters["empty"] != empty):
        raise PipelineError(f"{collection} has {documents} documents ({empty if empty is not None else '?'} "
                            f"empty) but the index holds {in_lucene} and Anserini skipped {counters['empty']} "
                            "as empty")
    return {"collection": str(collection.resolve()), "counters": counters, "documents": in_lucene}
