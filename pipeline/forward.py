"""The forward store: every document's full quantised vector, kept by document for exact rescoring.

Lucene keeps impacts by term; reading one document's impacts back from its postings costs a seek
per query term (the service's explanations do that for ten hits). Two-step search rescores
hundreds of candidates per query, so the full vectors are also kept by document, as Seismic keeps
its forward index beside the inverted lists: flat arrays, memory-mapped, so opening a store reads
nothing but its small record and the operating system pages in only the rows a query touches.

Layout of a ``forward/`` folder (every ``.bin`` is a raw little-endian array whose type and length
``forward.json`` records, with its sha256; ``forward.json`` is written last)::

    forward.json      record: documents, postings, array types, checksums
    vocabulary.json   term strings; a term's id is its position
    offsets.bin       row r's postings are [offsets[r], offsets[r + 1])
    postings.bin      every posting, row by row, as one integer: term id << impact_bits | impact
                      (the impact being the JsonVectorCollection's weight, unchanged)
    ids.bin           document ids (UTF-8, fixed width), sorted, so a row is found by binary search
    rows.bin          the row of each sorted id
    max-impact.bin    per term: its largest impact in the collection (for bounds)

Within a row postings are ordered by impact, largest first, ties by term string (``top_terms``'s
order): keeping a row's first N postings is keeping its N largest, so a pruned first stage and
its bounds are read off the store without sorting again.

A posting's term and impact share one integer (4 bytes for BERT's vocabulary and impacts under
65,536) rather than sitting in two arrays: rescoring reads a few thousand rows scattered over the
store, and each row is then one run of memory instead of two (at 2,000 candidates on a million
documents, 3.7 -> 2.3 ms a query here, measured ad hoc).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from pipeline.errors import ConsistencyError, DuplicateId, InputError, PipelineError
from pipeline.outputs import file_sha256, write_atomic

RECORD = "forward.json"
VOCABULARY = "vocabulary.json"
ARRAYS = ("offsets", "postings", "ids", "rows", "max-impact")
FORMAT = "splade-pipeline forward store 2"
EARLIER_FORMATS = ("splade-pipeline forward store 1",)  # terms and impacts in two arrays
FLUSH_POSTINGS = 1 << 20  # postings buffered in Python lists before they go to disk
CONVERT_CHUNK = 1 << 24  # elements converted at a time when the final types are chosen


def top_terms(terms: Mapping[str, int], keep: int | None) -> list[tuple[str, int]]:
    """The ``keep`` largest weights (all when None), largest first, ties by term string.

    The one pruning rule, for documents (the first-stage index) and queries (the first-stage query):
    deterministic, so a rebuild prunes the same postings.
    """
    ordered = sorted(terms.items(), key=lambda item: (-item[1], item[0]))
    return ordered if keep is None else ordered[:keep]


def id_bytes(docid: str) -> bytes:
    """A document id as the stores keep it (UTF-8; a lone surrogate, which JSON admits, kept as is):
    the writers and ``find_rows`` must agree byte for byte."""
    return docid.encode("utf-8", "surrogatepass")


def id_text(stored: bytes) -> str:
    """``id_bytes`` undone."""
    return stored.decode("utf-8", "surrogatepass")


def smallest_unsigned(largest: int) -> np.dtype:
    """The narrowest unsigned integer type that holds ``largest``."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise PipelineError(f"value {largest} does not fit in 64 bits")


