"""The synthetic-collection generator of bench/scale.py (bench/_synthetic.py): pure numpy logic.

A "real" collection is drawn here with a Zipf-like vocabulary; the generator must reproduce its
statistics within 10% (and ``compare`` must notice when a collection does not).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_synthetic", ROOT / "bench" / "_synthetic.py")
syn = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("_synthetic", syn)  # dataclasses look their module up there
_spec.loader.exec_module(syn)


def zipf_collection(documents: int, vocabulary: int, seed: int = 0) -> list[dict[str, int]]:
    """Documents with skewed term frequencies, lengths 20..160 and term-specific impacts."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, vocabulary + 1) ** 0.9
    p /= p.sum()
    centre = rng.integers(5, 200, vocabulary)
    docs = []
    for _ in range(documents):
        length = int(rng.integers(20, 160))
        terms = rng.choice(vocabulary, size=length, replace=False, p=p)
        docs.append({f"t{t}": int(max(1, centre[t] + rng.integers(-4, 5))) for t in terms})
    return docs


@pytest.fixture(scope="module")
def real() -> list[dict[str, int]]:
    return zipf_collection(3000, 2000)


@pytest.fixture(scope="module")
def prof(real):
    return syn.profile(real)


@pytest.fixture(scope="module")
def weights(prof):
    return syn.calibrate(prof)


def test_profile_counts_every_posting(real, prof) -> None:
    assert prof.documents == len(real)
    assert prof.lengths.tolist() == [len(v) for v in real]
    assert prof.terms == sorted({t for v in real for t in v})
    term = prof.terms.index("t0")
    expected = sorted(v["t0"] for v in real if "t0" in v)
    assert prof.df[term] == len(expected)
    assert prof.impacts[prof.offsets[term]:prof.offsets[term + 1]].tolist() == expected
    assert prof.offsets[-1] == sum(len(v) for v in real)


def test_calibrated_weights_hit_each_terms_document_frequency(prof, weights) -> None:
    lengths, share = syn.length_groups(prof.lengths)
    got = syn.inclusion(weights, lengths, share)
    target = prof.df / prof.documents
    assert np.max(np.abs(got - target) / target) < 1e-2
    # Plain df-proportional weights under-sample the frequent terms (sampling without replacement).
    naive = syn.inclusion(prof.df / prof.df.sum(), lengths, share)
    assert np.max(np.abs(naive - target) / target) > 0.05


def test_generated_documents_are_well_formed_and_deterministic(prof, weights) -> None:
    gen = syn.Generator(prof, weights)
    first = gen.batch(200, np.random.default_rng(7))
    again = gen.batch(200, np.random.default_rng(7))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    real_lengths = set(prof.lengths.tolist())
    for terms, impacts in first:
        assert len(terms) in real_lengths
        assert np.all(np.diff(terms) > 0)  # distinct and ascending
        for t, v in zip(terms.tolist(), impacts.tolist()):
            assert v in prof.impacts[prof.offsets[t]:prof.offsets[t + 1]]


def test_generated_collection_is_within_ten_percent(prof, weights) -> None:
    gen = syn.Generator(prof, weights)
    names = syn.quoted(prof.terms)
    tally = syn.Tally(prof)
    rng = np.random.default_rng(1)
    for n, (terms, impacts) in enumerate(gen.batch(20_000, rng)):
        tally.add(json.loads(syn.json_line(f"d{n}", terms, impacts, names))["vector"])
    report = syn.compare(prof, tally)
    assert report["documents"] == 20_000
    assert report["per_term"]["unknown_term_postings"] == 0
    assert report["within_10pct"], [r for r in report["figures"] if r["relative_difference"] > 0.1]
    assert report["max_relative_difference"] <= 0.1


def test_compare_notices_a_collection_that_does_not_follow(prof, real) -> None:
    tally = syn.Tally(prof)
    for vector in real:  # every document cut to its first half of terms
        tally.add(dict(list(vector.items())[:len(vector) // 2]))
    report = syn.compare(prof, tally)
    assert not report["within_10pct"]
    mean = next(r for r in report["figures"] if r["figure"] == "postings per document, mean")
    assert mean["relative_difference"] > 0.4


def test_json_line_escapes_tokens() -> None:
    names = syn.quoted(['"', "\\", "##é", "a b"])
    line = syn.json_line("x1", np.array([0, 1, 2, 3]), np.array([5, 6, 7, 8]), names)
    assert json.loads(line) == {"id": "x1", "contents": "", "vector": {'"': 5, "\\": 6, "##é": 7, "a b": 8}}
