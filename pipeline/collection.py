"""The encode stage: a corpus becomes an Anserini JsonVectorCollection of quantised SPLADE vectors.

Layout of ``collections/NAME/``::

    plan.json          settings and shard boundaries, fixed by a first validation pass
    vectors/           the JsonVectorCollection (what Anserini indexes): part-00000.jsonl, ...
    shards/            one small JSON per finished shard (counts, postings, checksum)
    manifest.json      written last: the collection is complete only when it exists

Shards are independent units: ``encode_shard(folder, index, encoder)`` needs only the plan, so
a cluster engine (Ray) can map it over shard indices and call ``finish`` afterwards. Each shard is
written to a temporary file and renamed, so a killed run leaves whole shards or none; running the
same command again encodes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline import __version__, outputs
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.outputs import file_sha256, write_atomic  # write_atomic is also used by search, bm25, train
from pipeline.readers import (LUCENE_INT_MAX, Document, corpus_files, corpus_format, read_corpus,
                              read_corpus_from)

PLAN = "plan.json"
MANIFEST = "manifest.json"
VECTORS = "vectors"
SHARDS = "shards"
TMP = ".tmp"
DEFAULT_SHARD_SIZE = 10_000


@dataclass(frozen=True)
class EncodeSettings:
    """Everything that changes the bytes of a collection; a resumed run must match it exactly.

    The encoder's fingerprint carries its backend and precision (``models.ModelRef.describe``);
    ``device`` is the kind of device that computed the vectors (``cpu``, ``cuda``, ``mps``): the
    same checkpoint in fp32 gives a few different impacts on a GPU than on the CPU (cuda fp32
    changed 0.006% of SciFact's impacts, ``bench/results/gpu.json``), so shards from both must not
    share a collection. The CPU thread count is not recorded: the document path gave the same
    impacts, float weights included, on one thread and on two (1,000 SciFact documents, splade-tiny,
    on a 2-core machine; tests/test_collection_settings.py checks the demo corpus).
    """

    encoder: dict[str, str]
    pooling: str
    scale: float
    max_length: int
    batch_size: int
    shard_size: int = DEFAULT_SHARD_SIZE
    device: str = "cpu"
    quantisation: str = "scale"  # pipeline.encoder.QUANTISATIONS
    prompt: str = ""  # prepended to each text (a sentence-transformers model's document prompt)
    activation: str = "relu"  # SpladePooling's activation

    def key(self) -> dict[str, Any]:
        """The fields compared between runs (the encoder by fingerprint, not by where it lies)."""
        return settings_key(asdict(self))


SETTING_DEFAULTS = {"quantisation": "scale", "prompt": "", "activation": "relu"}  # absent from older records


def settings_key(settings: dict[str, Any]) -> dict[str, Any]:
    """Recorded settings in comparable form: the encoder by fingerprint, not by where it lies;
    settings added later read as their defaults, so older collections still resume."""
    return {**SETTING_DEFAULTS, **settings, "encoder": settings["encoder"]["fingerprint"]}


def differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable list of the settings that differ, e.g. ``scale 100 -> 50``.

    A setting the record does not hold (``device``, in collections from before it was recorded) is
    not compared: such a collection stays usable, as it was, rather than refused for a field it
    could not have.
    """
    return [f"{name} {recorded.get(name)!r} -> {value!r}" for name, value in wanted.items()
            if name in recorded and recorded[name] != value]


# -- small file helpers ------------------------------------------------------------------------

def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable: {exc}") from None


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


# -- memory ------------------------------------------------------------------------------------

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def steady_memory() -> None:
    """Keep encoding's peak memory flat across shards (glibc only; a no-op elsewhere).

    glibc raises its mmap threshold each time a large block is freed, so later tensors come from
    a heap that fragments and grows for the first several shards. A fixed 1 MiB threshold returns
    large blocks to the system on free; ``release_memory`` trims the rest after each shard.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)


def release_memory() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


# -- the validation pass -----------------------------------------------------------------------

def source_identity(path: Path) -> dict[str, Any]:
    """Where the corpus is and what it looked like: a change since planning invalidates the plan.

    A corpus is identified by its content: ``sha256`` over its files' names and bytes. Size and
    modification time alone miss an edit that keeps the size and restores the time (``rsync -t``,
    ``touch -r``, a checkout), which would keep the old vectors of changed documents. Hashing reads the
    corpus once more at disk speed, on every run (a rerun of a finished collection included).
    """
    files = corpus_files(path)
    stats = [f.stat() for f in files]
    return {"path": str(path.resolve()), "files": [str(f.relative_to(path)) for f in files] if path.is_dir() else [],
            "bytes": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats),
            "sha256": corpus_sha256(path)}


def same_source(recorded: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the corpus is the one recorded: by content digest; a plan written before digests were
    recorded falls back to size and modification time (all it has)."""
    keys = ("files", "bytes", "sha256") if "sha256" in recorded else ("files", "bytes", "mtime_ns")
    return all(recorded.get(key) == now.get(key) for key in keys)


def corpus_sha256(path: Path) -> str:
    """The content digest of a corpus file or folder: each file's name (relative) and bytes, in order."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in corpus_files(path):
        name = str(file.relative_to(path)) if path.is_dir() else ""
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def source_paths(source: dict[str, Any]) -> list[Path]:
    root = Path(source["path"])
    return [root / name for name in source["files"]] if source["files"] else [root]


def plan_corpus(path: Path, shard_size: int, progress: bool = True) -> dict[str, Any]:
    """Read the whole corpus once: validate every record, find duplicate ids, fix shard boundaries.

    Only shard starts and one 8-byte hash per id are kept, so memory stays small at any corpus size.
    """
    import numpy as np
    from tqdm import tqdm

    fmt = corpus_format(path)
    source = {**source_identity(path), "format": fmt}
    files = corpus_files(path)  # paths as the user gave them, for error messages
    sizes = [f.stat().st_size for f in files]
    before = np.concatenate([[0], np.cumsum(sizes)]).tolist()  # bytes in the files before each one
    shards: list[dict[str, int]] = []
    hashes = np.empty(1 << 16, dtype=np.int64)
    count = empty = 0
    # Progress in bytes read; gzip offsets count decompressed bytes, so those get no total.
    total = None if any(f.suffix == ".gz" for f in files) else sum(sizes)
    with tqdm(total=total, unit="B", unit_scale=True, desc="validate", disable=not progress,
              file=sys.stderr) as bar:
        for file_index, offset, doc in read_corpus_from(files, fmt):
            if count % shard_size == 0:
                shards.append({"file": file_index, "offset": offset, "line": doc.line, "documents": 0})
            shards[-1]["documents"] += 1
            if count == len(hashes):
                hashes = np.resize(hashes, 2 * len(hashes))
            hashes[count] = hash(doc.id)
            count += 1
            empty += not doc.text
            if count % 4096 == 0:
                bar.update(before[file_index] + offset - bar.n)
        if total is not None:
            bar.update(total - bar.n)
    if not count:
        raise InputError(path, "no documents")
    _check_duplicates(path, fmt, hashes[:count])
    return {"source": source, "documents": count, "empty_documents": empty, "shards": shards}


def _check_duplicates(path: Path, fmt: str, hashes) -> None:
    """Sort the id hashes; on a collision, re-read the file to name the duplicate and both lines."""
    import numpy as np

    ordered = np.sort(hashes)
    clashes = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not clashes:
        return
    seen: dict[str, int] = {}
    for _, doc in read_corpus(path, fmt):
        if hash(doc.id) in clashes:
            if doc.id in seen:
                raise InputError(path, f"duplicate document id {doc.id!r} (first at line {seen[doc.id]})", doc.line)
            seen[doc.id] = doc.line


# -- shards ------------------------------------------------------------------------------------

def shard_documents(plan: dict[str, Any], index: int) -> Iterator[Document]:
    """The documents of one shard, read from its recorded byte offset."""
    source = plan["source"]
    shard = plan["shards"][index]
    reader = read_corpus_from(source_paths(source), source["format"], shard["file"], shard["offset"],
                              shard["line"])
    for _, (_, _, doc) in zip(range(shard["documents"]), reader):
        yield doc


def document_line(doc_id: str, contents: str, terms: dict[str, int]) -> bytes:
    """One JsonVectorCollection record: ``{"id", "contents", "vector": {token: int}}``."""
    return json.dumps({"id": doc_id, "contents": contents, "vector": terms}, ensure_ascii=False).encode() + b"\n"


def encode_shard(folder: Path, index: int, encoder, on_progress: Callable[[int], Any] | None = None
                 ) -> dict[str, Any]:
    """Encode shard ``index`` of the planned collection in ``folder`` and write it atomically.

    Idempotent and independent of other shards: the unit of work for resuming and for a cluster
    (``pipeline.distributed`` runs ``shard_content`` on Ray workers and ``write_shard`` here).
    """
    plan = read_json(folder / PLAN)
    data, info = shard_content(plan, index, read_shard(plan, index), encoder, on_progress)
    write_shard(folder, index, data, info)
    return info


def read_shard(plan: dict[str, Any], index: int) -> list[Document]:
    """The documents of shard ``index``, checked against the count the plan recorded."""
    docs = list(shard_documents(plan, index))
    expected = plan["shards"][index]["documents"]
    if len(docs) != expected:
        raise InputError(plan["source"]["path"], f"shard {index} expected {expected} documents, found "
                                                 f"{len(docs)}: the corpus changed since it was planned")
    return docs


def shard_content(plan: dict[str, Any], index: int, docs: list[Document], encoder,
                  on_progress: Callable[[int], Any] | None = None) -> tuple[bytes, dict[str, Any]]:
    """The vectors file's bytes and the record of one shard; writes nothing.

    Depends only on the plan, the documents and the encoder, so one process can compute it and
    another write it (a Ray worker and the driver).
    """
    settings = plan["settings"]
    scale = settings["scale"]
    texts = [doc.text for doc in docs if doc.text]
    vectors = iter(encoder.encode(texts, settings["batch_size"], on_batch=on_progress))
    lines, postings = [], []
    for doc in docs:
        terms = encoder.to_terms(next(vectors), scale, settings.get("quantisation", "scale")) if doc.text else {}
        if sum(terms.values()) > LUCENE_INT_MAX:
            raise PipelineError(f"--scale {scale:g} gives document {doc.id[:80]!r} impacts totalling "
                                f"{sum(terms.values()):,}, beyond what Lucene counts ({LUCENE_INT_MAX:,}); "
                                "use a smaller --scale, e.g. 100")
        lines.append(document_line(doc.id, doc.text, terms))
        postings.append(len(terms))
    emptied = sum(1 for doc, count in zip(docs, postings) if doc.text and not count)
    if texts and emptied == len(texts):
        raise PipelineError(f"--scale {scale:g} leaves every vector of shard {index} empty (no weight x "
                            f"{scale:g} rounds to 1 or more); use a larger --scale, e.g. 100")
    if on_progress and len(texts) < len(docs):
        on_progress(len(docs) - len(texts))  # empty documents are kept, with an empty vector
    data = b"".join(lines)
    name = shard_name(index)
    info = {"file": f"{VECTORS}/{name}.jsonl", "planned": plan["shards"][index], "documents": len(docs),
            "empty_documents": sum(1 for doc in docs if not doc.text), "empty_vectors": emptied,
            "postings": sum(postings), "max_postings": max(postings, default=0),
            "sha256": hashlib.sha256(data).hexdigest()}
    return data, info


def write_shard(folder: Path, index: int, data: bytes, info: dict[str, Any]) -> None:
    """Vectors first, then the record that marks the shard finished; each atomically."""
    name = shard_name(index)
    write_atomic(folder / VECTORS / f"{name}.jsonl", data, temp_dir=folder / TMP)
    write_json(folder / SHARDS / f"{name}.json", info)


def finished_shards(folder: Path, plan: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Shards whose file and record both exist and agree: the record is the plan's shard and the
    vectors file has the record's sha256. The rest (missing, unrecorded, or changed since written:
    a disk error, a hand edit) must be (re)encoded, so a resumed or finished collection never
    carries a shard its manifest does not describe."""
    done = {}
    for index in range(len(plan["shards"])):
        record_path = folder / SHARDS / f"{shard_name(index)}.json"
        vector_path = folder / VECTORS / f"{shard_name(index)}.jsonl"
        if record_path.is_file() and vector_path.is_file():
            record = read_json(record_path)
            if isinstance(record, dict) and record.get("planned") == plan["shards"][index] \
                    and record.get("sha256") == file_sha256(vector_path):  # else ours to encode again
                done[index] = record
    return done


def finish(folder: Path) -> dict[str, Any]:
    """Check every shard and write the manifest; called once all shards are encoded."""
    plan = read_json(folder / PLAN)
    done = finished_shards(folder, plan)
    missing = [shard_name(i) for i in range(len(plan["shards"])) if i not in done]
    if missing:
        raise PipelineError(f"{folder}: {len(missing)} shard(s) not encoded yet ({', '.join(missing[:3])}...)")
    records = [done[i] for i in range(len(plan["shards"]))]
    documents = sum(r["documents"] for r in records)
    if documents != plan["documents"]:
        raise PipelineError(f"{folder}: shards hold {documents} documents, the corpus {plan['documents']}")
    postings = sum(r["postings"] for r in records)
    manifest = {
        "format": "JsonVectorCollection", "created_by": f"splade-pipeline {__version__}",
        "source": plan["source"], "settings": plan["settings"],
        "documents": documents, "empty_documents": sum(r["empty_documents"] for r in records),
        # documents with text whose every weight rounded to 0: Anserini skips them as empty too
        "empty_vectors": sum(r.get("empty_vectors", 0) for r in records),
        "postings": {"total": postings, "mean_per_doc": round(postings / documents, 2),
                     "max_per_doc": max(r["max_postings"] for r in records)},
        "shards": [{"file": r["file"], "documents": r["documents"], "sha256": r["sha256"]} for r in records],
    }
    write_json(folder / MANIFEST, manifest)
    shutil.rmtree(folder / TMP, ignore_errors=True)
    return manifest


# -- the stage ---------------------------------------------------------------------------------

MISSING_SHARD = "missing shard listed in manifest.json"


def shard_problems(folder: Path, manifest: dict[str, Any]) -> list[tuple[Path, str]]:
    """What keeps ``vectors/`` from holding exactly the manifest's shards, unchanged: (file, problem)."""
    folder = Path(folder)
    expected = {Path(shard["file"]).name: shard["sha256"] for shard in manifest["shards"]}
    present = {path.name for path in (folder / VECTORS).iterdir()} if (folder / VECTORS).is_dir() else set()
    problems = [(folder / VECTORS / name, "unexpected file in the collection (not in manifest.json)")
                for name in sorted(present - set(expected))]
    problems += [(folder / VECTORS / name, MISSING_SHARD) for name in sorted(set(expected) - present)]
    problems += [(folder / VECTORS / name, "changed since it was encoded (sha256 differs from manifest.json); "
                                           "encode again with --overwrite")
                 for name, checksum in sorted(expected.items())
                 if name in present and file_sha256(folder / VECTORS / name) != checksum]
    return problems


def verify_vectors(folder: Path, manifest: dict[str, Any]) -> None:
    """``vectors/`` must hold exactly the manifest's shards, unchanged: Anserini indexes every file there."""
    for path, problem in shard_problems(folder, manifest)[:1]:
        raise InputError(path, problem)


COLLECTION_ENTRY = re.compile(r"(?:plan|manifest)\.json|(?:vectors|shards|\.tmp)/|vectors/part-\d{5}\.jsonl"
                              r"|shards/part-\d{5}\.json|(?:\.tmp/|shards/)?\.[^/]+\.\d+\.tmp")


def is_collection_entry(name: str) -> bool:
    """Whether a name inside a collection folder is one that encode writes."""
    return COLLECTION_ENTRY.fullmatch(name) is not None


def is_collection(folder: Path) -> bool:
    """Whether ``folder`` holds our plan or manifest: the proof that encode wrote it."""
    for name, keys in ((MANIFEST, ("created_by", "settings", "shards")), (PLAN, ("source", "settings", "shards"))):
        path = Path(folder) / name
        if path.is_file():
            try:
                value = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(value, dict) and all(key in value for key in keys) and \
                    str(value.get("created_by", "splade-pipeline")).startswith("splade-pipeline"):
                return True
    return False


def load_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a finished collection, refused by name when it is not one this tool can read."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    return readable_record(path, read_json(path))


def readable_record(path: Path, record: Any) -> dict[str, Any]:
    """A plan or manifest with the parts later steps read (settings, source, shards), else refused."""
    if not (isinstance(record, dict) and isinstance(record.get("settings"), dict)
            and isinstance(record.get("source"), dict) and isinstance(record.get("shards"), list)):
        raise InputError(path, "not a record this version of splade-pipeline can read; encode again with --overwrite")
    return record


def prepare(corpus: Path, folder: Path, settings: EncodeSettings, overwrite: bool,
            progress: bool = True) -> dict[str, Any] | None:
    """Validate the corpus and write the plan; ``None`` when the collection is already complete."""
    corpus, folder = Path(corpus), Path(folder)
    if not corpus.exists():
        raise InputError(corpus, "no such file or directory")
    ours = outputs.check_folder(folder, "--output", "a collection", is_collection_entry, is_collection)
    if ours and overwrite:  # only our own files: check_folder refused anything else
        outputs.remove_owned(folder, is_collection_entry, keep_folder=True)
    manifest = load_manifest(folder)
    plan_path = folder / PLAN
    recorded = manifest or (readable_record(plan_path, read_json(plan_path)) if plan_path.is_file() else None)
    if recorded is not None:
        diff = differences(settings_key(recorded["settings"]), settings.key())
        source_then = recorded["source"]
        if source_then["path"] != str(corpus.resolve()):
            diff.append(f"corpus {source_then['path']} -> {corpus.resolve()}")
        elif not same_source(source_then, source_identity(corpus)):
            diff.append("corpus file changed since it was encoded (its content differs)")
        if diff:
            raise ConsistencyError(f"{folder} was encoded with other settings ({'; '.join(diff)}); "
                                   "use --overwrite to encode it again")
        if manifest is not None:
            return _damaged(folder, manifest)
        return recorded
    plan = plan_corpus(corpus, settings.shard_size, progress)
    plan["settings"] = asdict(settings)
    write_json(plan_path, plan)
    return plan


def _damaged(folder: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """``None`` for a complete collection; the plan again when only shard files are missing (deleted
    since: they are ours to rebuild, and the manifest goes until they are back); refused otherwise."""
    problems = shard_problems(folder, manifest)
    if not problems:
        return None
    if any(problem != MISSING_SHARD for _, problem in problems) or not (folder / PLAN).is_file():
        path, problem = problems[0]
        raise InputError(path, problem if problem != MISSING_SHARD else f"{problem}, and {PLAN} is gone too: "
                                                                         "encode again with --overwrite")
    (folder / MANIFEST).unlink()
    return read_json(folder / PLAN)


RunShards = Callable[[Path, dict[str, Any], list[int], Any], None]  # (folder, plan, pending, tqdm bar)


def encode_corpus(corpus: Path, folder: Path, load_encoder: Callable[[], Any], settings: EncodeSettings,
                  overwrite: bool = False, progress: bool = True, run_shards: RunShards | None = None
                  ) -> tuple[dict[str, Any], bool]:
    """Run the encode stage; returns the manifest and whether any work was done.

    ``load_encoder`` is called only when some shard needs encoding, so a finished or resumed
    collection does not pay for loading the model. ``run_shards`` encodes the pending shards
    elsewhere (``pipeline.distributed``: on Ray workers); by default they run in this process.
    """
    folder = outputs.resolved(folder)
    with outputs.locked(folder, "encode"):
        return _encode_locked(corpus, folder, load_encoder, settings, overwrite, progress, run_shards)


def _encode_locked(corpus: Path, folder: Path, load_encoder: Callable[[], Any], settings: EncodeSettings,
                   overwrite: bool, progress: bool, run_shards: RunShards | None = None
                   ) -> tuple[dict[str, Any], bool]:
    from tqdm import tqdm

    plan = prepare(corpus, folder, settings, overwrite, progress)
    if plan is None:
        return load_manifest(folder), False
    done = finished_shards(folder, plan)
    pending = [index for index in range(len(plan["shards"])) if index not in done]
    if pending:
        run = run_shards or _in_process(load_encoder)
        with tqdm(total=plan["documents"], initial=sum(r["documents"] for r in done.values()), unit="doc",
                  desc="encode", disable=not progress, file=sys.stderr, smoothing=0.05) as bar:
            run(folder, plan, pending, bar)
    return finish(folder), True


def _in_process(load_encoder: Callable[[], Any]) -> RunShards:
    """The default runner: load the model here, then encode the pending shards one after another."""
    steady_memory()
    encoder = load_encoder()

    def run(folder: Path, plan: dict[str, Any], pending: list[int], bar) -> None:
        for index in pending:
            encode_shard(folder, index, encoder, on_progress=bar.update)
            release_memory()
    return run
