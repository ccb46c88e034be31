"""The two-step companion of an impact index: a pruned first-stage index and the full vectors.

Exhaustive impact search costs grow with the collection (docs/scale.md). Two-step search
(Lassance et al., "Two-Step SPLADE", ECIR 2024) finds candidates in a *pruned* index, where each
document keeps only its largest impacts, and rescores them exactly with the full vectors. This
module builds what that needs, in the index stage, from the same collection the full index was
built from, into a subfolder of the index so that one ``--index`` path serves both searches::

    indexes/NAME/                    the full impact index, as the index stage builds it
        two-step/
            two-step.json            record: pruning rule, counts, checksums, the full index it belongs to
            first-stage/             Lucene impact index of the pruned vectors (built by pipeline.index)
            forward/                 the full quantised vectors by document (pipeline.forward)
            max-pruned.bin           per term: the largest impact pruned away (for the miss bound)
            lucene-rows.bin          per first-stage Lucene document number: its forward-store row

The companion is built in a temporary folder beside the index and renamed into place, and its
record names the full index's record by checksum: rebuilding the full index removes the
companion with it, and a companion that does not belong to its index is refused at search time.
The first-stage index's own record carries the ``pruning`` key, and the search stage refuses to
search it as if it were a full index (its scores are not the full dot products).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import forward, outputs
from pipeline.collection import read_json, write_json
from pipeline.errors import ConsistencyError, DuplicateId, InputError, PipelineError
from pipeline.index import (COMPANION, PRUNING, QUERY_SIDE, RECORDED_SETTINGS, build_lucene_index, collection_files,
                            collection_input, duplicate_error, impact_arguments, is_our_index, load_record,
                            vector_records)
from pipeline.search import ImpactSearcher

COMPANION_RECORD = "two-step.json"
FIRST_STAGE = "first-stage"
FORWARD = "forward"
MAX_PRUNED = "max-pruned.bin"
LUCENE_ROWS = "lucene-rows.bin"
PRUNED_COLLECTION = "pruned-collection"
DEFAULT_PRUNE_DOCS = 128  # postings kept per document; chosen from bench/results/two_step.json (two_step.py)


@dataclass(frozen=True)
class Companion:
    """Where an index's companion parts are, and its record."""

    folder: Path
    record: dict[str, Any]

    @property
    def first_stage(self) -> Path:
        return self.folder / FIRST_STAGE

    @property
    def forward(self) -> Path:
        return self.folder / FORWARD

    def max_pruned(self) -> np.ndarray:
        spec = self.record["max_pruned"]
        return np.fromfile(self.folder / MAX_PRUNED, dtype=spec["dtype"])

    def lucene_rows(self) -> np.ndarray:
        """Per Lucene document number of the first-stage index, its forward-store row (-1: none)."""
        spec = self.record["lucene_rows"]
        return np.fromfile(self.folder / LUCENE_ROWS, dtype=spec["dtype"]).astype(np.int64)


def companion_folder(index: Path) -> Path:
    return Path(index) / COMPANION


def full_record_digest(index: Path) -> str:
    """The full index's record, by checksum: what ties a companion to the index it was built beside.

    The record's query side is left out: ``index --query-encoder`` rewrites only that key of a finished
    index (its postings stay), and the companion holds document vectors only, so it stays valid."""
    if not is_our_index(index):
        raise InputError(index, "not an index built by the index stage (no splade-pipeline.json); build the "
                                "full index first")
    record = load_record(index)
    return outputs.value_sha256({key: value for key, value in record.items() if key != QUERY_SIDE})


def pruning_rule(prune_docs: int, min_impact: int = 0) -> dict[str, Any]:
    """The rule as recorded: which postings a document keeps in the first-stage index. Without
    ``min_impact`` the record is the one earlier companions carry, so they stay valid."""
    if not min_impact:
        return {"rule": "top postings per document by impact, ties by term", "postings_per_doc": prune_docs}
    return {"rule": "top postings per document by impact, ties by term, then those of at least min_impact",
            "postings_per_doc": prune_docs, "min_impact": min_impact}


