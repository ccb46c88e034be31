"""Why a document matched: each shared term's contribution, query weight x document impact.

An impact score is ``sum(query weight x document impact)`` over the terms the query and the
document share, so listing those products explains the score exactly. A term is an *expansion*
term when SPLADE added it: absent from the query text's tokens (``+q``) or from the document
text's tokens (``+d``). The demo prints this; the search service returns and highlights it.
"""

from __future__ import annotations

from typing import Iterable

Contribution = tuple[str, int, str]  # (term, query weight x document impact, expansion mark)


def token_spans(tokenizer, text: str) -> list[tuple[str, int, int]]:
    """Every word-piece token of ``text`` with its character span (no truncation, no special tokens)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, return_token_type_ids=False)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    return [(token, start, end) for token, (start, end) in zip(tokens, encoded["offset_mapping"])]


def text_tokens(tokenizer, text: str) -> set[str]:
    """The tokens a text contains, against which expansion terms are told apart."""
    return {token for token, _, _ in token_spans(tokenizer, text)}


def mark(term: str, query_tokens: set[str] | None, doc_tokens: set[str] | None) -> str:
    """'', '+q', '+d' or '+q+d'; no judgement on a side whose text is unknown (None)."""
    in_query = "" if query_tokens is None or term in query_tokens else "+q"
    in_doc = "" if doc_tokens is None or term in doc_tokens else "+d"
    return in_query + in_doc


def explain(query_terms: dict[str, int], query_tokens: set[str] | None, doc_impacts: dict[str, int],
            doc_tokens: set[str] | None) -> list[Contribution]:
    """Matching terms by contribution (largest first, then by term), each with its expansion mark."""
    matched = [(term, weight * doc_impacts[term], mark(term, query_tokens, doc_tokens))
               for term, weight in query_terms.items() if doc_impacts.get(term)]
    return sorted(matched, key=lambda item: (-item[1], item[0]))


def highlights(spans: Iterable[tuple[str, int, int]], terms: set[str]) -> list[tuple[int, int]]:
    """Character spans of the text's tokens that are matched terms, adjacent spans merged."""
    merged: list[tuple[int, int]] = []
    for token, start, end in spans:
        if token not in terms or end <= start:
            continue
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
