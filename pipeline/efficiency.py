"""Efficiency figures of a sparse run: postings per document and query, index size, and FLOPS.

FLOPS is the SPLADE paper's measure (Paria et al., 2020; Formal et al., 2021): the expected number
of term matches for a query-document pair, ``sum_t p_q(t) * p_d(t)``, where ``p_d(t)`` is the
fraction of documents and ``p_q(t)`` the fraction of queries whose (quantised) vector holds ``t``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping


def term_fractions(vectors: Iterable[Mapping[str, int]]) -> tuple[dict[str, float], int]:
    """Fraction of vectors holding each term, and how many vectors there were."""
    counts: Counter[str] = Counter()
    total = 0
    for vector in vectors:
        counts.update(term for term, weight in vector.items() if weight)
        total += 1
    return ({term: count / total for term, count in counts.items()} if total else {}), total


def flops(doc_vectors: Iterable[Mapping[str, int]], query_vectors: Iterable[Mapping[str, int]]) -> float:
    p_d, _ = term_fractions(doc_vectors)
    p_q, _ = term_fractions(query_vectors)
    return sum(fraction * p_d.get(term, 0.0) for term, fraction in p_q.items())


def mean_postings(vectors: Iterable[Mapping[str, int]]) -> float:
    sizes = [sum(1 for weight in vector.values() if weight) for vector in vectors]
    return sum(sizes) / len(sizes) if sizes else 0.0


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
