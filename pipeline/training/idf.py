"""IDF weights over a model's vocabulary: where an inference-free model's query weights start.

An inference-free query is its distinct wordpieces, each weighted by one number per vocabulary
entry (sentence-transformers' ``SparseStaticEmbedding``). Before training, the natural numbers
are inverse document frequencies: a wordpiece found in every document says little about which
document a query wants. They are counted here with the model's own tokenizer over the documents
the model will search, without special tokens (the query side never sees ``[CLS]``/``[SEP]``).

The formula is BM25's (Lucene's ``log(1 + (N - df + 0.5) / (df + 0.5))``): positive for every
document frequency, so no wordpiece of a query is ever dropped. A wordpiece no document holds
gets the largest weight, as BM25 would give it; such a term can still score, because SPLADE's
documents are expanded beyond their own wordpieces.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from pipeline import encoders

BATCH = 1024  # texts tokenised at a time


def document_frequencies(tokenizer, texts: Iterable[str], vocab_size: int) -> tuple[np.ndarray, int]:
    """How many of ``texts`` hold each vocabulary entry (as a wordpiece), and how many texts there were."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    total = 0
    batch: list[str] = []

    def count(chunk: list[str]) -> None:
        for ids in tokenizer(chunk, add_special_tokens=False, truncation=False)["input_ids"]:
            counts[np.unique(np.asarray(ids, dtype=np.int64))] += 1

    for text in texts:
        batch.append(text)
        total += 1
        if len(batch) == BATCH:
            count(batch)
            batch = []
    if batch:
        count(batch)
    return counts, total


def bm25_idf(frequencies: np.ndarray, documents: int) -> np.ndarray:
    """The BM25 IDF of every vocabulary entry (``encoders.bm25_idf``'s formula), as float32, absent
    wordpieces included."""
    if documents <= 0:
        raise ValueError("IDF needs at least one document")
    return encoders.bm25_idf(documents, frequencies, absent_zero=False)