class ForwardWriter:
    """Streams documents into a forward store folder; ``finish`` writes the record that completes it.

    Postings go to disk as int64 while streaming (the vocabulary size and the largest impact are
    known only at the end), then are converted to their final, narrowest types in chunks: memory
    holds the ids and offsets (a few bytes per document), never the postings.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._vocabulary: dict[str, int] = {}
        self._ids: list[bytes] = []
        self._offsets = [0]
        self._terms: list[int] = []
        self._impacts: list[int] = []
        self._max_impact: list[int] = []
        self._raw = {name: open(self.folder / f".{name}.int64", "wb") for name in ("terms", "impacts")}

    def add(self, docid: str, postings: Iterable[tuple[str, int]]) -> None:
        """One document's postings, already in store order (``top_terms``) and all positive."""
        vocabulary, maxima = self._vocabulary, self._max_impact
        count = 0
        for term, impact in postings:
            term_id = vocabulary.get(term)
            if term_id is None:
                term_id = vocabulary[term] = len(vocabulary)
                maxima.append(0)
            if impact > maxima[term_id]:
                maxima[term_id] = impact
            self._terms.append(term_id)
            self._impacts.append(impact)
            count += 1
        self._ids.append(id_bytes(docid))
        self._offsets.append(self._offsets[-1] + count)
        if len(self._terms) >= FLUSH_POSTINGS:
            self._flush()

    def _flush(self) -> None:
        for name, values in (("terms", self._terms), ("impacts", self._impacts)):
            np.asarray(values, dtype=np.int64).tofile(self._raw[name])
            values.clear()

    def finish(self, extra: dict | None = None) -> dict:
        """Write the final arrays, the vocabulary and, last, the record; returns the record."""
        self._flush()
        for handle in self._raw.values():
            handle.close()
        documents, postings = len(self._ids), self._offsets[-1]
        largest = max(self._max_impact, default=0)
        bits = impact_bits(largest)
        types = {"offsets": np.dtype(np.uint64),
                 "postings": smallest_unsigned((max(len(self._vocabulary) - 1, 0) << bits) | largest),
                 "rows": smallest_unsigned(max(documents - 1, 0)), "max-impact": smallest_unsigned(largest)}
        _pack(self.folder / ".terms.int64", self.folder / ".impacts.int64", self.folder / "postings.bin",
              bits, types["postings"])
        np.asarray(self._offsets, dtype=types["offsets"]).tofile(self.folder / "offsets.bin")
        types["ids"] = write_ids(self.folder, self._ids, types["rows"])
        np.asarray(self._max_impact, dtype=types["max-impact"]).tofile(self.folder / "max-impact.bin")
        words = [None] * len(self._vocabulary)
        for term, term_id in self._vocabulary.items():
            words[term_id] = term
        write_atomic(self.folder / VOCABULARY, json.dumps(words, ensure_ascii=False).encode())
        lengths = {"offsets": documents + 1, "postings": postings, "ids": documents, "rows": documents,
                   "max-impact": len(words)}
        record = {"format": FORMAT, "documents": documents, "postings": postings, "vocabulary": len(words),
                  "largest_impact": largest, "impact_bits": bits,
                  "arrays": {name: {"dtype": types[name].str, "length": lengths[name],
                                    "sha256": file_sha256(self.folder / f"{name}.bin")} for name in ARRAYS},
                  "vocabulary_sha256": file_sha256(self.folder / VOCABULARY), **(extra or {})}
        write_atomic(self.folder / RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        return record

    def abandon(self) -> None:
        for handle in self._raw.values():
            handle.close()


def impact_bits(largest: int) -> int:
    """Bits a posting gives its impact (at least one)."""
    return max(int(largest), 1).bit_length()


def _pack(terms: Path, impacts: Path, target: Path, bits: int, dtype: np.dtype) -> None:
    """Pack the int64 term and impact files into ``term << bits | impact`` of ``dtype`` in chunks, then
    drop the int64 files."""
    def raw(path: Path) -> np.ndarray:
        return np.fromfile(path, dtype=np.int64) if path.stat().st_size < 8 * CONVERT_CHUNK else \
            np.memmap(path, dtype=np.int64, mode="r")

    term_ids, weights = raw(terms), raw(impacts)
    with open(target, "wb") as handle:
        for start in range(0, len(term_ids), CONVERT_CHUNK):
            chunk = slice(start, start + CONVERT_CHUNK)
            ((term_ids[chunk].astype(np.uint64) << np.uint64(bits)) | weights[chunk].astype(np.uint64)
             ).astype(dtype).tofile(handle)
    del term_ids, weights
    os.unlink(terms)
    os.unlink(impacts)


def read_record(folder: Path) -> dict:
    path = Path(folder) / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a complete forward store ({exc})") from None
    if isinstance(record, dict) and record.get("format") in EARLIER_FORMATS:
        raise ConsistencyError(f"{path}: built by an earlier version (format {record['format']!r}); build the "
                               "two-step companion again with: splade-pipeline index --collection ... --index ... "
                               "--prune-docs N (no --overwrite needed)")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(path, f"not a forward store record (expected format {FORMAT!r})")
    return record


def earlier_format(folder: Path) -> bool:
    """Whether ``folder`` holds a complete store of an earlier format (one a rebuild replaces; a missing
    or damaged store is not one, and is refused where it is opened)."""
    try:
        read_record(folder)
    except ConsistencyError:  # read_record's answer to an earlier format
        return True
    except InputError:
        return False
    return False


def verify(folder: Path, record: dict) -> None:
    """Every array has its recorded size and checksum: a changed or truncated file is refused."""
    folder = Path(folder)
    check_arrays(folder, record["arrays"], RECORD)
    if file_sha256(folder / VOCABULARY) != record["vocabulary_sha256"]:
        raise InputError(folder / VOCABULARY, "changed since it was built (sha256 differs from forward.json)")


def check_arrays(folder: Path, arrays: dict[str, dict], record_name: str) -> None:
    """Each ``NAME.bin`` of ``arrays`` has its recorded size and sha256 (stores whose record, named
    ``record_name``, lists its arrays as ``{name: {dtype, length, sha256}}``)."""
    for name, spec in arrays.items():
        path = Path(folder) / f"{name}.bin"
        if not path.is_file():
            raise InputError(path, f"missing array (listed in {record_name}); rebuild the index")
        size = np.dtype(spec["dtype"]).itemsize * spec["length"]
        if path.stat().st_size != size:
            raise InputError(path, f"holds {path.stat().st_size} bytes, the record says {size}; rebuild the index")
        if file_sha256(path) != spec["sha256"]:
            raise InputError(path, f"changed since it was built (sha256 differs from {record_name}); "
                                   "rebuild the index")


def map_array(folder: Path, name: str, spec: dict) -> np.ndarray:
    """``NAME.bin`` memory-mapped as its record says (an empty array maps nothing), as a plain array
    view of the map: numpy's memmap subclass adds a cost to every fancy index."""
    if spec["length"] == 0:
        return np.zeros(0, dtype=spec["dtype"])
    return np.asarray(np.memmap(Path(folder) / f"{name}.bin", dtype=spec["dtype"], mode="r", shape=(spec["length"],)))


def write_ids(folder: Path, ids: list[bytes], rows_dtype: np.dtype) -> np.dtype:
    """``ids.bin`` (the ids sorted, fixed width) and ``rows.bin`` (each sorted id's row, rows being
    the order ``ids`` came in); returns the ids' type. ``find_rows`` reads them back, so an id given
    twice is refused (``DuplicateId``)."""
    width = max((len(i) for i in ids), default=1) or 1
    array = np.asarray(ids, dtype=f"S{width}")
    order = np.argsort(array, kind="stable")
    ordered = array[order]
    same = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(same):
        raise DuplicateId(id_text(bytes(ordered[same[0]])))
    ordered.tofile(Path(folder) / "ids.bin")
    order.astype(rows_dtype).tofile(Path(folder) / "rows.bin")
    return array.dtype


def find_rows(ids: np.ndarray, rows: np.ndarray, docids: list[str]) -> np.ndarray:
    """The row of each document id in sorted ``ids`` (``write_ids``), -1 where there is none."""
    if not docids or not len(ids):
        return np.full(len(docids), -1, dtype=np.int64)
    encoded = [id_bytes(d) for d in docids]
    wanted = np.asarray(encoded, dtype=ids.dtype)  # an id longer than the widest is cut: not found
    # nor is one ending in NUL: numpy compares |S values without trailing NULs, so it would find its prefix
    fits = np.fromiter((len(e) <= ids.dtype.itemsize and not e.endswith(b"\0") for e in encoded), dtype=bool,
                       count=len(encoded))
    places = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return np.where(fits & (ids[places] == wanted), rows[places].astype(np.int64), -1)


class ForwardStore:
    """A forward store opened for reading: arrays memory-mapped, checksums checked once at open."""

    def __init__(self, folder: Path, check: bool = True):
        self.folder = Path(folder)
        self.record = read_record(self.folder)
        if check:
            verify(self.folder, self.record)
        arrays = {name: map_array(self.folder, name, spec) for name, spec in self.record["arrays"].items()}
        self.offsets, self.postings = arrays["offsets"], arrays["postings"]
        self._ids, self._rows, self.max_impact = arrays["ids"], arrays["rows"], arrays["max-impact"]
        self.impact_bits = int(self.record["impact_bits"])
        self._shift = self.postings.dtype.type(self.impact_bits)
        self._mask = self.postings.dtype.type((1 << self.impact_bits) - 1)
        self.words: list[str] = json.loads((self.folder / VOCABULARY).read_text())
        self.term_ids = {term: position for position, term in enumerate(self.words)}
        self.documents = int(self.record["documents"])
        self._places: np.ndarray | None = None
        self._largest_impact = int(np.max(self.max_impact, initial=0))

    def find(self, docids: list[str]) -> np.ndarray:
        """The row of each document id, -1 where the store has none (a document without postings)."""
        return find_rows(self._ids, self._rows, docids)

    def rows(self, docids: list[str]) -> np.ndarray:
        """The row of each document id; an id the store lacks is an inconsistency, never skipped."""
        rows = self.find(docids)
        if (rows < 0).any():
            missing = docids[int(np.flatnonzero(rows < 0)[0])]
            raise ConsistencyError(f"{self.folder}: document {missing[:80]!r} is in the first-stage index but not "
                                   "in the forward store; rebuild the index")
        return rows

    def docids(self, rows: np.ndarray) -> list[str]:
        """The document id of each row (the inverse of ``rows``)."""
        return [id_text(docid) for docid in self.id_bytes(rows)]

    def id_bytes(self, rows: np.ndarray) -> np.ndarray:
        """The document id of each row as the store keeps it (``id_bytes``, in a ``|S`` array)."""
        if self._places is None:  # sorted position of each row, built on first use (a few ms a million)
            places = np.empty(len(self._rows), dtype=np.int64)
            places[np.asarray(self._rows, dtype=np.int64)] = np.arange(len(self._rows), dtype=np.int64)
            self._places = places
        return self._ids[self._places[np.asarray(rows, dtype=np.int64)]]

    def query_weights(self, query: Mapping[str, int]) -> np.ndarray:
        """The query as a dense int64 array over the store's vocabulary (terms no document has drop out:
        they add nothing to any dot product)."""
        dense = np.zeros(len(self.words), dtype=np.int64)
        for term, weight in query.items():
            term_id = self.term_ids.get(term)
            if term_id is not None:
                dense[term_id] = weight
        return dense

    def scores(self, query: Mapping[str, int], rows: np.ndarray) -> np.ndarray:
        """Exact integer dot products of ``query`` with the documents in ``rows`` (int64)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(0, dtype=np.int64)
        starts = self.offsets[rows].astype(np.int64)
        lengths = self.offsets[rows + 1].astype(np.int64) - starts
        ends = np.cumsum(lengths)
        # positions of every posting of every row, in one array: a run of consecutive numbers per row
        positions = np.arange(ends[-1], dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
        packed = self.postings[positions]
        weights = self.query_weights(query)
        # products in 32 bits where no product can overflow them (half the memory to write and sum),
        # each row summed in 64
        narrow = weights.min(initial=0) >= 0 and int(weights.max(initial=0)) * self._largest_impact < 2 ** 31
        products = weights.astype(np.int32 if narrow else np.int64)[packed >> self._shift]
        # in the products' own integer type: a signed array times uint64 postings would go through float64
        np.multiply(products, packed & self._mask, out=products, dtype=products.dtype, casting="unsafe")
        totals = np.zeros(len(rows), dtype=np.int64)
        filled = lengths > 0  # a document without postings scores 0 (reduceat would repeat a neighbour)
        totals[filled] = np.add.reduceat(products, (ends - lengths)[filled], dtype=np.int64)
        return totals

    def read_postings(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and impacts of postings ``start`` to ``end`` (in store order, rows one after another)."""
        packed = self.postings[start:end]
        return packed >> self._shift, packed & self._mask

    def vector(self, docid: str) -> dict[str, int]:
        """One document's full vector, in store order."""
        row = int(self.rows([docid])[0])
        terms, impacts = self.read_postings(int(self.offsets[row]), int(self.offsets[row + 1]))
        return {self.words[int(t)]: int(i) for t, i in zip(terms, impacts)}

