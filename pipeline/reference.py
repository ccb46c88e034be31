"""The exact reference: the same model's float vectors (no quantisation) ranked by brute-force dot product.

This is what the Lucene impact pipeline approximates; the gap between the two measures the cost of
quantisation alone (and would expose any indexing or search defect). Used by bench/ and the tests.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.encoder import SparseVector


def sparse_matrix(vectors: Sequence[SparseVector], width: int):
    """Rows of float weights as a SciPy CSR matrix."""
    from scipy import sparse

    lengths = [len(v) for v in vectors]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([v.ids for v in vectors]) if vectors else np.empty(0, np.int32)
    data = np.concatenate([v.weights for v in vectors]) if vectors else np.empty(0, np.float32)
    return sparse.csr_matrix((data.astype(np.float64), indices, indptr), shape=(len(vectors), width))


def exact_run(doc_ids: Sequence[str], doc_vectors: Sequence[SparseVector], query_ids: Sequence[str],
              query_vectors: Sequence[SparseVector], width: int, hits: int = 1000,
              remove_query: bool = False, chunk: int = 256) -> dict[str, list[tuple[str, float]]]:
    """Top ``hits`` per query by float dot product, ties by document id (as the search stage does)."""
    docs_t = sparse_matrix(doc_vectors, width).T.tocsr()
    ids = np.asarray(doc_ids, dtype=object)
    run = {}
    for lo in range(0, len(query_ids), chunk):
        scores = (sparse_matrix(query_vectors[lo:lo + chunk], width) @ docs_t).toarray()
        for row, qid in enumerate(query_ids[lo:lo + chunk]):
            candidates = np.flatnonzero(scores[row] > 0)
            ranked = sorted(((str(ids[i]), float(scores[row, i])) for i in candidates),
                            key=lambda hit: (-hit[1], hit[0]))
            if remove_query:
                ranked = [hit for hit in ranked if hit[0] != qid]
            run[qid] = ranked[:hits]
    return run
