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
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline import jvm
from pipeline.collection import MANIFEST, PLAN, VECTORS, load_manifest, read_json, verify_vectors, write_json
from pipeline.errors import ConsistencyError, InputError, PipelineError

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
    with tqdm(total=total, unit="doc", desc="index", disable=not progress, file=sys.stderr) as bar:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if verbose:
                sys.stderr.write(line)
            done = FILE_DONE.search(line)
            if done:
                bar.update(int(done.group(1)))
    code = process.wait()
    # A malformed segment makes Anserini skip the rest of that file without counting an error,
    # so any exception or error line fails the stage.
    problems = [line.strip() for line in lines if " ERROR " in line or "Exception" in line]
    if code != 0 or problems:
        detail = (problems or lines[-1:] or ["no output"])[0]
        raise PipelineError(f"Anserini IndexCollection failed (exit {code}): {_log_message(detail)[:300]}")
    return "".join(lines)


def _log_message(line: str) -> str:
    """The message part of a log4j line (after ' - '), or the line itself."""
    return line.split(" - ", 1)[1] if " - " in line else line


def count_records(folder: Path) -> int:
    """Non-blank lines in a JsonVectorCollection made elsewhere: the documents Anserini must see."""
    total = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


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


def load_record(index: Path) -> dict[str, Any] | None:
    path = Path(index) / RECORD
    return read_json(path) if path.is_file() else None


def build_index(collection: Path, index: Path, threads: int = 1, store_raw: bool = False,
                overwrite: bool = False, verbose: bool = False, progress: bool = False
                ) -> tuple[dict[str, Any], bool]:
    """Index ``collection`` into ``index``; returns the index record and whether work was done."""
    collection, index = Path(collection), Path(index)
    source, manifest = collection_input(collection)
    existing = load_record(index) if index.is_dir() else None
    if index.exists() and not overwrite:
        if existing is None:
            raise ConsistencyError(f"{index} exists and was not built by splade-pipeline; use --overwrite")
        if manifest is not None and existing.get("collection_shards") == manifest["shards"]:
            return existing, False
        raise ConsistencyError(f"{index} was built from another collection; use --overwrite to rebuild it")
    expected = (manifest["documents"], manifest["empty_documents"]) if manifest else (count_records(source), None)
    extra: dict[str, Any] = {}
    if manifest is not None:
        extra = {key: manifest["settings"][key] for key in ("encoder", "pooling", "scale", "max_length")}
        extra.update(postings=manifest["postings"], collection_shards=manifest["shards"])
    record = build_lucene_index(source, index, impact_arguments(threads, store_raw), expected, collection,
                                verbose, extra, progress)
    return record, True


def build_lucene_index(source: Path, index: Path, options: list[str], expected: tuple[int, int | None],
                       collection: Path, verbose: bool, extra: dict[str, Any], progress: bool = False
                       ) -> dict[str, Any]:
    """Build into a temporary folder, verify every document is accounted for, then rename into place."""
    index.parent.mkdir(parents=True, exist_ok=True)
    temp = index.with_name(f".{index.name}.building-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        documents, empty = expected
        log = run_indexer(source, temp, options, verbose, documents - (empty or 0), progress)
        record = {**_verify(temp, parse_counters(log), expected, collection), **extra}
        write_json(temp / RECORD, record)
        if index.exists():
            shutil.rmtree(index)
        os.replace(temp, index)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return record


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
