"""The text store: each indexed document's stored JSON without its vector, read by id without Lucene.

``index --store-raw`` has Lucene keep every JsonVectorCollection record whole, vector included, in
compressed blocks. The service shows a page of hits with their text: reading ten records back
through Lucene costs ten block decompressions of records that are mostly vector (a few hundred
terms), ten JNI round trips under the lock pyjnius needs (``pipeline.jvm``), and the parse of
vectors that are then dropped: most of the service's own time per request at k=10 and most of a
k=1000 response's (bench/results/serve-ab/). So the index stage also writes each record without
its vector into flat arrays, memory-mapped when read, as the forward store keeps vectors
(``pipeline.forward``)::

    indexes/NAME/texts/
        texts.json    record: documents, array types, checksums (written last)
        ids.bin       document ids (UTF-8, fixed width), sorted; a row is found by binary search
        rows.bin      the row of each sorted id
        offsets.bin   row r's JSON is data[offsets[r]:offsets[r + 1]]
        data.bin      each record as JSON, every field but ``vector``, in collection order

It holds exactly the documents Lucene holds (those with a positive weight), checked at build time.
Lucene's stored record stays the reference: ``GET /doc/{id}`` and explanations read the vector there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import orjson

from pipeline.errors import InputError
from pipeline.forward import check_arrays, find_rows, id_bytes, map_array, smallest_unsigned, write_ids
from pipeline.outputs import file_sha256, write_atomic

FOLDER = "texts"  # the store's subfolder of an index
RECORD = "texts.json"
FORMAT = "splade-pipeline text store 1"
ARRAYS = ("ids", "rows", "offsets", "data")
VECTOR_FIELD = "vector"


def without_vector(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as the service shows it: every field but the vector."""
    return {key: value for key, value in record.items() if key != VECTOR_FIELD}


def stored_json(record: dict[str, Any]) -> bytes:
    """The record without its vector, as JSON. orjson first; what it refuses (a lone surrogate escape
    or an integer beyond 64 bits in a collection made elsewhere) is written ASCII-escaped by the
    standard encoder, which reads back the same."""
    fields = without_vector(record)
    try:
        return orjson.dumps(fields)
    except TypeError:
        return json.dumps(fields, ensure_ascii=True).encode("ascii")


def write_store(folder: Path, records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Write the records (parsed JsonVectorCollection lines, vectors included) into ``folder``;
    a record without a positive weight is left out, as Anserini leaves it out of the index.
    Returns the store's record, written last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids: list[bytes] = []
    offsets = [0]
    with open(folder / "data.bin", "wb") as data:
        for record in records:
            if not any(weight > 0 for weight in record[VECTOR_FIELD].values()):
                continue
            text = stored_json(record)
            data.write(text)
            ids.append(id_bytes(record["id"]))
            offsets.append(offsets[-1] + len(text))
    documents = len(ids)
    types = {"rows": smallest_unsigned(max(documents - 1, 0)), "offsets": np.dtype(np.uint64),
             "data": np.dtype(np.uint8)}
    types["ids"] = write_ids(folder, ids, types["rows"])
    np.asarray(offsets, dtype=types["offsets"]).tofile(folder / "offsets.bin")
    lengths = {"ids": documents, "rows": documents, "offsets": documents + 1, "data": offsets[-1]}
    record = {"format": FORMAT, "documents": documents,
              "arrays": {name: {"dtype": types[name].str, "length": lengths[name],
                                "sha256": file_sha256(folder / f"{name}.bin")} for name in ARRAYS}}
    write_atomic(folder / RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return record


def has_store(index: Path) -> bool:
    return (Path(index) / FOLDER / RECORD).is_file()


class TextStore:
    """An index's text store opened for reading: arrays memory-mapped, checksums checked at open."""

    def __init__(self, index: Path):
        self.folder = Path(index) / FOLDER
        path = self.folder / RECORD
        try:
            self.record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"not a complete text store ({exc}); rebuild the index") from None
        if not isinstance(self.record, dict) or self.record.get("format") != FORMAT:
            raise InputError(path, f"not a text store record (expected format {FORMAT!r})")
        check_arrays(self.folder, self.record["arrays"], RECORD)
        arrays = {name: map_array(self.folder, name, spec) for name, spec in self.record["arrays"].items()}
        self._ids, self._rows, self._offsets, self._data = (arrays[name] for name in ARRAYS)
        self.documents = int(self.record["documents"])

    def raw_many(self, docids: Sequence[str]) -> list[bytes | None]:
        """Each document's stored JSON (without its vector), None for an id the index does not hold."""
        found = []
        for row in find_rows(self._ids, self._rows, list(docids)).tolist():
            if row < 0:
                found.append(None)
            else:
                found.append(self._data[int(self._offsets[row]):int(self._offsets[row + 1])].tobytes())
        return found


def open_store(index: Path, index_record: dict[str, Any]) -> TextStore | None:
    """The text store the index's record names (None when it names none: built without --store-raw, or
    by an earlier version), checked to be the one built with the index."""
    named = index_record.get(FOLDER)
    if not named:
        return None
    path = Path(index) / FOLDER / RECORD
    if not path.is_file() or file_sha256(path) != named.get("sha256"):
        raise InputError(path, "missing, or not the text store built with this index; rebuild the index")
    return TextStore(index)