def describe_rule(rule: dict[str, Any]) -> str:
    """The rule as the command line gives it, for messages."""
    text = f"--prune-docs {rule.get('postings_per_doc')}"
    return text + (f" --prune-impact {rule['min_impact']}" if rule.get("min_impact") else "")


def check_prune_docs(prune_docs: int, min_impact: int = 0) -> None:
    for name, value, least in (("--prune-docs", prune_docs, 1), ("--prune-impact", min_impact, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise PipelineError(f"{name} must be an integer of at least {least}, got {value!r}")


def kept_postings(postings: list[tuple[str, int]], prune_docs: int, min_impact: int) -> list[tuple[str, int]]:
    """What the first stage holds of a document's postings (largest first): the first ``prune_docs``,
    less those under ``min_impact``. The one home of the rule; ``pruned_maxima`` bounds what it drops."""
    top = postings[:prune_docs]
    return [posting for posting in top if posting[1] >= min_impact] if min_impact else top


def open_companion(index: Path) -> Companion:
    """The companion of ``index``, checked to belong to it; a missing or stale one is refused."""
    index = Path(index)
    folder = companion_folder(index)
    path = folder / COMPANION_RECORD
    if not path.is_file():
        raise InputError(index, "has no two-step companion; build it with: splade-pipeline index "
                                "--collection ... --index ... --prune-docs N")
    record = read_json(path)
    if record.get("full_index_record") != full_record_digest(index):
        raise ConsistencyError(f"{folder} was built for another version of {index}; rebuild it with "
                               "index --prune-docs N --overwrite")
    if "lucene_rows" not in record:
        raise ConsistencyError(f"{folder} was built by an earlier version (no {LUCENE_ROWS}); rebuild it with "
                               "index --prune-docs N --overwrite")
    for name, key in ((MAX_PRUNED, "max_pruned"), (LUCENE_ROWS, "lucene_rows")):
        if outputs.file_sha256(folder / name) != record[key]["sha256"]:
            raise InputError(folder / name, "changed since it was built (sha256 differs from two-step.json)")
    forward.read_record(folder / FORWARD)  # its format, before a service loads anything else
    return Companion(folder, record)


def companion_record(index: Path) -> dict[str, Any] | None:
    path = companion_folder(index) / COMPANION_RECORD
    return read_json(path) if path.is_file() else None


def record_files(collection: Path) -> list[Path]:
    """The collection's JsonVectorCollection files, in the order the manifest lists them."""
    source, manifest = collection_input(collection)
    if manifest is not None:
        return [Path(collection) / shard["file"] for shard in manifest["shards"]]
    return collection_files(source)


def integer_postings(path: Path, line: int, vector: dict) -> list[tuple[str, int]]:
    """A document's positive postings in store order; weights must be integers (exact dot products)."""
    for term, weight in vector.items():
        if not float(weight).is_integer() or weight < 0:
            raise InputError(path, f"weight {weight!r} of {term[:40]!r} is not a non-negative integer; two-step "
                                   "rescoring needs the integer impacts the index holds", line)
    return forward.top_terms({term: int(weight) for term, weight in vector.items() if weight > 0}, None)


def build_companion(collection: Path, index: Path, prune_docs: int = DEFAULT_PRUNE_DOCS, threads: int = 1,
                    overwrite: bool = False, verbose: bool = False, progress: bool = False, min_impact: int = 0
                    ) -> tuple[dict[str, Any], bool]:
    """Build the companion of the (already built) full ``index`` from ``collection``; returns its record
    and whether work was done. A companion with another rule is replaced only with ``overwrite``.
    ``min_impact``: postings under it are left out of the first stage too (pruning by impact)."""
    check_prune_docs(prune_docs, min_impact)
    rule = pruning_rule(prune_docs, min_impact)
    collection, index = Path(collection), Path(index)
    with outputs.locked(index, "index"), outputs.locked(collection, "index", shared=True):
        digest = full_record_digest(index)
        existing = companion_record(index)
        if existing is not None and forward.earlier_format(companion_folder(index) / FORWARD):
            existing = None  # a store of an earlier format: derived data, built again with no --overwrite
        if existing is not None and existing.get("full_index_record") == digest:
            if existing.get(PRUNING) == rule and not overwrite:
                return existing, False
            if not overwrite:
                raise ConsistencyError(
                    f"{companion_folder(index)} was built with {describe_rule(existing.get(PRUNING, {}))}; use "
                    f"--overwrite to rebuild it with {describe_rule(rule)}")
        target = outputs.absolute(companion_folder(index))
        temp = target.parent.with_name(f".{target.parent.name}.{COMPANION}.building-{os.getpid()}")
        outputs.clean_stale(target.parent.parent, f".{target.parent.name}.{COMPANION}.building-*", _building_pid)
        shutil.rmtree(temp, ignore_errors=True)
        try:
            record = _build(collection, index, temp, prune_docs, min_impact, threads, verbose, progress)
            record["full_index_record"] = digest
            write_json(temp / COMPANION_RECORD, record)
            if target.exists():
                shutil.rmtree(target)
            os.replace(temp, target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return record, True


def _building_pid(name: str) -> int | None:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _build(collection: Path, index: Path, temp: Path, prune_docs: int, min_impact: int, threads: int,
           verbose: bool, progress: bool) -> dict[str, Any]:
    """Forward store and pruned collection in one pass over the collection, then the pruned index.
    A document whose postings are all pruned away stays out of the first stage (Lucene skips an
    empty vector); the miss bound covers it (its first-stage score is 0)."""
    start = time.perf_counter()
    full = load_record(index)
    pruned_folder = temp / PRUNED_COLLECTION
    pruned_folder.mkdir(parents=True)
    files = [open(pruned_folder / f"part-{i:05d}.jsonl", "wb") for i in range(max(threads, 1))]
    writer = forward.ForwardWriter(temp / FORWARD)
    documents = empty = emptied = kept = 0
    sources = record_files(collection)
    try:
        for path, line, record in vector_records(sources):
            postings = integer_postings(path, line, record["vector"])
            first = kept_postings(postings, prune_docs, min_impact)
            if postings:
                writer.add(record["id"], postings)
                kept += len(first)
                emptied += not first
            else:
                empty += 1
            pruned = {"id": record["id"], "contents": "", "vector": dict(first)}
            files[documents % len(files)].write(json.dumps(pruned, ensure_ascii=False).encode() + b"\n")
            documents += 1
    except BaseException:
        writer.abandon()
        raise
    finally:
        for handle in files:
            handle.close()
    try:
        store = writer.finish()
    except DuplicateId as duplicate:
        raise duplicate_error(sources, duplicate.docid) from None
    if min_impact and store["documents"] and emptied == store["documents"]:
        raise PipelineError(f"--prune-impact {min_impact} leaves no posting in the first stage: the largest impact "
                            f"in {collection} is {store['largest_impact']}")
    if store["documents"] != full["documents"]:
        raise ConsistencyError(f"{collection} holds {store['documents']} documents with postings, but {index} "
                               f"holds {full['documents']}: the collection changed since the index was built; "
                               "rebuild the index with --overwrite")
    pass_seconds = time.perf_counter() - start
    extra = {key: full[key] for key in RECORDED_SETTINGS if key in full}
    rule = pruning_rule(prune_docs, min_impact)
    first = build_lucene_index(pruned_folder, temp / FIRST_STAGE, impact_arguments(threads, False),
                               (documents, empty + emptied), collection, verbose, {**extra, PRUNING: rule}, progress)
    shutil.rmtree(pruned_folder)
    store_view = forward.ForwardStore(temp / FORWARD, check=False)
    maxima = pruned_maxima(store_view, prune_docs, min_impact)
    maxima.tofile(temp / MAX_PRUNED)
    rows = lucene_rows(temp / FIRST_STAGE, store_view, store_view.documents - emptied)
    rows.tofile(temp / LUCENE_ROWS)
    return {"created_by": outputs.CREATED_BY, PRUNING: rule, "documents": documents,
            "indexed": first["documents"], "postings": {"full": store["postings"], "first_stage": kept},
            **({"pruned_to_nothing": emptied} if min_impact else {}),
            "max_pruned": {"dtype": maxima.dtype.str, "length": len(maxima),
                           "sha256": outputs.file_sha256(temp / MAX_PRUNED)},
            "lucene_rows": {"dtype": rows.dtype.str, "length": len(rows),
                            "sha256": outputs.file_sha256(temp / LUCENE_ROWS)},
            "largest_impact": store["largest_impact"],
            "build_seconds": {"forward_and_pruned_collection": round(pass_seconds, 2),
                              "first_stage_index": round(time.perf_counter() - start - pass_seconds, 2)},
            **extra}


def lucene_rows(first_stage: Path, store: forward.ForwardStore, expected: int) -> np.ndarray:
    """Per Lucene document number of the built first-stage index, the forward-store row of the same
    document (-1 for one without postings, which no search returns); ``expected``: how many of the
    store's documents the first stage holds (those the pruning left a posting).

    Two-step search then reads its candidates' full vectors by the numbers Lucene returns, with no
    document id decoded or looked up per candidate (at k' = 2,000, decoding and looking up ids cost
    a fifth of a query). Numbers depend on how Lucene built the index, so the map is made from the
    index itself, once, by reading every (number, id) pair in id order.
    """
    searcher = ImpactSearcher(first_stage, first_stage=True)
    try:
        rows = np.full(int(searcher.reader.maxDoc()), -1, dtype=np.int32 if store.documents < 2**31 else np.int64)
        for numbers, ids in searcher.numbers_by_id():
            rows[np.asarray(numbers, dtype=np.int64)] = store.find(ids)
    finally:
        searcher.close()
    mapped = rows[rows >= 0]
    if len(mapped) != expected or len(np.unique(mapped)) != expected:
        raise ConsistencyError(f"{first_stage} does not hold {expected} of the forward store's documents once "
                               "each; rebuild it with index --prune-docs N --overwrite")
    return rows


def pruned_maxima(store: forward.ForwardStore, prune_docs: int, min_impact: int = 0, chunk: int = 1 << 16
                  ) -> np.ndarray:
    """Per term, the largest impact that the first stage does not hold: a row's postings past its
    first ``prune_docs`` (the store keeps rows largest first) or under ``min_impact``
    (``kept_postings``' rule, over whole arrays). Zero for a term never pruned."""
    maxima = np.zeros(len(store.words), dtype=store.max_impact.dtype)
    offsets = np.asarray(store.offsets, dtype=np.int64)
    for lo in range(0, store.documents, chunk):
        hi = min(lo + chunk, store.documents)
        first, last = offsets[lo], offsets[hi]
        starts = offsets[lo:hi]
        lengths = offsets[lo + 1:hi + 1] - starts
        rank = np.arange(last - first, dtype=np.int64) - np.repeat(starts - first, lengths)
        terms, impacts = store.read_postings(first, last)
        pruned = (rank >= prune_docs) | (impacts < min_impact)
        if pruned.any():
            np.maximum.at(maxima, terms[pruned].astype(np.intp), impacts[pruned].astype(maxima.dtype))
    return maxima


def companion_bytes(index: Path) -> dict[str, int]:
    """Sizes on disk: the first-stage index and the forward store (what two-step search needs)."""
    folder = companion_folder(index)
    size = lambda path: sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    return {"first_stage_bytes": size(folder / FIRST_STAGE), "forward_bytes": size(folder / FORWARD)}
