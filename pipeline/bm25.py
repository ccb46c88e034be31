"""BM25 baseline through Anserini: the reference point SPLADE is compared against and fused with.

"Flat" as in Pyserini's BEIR regressions: title and text in one field, Lucene's default English
analysis (Porter stemming, stopwords), BM25 with k1=0.9, b=0.4.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline import jvm, outputs
from pipeline.collection import corpus_sha256, write_atomic
from pipeline.index import build_lucene_index, load_record
from pipeline.readers import read_corpus
from pipeline.search import Hit, java_hits, java_list, require_index

K1, B = 0.9, 0.4


def write_flat_collection(corpus: Path, folder: Path) -> tuple[int, int]:
    """The corpus as a one-file Anserini JsonCollection; returns (documents, empty documents)."""
    lines, empty = [], 0
    for _, doc in read_corpus(corpus):
        lines.append(json.dumps({"id": doc.id, "contents": doc.text}, ensure_ascii=False) + "\n")
        empty += not doc.text.strip()
    write_atomic(Path(folder) / "docs.jsonl", "".join(lines).encode())
    return len(lines), empty


def build_bm25_index(corpus: Path, index: Path, threads: int = 1, verbose: bool = False) -> dict[str, Any]:
    """A BM25 index of ``corpus`` (reused when it exists for the same corpus)."""
    index = Path(index)
    existing = load_record(index) if index.is_dir() else None
    if existing and existing.get("corpus_sha256") == corpus_sha256(corpus):  # the same content, wherever it lies
        return existing
    options = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
               "-threads", str(threads), "-optimize"]
    outputs.writable_parent(index, "--index")
    # The flat collection is a work file: a fresh folder of its own (mkdtemp never reuses a name), so
    # removing it afterwards can never remove a folder that was there before.
    with tempfile.TemporaryDirectory(prefix=f".{index.name}.collection-", dir=outputs.absolute(index).parent) as work:
        documents, _ = write_flat_collection(corpus, Path(work))
        # Anserini counts a document whose analysed text is empty as "empty" and skips it.
        return build_lucene_index(Path(work), index, options, (documents, None), Path(corpus), verbose,
                                  {"corpus": str(Path(corpus).resolve()), "corpus_sha256": corpus_sha256(corpus),
                                   "model": "bm25-flat"})


def bm25_search(index: Path, topics: dict[str, str], hits: int = 1000, threads: int = 1, k1: float = K1,
                b: float = B, remove_query: bool = False) -> dict[str, list[Hit]]:
    """Top hits per query, ordered by score then document id (Anserini's tie order)."""
    searcher = jvm.autoclass("io.anserini.search.SimpleSearcher")(str(require_index(index)))
    try:
        searcher.set_bm25(k1, b)
        depth = hits + (1 if remove_query else 0)
        found = java_hits(searcher.batch_search(java_list(topics.values()), java_list(topics), depth, threads))
    finally:
        searcher.close()
    results = {}
    for qid in topics:
        ranked = [hit for hit in found.get(qid, []) if not (remove_query and hit[0] == qid)]
        results[qid] = ranked[:hits]
    return results
