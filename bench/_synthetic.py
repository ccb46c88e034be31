"""Synthetic SPLADE collections whose vectors follow a real encoding's statistics.

No collection of millions of encoded passages can be had here, so ``bench/scale.py`` builds one
from the vectors of a real one (a ``Profile``): every synthetic document takes

- its number of postings from the real documents' empirical length distribution;
- that many *distinct* terms by successive sampling (draw a term in proportion to a weight, drop
  repeats, until the length is reached), with the weights calibrated so that each term's expected
  document frequency equals its real one (``calibrate``);
- for each term an impact drawn from that term's own real impacts.

Successive sampling is exponential order sampling (a term is in the document when its key
``E_t / w_t``, with ``E_t`` standard exponential, is among the ``L`` smallest), whose inclusion
probability is ``pi_t(L) ~= 1 - exp(-w_t * tau_L)`` with ``tau_L`` set so the ``pi_t`` sum to ``L``;
``calibrate`` solves ``mean over real lengths of pi_t(L) = df_t / N`` for the weights. Long
documents hold more of every term, as real ones do. ``compare`` measures a collection against the
profile (postings per document, per-term document frequency, impact distributions), which is how
the "within 10%" claims are checked rather than assumed.

Everything here is numpy over arrays the size of the vocabulary or of one batch of documents; no
function holds a whole synthetic collection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

QUANTILES = (0.1, 0.5, 0.9, 0.99)
BANDS = 5          # document-frequency bands (by share of postings) for the impact comparison
MIN_DF = 100       # terms with at least this real df enter the per-term comparisons (sampling noise)
TOLERANCE = 0.10   # the "within 10%" of the claims


@dataclass
class Profile:
    """The statistics of a real encoding that the generator follows."""

    terms: list[str]            # vocabulary seen in the real vectors, sorted
    lengths: np.ndarray         # postings per real document (int32, one per document)
    df: np.ndarray              # documents per term (int64, one per term)
    offsets: np.ndarray         # CSR offsets into ``impacts`` per term (len(terms) + 1)
    impacts: np.ndarray         # every real impact, grouped by term, ascending within a term

    @property
    def documents(self) -> int:
        return len(self.lengths)

    def save(self, path: Path) -> None:
        np.savez(path, terms=np.array(self.terms, dtype=object), lengths=self.lengths, df=self.df,
                 offsets=self.offsets, impacts=self.impacts)

    @classmethod
    def load(cls, path: Path) -> "Profile":
        with np.load(path, allow_pickle=True) as data:
            return cls(list(data["terms"]), data["lengths"], data["df"], data["offsets"], data["impacts"])


def read_vectors(paths: Iterable[Path]) -> Iterator[dict[str, int]]:
    """The ``vector`` of every JsonVectorCollection line, one document at a time."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)["vector"]


def profile(vectors: Iterable[dict[str, int]]) -> Profile:
    """Lengths, document frequencies and per-term impacts of a real encoding (streamed once)."""
    ids: dict[str, int] = {}
    lengths, term_ids, values = [], [], []
    for vector in vectors:
        lengths.append(len(vector))
        for token, impact in vector.items():
            term_ids.append(ids.setdefault(token, len(ids)))
            values.append(impact)
    terms = sorted(ids)
    remap = np.empty(len(ids), dtype=np.int64)
    for new, token in enumerate(terms):
        remap[ids[token]] = new
    term = remap[np.asarray(term_ids, dtype=np.int64)]
    impact = np.asarray(values, dtype=np.int32)
    order = np.lexsort((impact, term))
    df = np.bincount(term, minlength=len(terms)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    return Profile(terms, np.asarray(lengths, dtype=np.int32), df, offsets, impact[order])


# -- calibration --------------------------------------------------------------------------------

def length_groups(lengths: np.ndarray, groups: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Representative lengths and their shares: the length distribution in ``groups`` quantile bins."""
    positive = np.sort(lengths[lengths > 0])
    if len(positive) == 0:
        return np.zeros(0), np.zeros(0)
    bins = np.array_split(positive, min(groups, len(positive)))
    share = np.array([len(b) for b in bins], dtype=np.float64) / len(lengths)
    return np.array([b.mean() for b in bins]), share


def thresholds(weights: np.ndarray, lengths: np.ndarray, iterations: int = 60) -> np.ndarray:
    """``tau_L`` per length: sum_t (1 - exp(-w_t tau)) = L.

    The left side is concave and increasing in tau, so Newton's method started below the root
    (at ``L / sum(w)``, where the left side is at most L) climbs to it monotonically.
    """
    tau = lengths / weights.sum()
    for _ in range(iterations):
        decay = np.exp(-np.outer(tau, weights))
        gap = (1 - decay).sum(axis=1) - lengths
        step = gap / (decay @ weights)
        tau = tau - step
        if np.all(np.abs(step) <= 1e-12 * tau):
            break
    return tau


def inclusion(weights: np.ndarray, lengths: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Expected share of documents holding each term, over the length distribution."""
    tau = thresholds(weights, lengths)
    return share @ (-np.expm1(-np.outer(tau, weights)))


def calibrate(prof: Profile, rounds: int = 100) -> np.ndarray:
    """Sampling weights whose successive-sampling inclusion matches each term's real df / N."""
    target = prof.df / prof.documents
    lengths, share = length_groups(prof.lengths)
    weights = target.copy()
    for _ in range(rounds):
        got = inclusion(weights, lengths, share)
        ratio = np.where(got > 0, target / np.maximum(got, 1e-300), 1.0)
        if np.max(np.abs(ratio - 1)) < 1e-4:
            break
        weights = weights * ratio ** 1.5  # over-relaxed: near-saturated terms need large steps
        weights /= weights.sum()
    return weights


# -- generation ---------------------------------------------------------------------------------

class Generator:
    """Draws synthetic documents (term ids and impacts) from a profile and calibrated weights."""

    def __init__(self, prof: Profile, weights: np.ndarray):
        self.prof = prof
        self.cumulative = np.cumsum(weights / weights.sum())
        self.cumulative[-1] = 1.0

    def batch(self, count: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """``count`` documents as (term ids ascending, impacts)."""
        prof = self.prof
        lengths = prof.lengths[rng.integers(0, prof.documents, count)].astype(np.int64)
        chosen = self._distinct_terms(lengths, rng)
        docs = []
        for terms in chosen:
            terms.sort()
            picks = prof.offsets[terms] + (rng.random(len(terms)) * prof.df[terms]).astype(np.int64)
            docs.append((terms, prof.impacts[picks]))
        return docs

    def _distinct_terms(self, lengths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Successive sampling for a batch at once: over-draw with replacement, keep first distinct."""
        vocab = len(self.cumulative)
        out: list[np.ndarray | None] = [None] * len(lengths)
        todo = np.flatnonzero(lengths > 0)
        for i in np.flatnonzero(lengths == 0):
            out[i] = np.zeros(0, dtype=np.int64)
        factor = 2.0
        while len(todo):
            need = lengths[todo]
            draws = np.ceil(need * factor).astype(np.int64) + 16
            owner = np.repeat(np.arange(len(todo)), draws)
            terms = np.searchsorted(self.cumulative, rng.random(int(draws.sum())), side="right")
            terms = np.minimum(terms, vocab - 1)
            keys = owner * vocab + terms
            _, first = np.unique(keys, return_index=True)
            first.sort()                       # distinct (document, term) pairs in draw order
            kept_owner = owner[first]
            starts = np.searchsorted(kept_owner, np.arange(len(todo)))
            rank = np.arange(len(first)) - starts[kept_owner]
            keep = rank < need[kept_owner]
            counts = np.bincount(kept_owner[keep], minlength=len(todo))
            picked = np.split(terms[first[keep]], np.cumsum(counts)[:-1])
            short = counts < need
            for slot, doc in enumerate(todo):
                if not short[slot]:
                    out[doc] = picked[slot]
            # Too few distinct terms drawn (rare): redraw those documents from scratch, drawing more.
            todo, factor = todo[short], factor * 2
        return out  # type: ignore[return-value]


def quoted(terms: list[str]) -> list[str]:
    """Each term as a JSON string literal, computed once per vocabulary."""
    return [json.dumps(term, ensure_ascii=False) for term in terms]


def json_line(docid: str, terms: np.ndarray, impacts: np.ndarray, names: list[str]) -> str:
    """One JsonVectorCollection line (no text: ``contents`` is empty, as for pre-encoded vectors)."""
    body = ", ".join(f"{names[t]}: {v}" for t, v in zip(terms.tolist(), impacts.tolist()))
    return f'{{"id": "{docid}", "contents": "", "vector": {{{body}}}}}\n'


# -- measuring a collection against the profile ----------------------------------------------------

class Tally:
    """Streaming statistics of a collection in the profile's vocabulary (arrays of vocabulary size).

    Documents are buffered as flat lists and folded into the arrays a chunk at a time.
    """

    CHUNK = 20_000

    def __init__(self, prof: Profile):
        self.index = {term: i for i, term in enumerate(prof.terms)}
        size = len(prof.terms)
        self.documents = 0
        self.lengths = np.zeros(1, dtype=np.int64)  # histogram of postings per document
        self.df = np.zeros(size, dtype=np.int64)
        self.impact_sum = np.zeros(size, dtype=np.float64)
        self.top = int(prof.impacts.max()) + 1 if len(prof.impacts) else 1
        self.band = bands(prof)
        self.band_hist = np.zeros((BANDS, self.top), dtype=np.int64)
        self.unknown = 0  # postings of terms the profile never saw (a generator bug if > 0)
        self._ids: list[int] = []
        self._values: list[int] = []
        self._lengths: list[int] = []

    def add(self, vector: dict[str, int]) -> None:
        get = self.index.get
        self._ids.extend(get(token, -1) for token in vector)
        self._values.extend(vector.values())
        self._lengths.append(len(vector))
        if len(self._lengths) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self._lengths:
            return
        lengths = np.bincount(np.asarray(self._lengths, dtype=np.int64))
        if len(lengths) > len(self.lengths):
            self.lengths = np.concatenate([self.lengths, np.zeros(len(lengths) - len(self.lengths), np.int64)])
        self.lengths[:len(lengths)] += lengths
        self.documents += len(self._lengths)
        ids = np.asarray(self._ids, dtype=np.int64)
        values = np.asarray(self._values, dtype=np.int64)
        known = ids >= 0
        self.unknown += int((~known).sum())
        ids, values = ids[known], values[known]
        size = len(self.df)
        self.df += np.bincount(ids, minlength=size)
        self.impact_sum += np.bincount(ids, weights=values, minlength=size)
        inside = (values >= 0) & (values < self.top)
        cells = self.band[ids[inside]] * self.top + values[inside]
        self.band_hist += np.bincount(cells, minlength=BANDS * self.top).reshape(BANDS, self.top)
        self._ids, self._values, self._lengths = [], [], []


def bands(prof: Profile) -> np.ndarray:
    """Band of each term: terms sorted by df split into BANDS groups holding equal postings."""
    order = np.argsort(-prof.df, kind="stable")
    mass = np.cumsum(prof.df[order]) / max(prof.df.sum(), 1)
    band = np.empty(len(prof.df), dtype=np.int64)
    band[order] = np.minimum((mass * BANDS - 1e-12).astype(np.int64), BANDS - 1)
    return band


def _hist_quantiles(hist: np.ndarray, qs: Iterable[float]) -> list[float]:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    return [float(np.searchsorted(cdf, q)) for q in qs]


def _rel(a: float, b: float) -> float:
    return float(abs(a - b) / abs(b)) if b else float(a != b)


def _row(name: str, synthetic: float, real: float) -> dict:
    return {"figure": name, "synthetic": round(float(synthetic), 4), "real": round(float(real), 4),
            "relative_difference": round(_rel(synthetic, real), 4)}


def compare(prof: Profile, tally: Tally) -> dict:
    """The generated collection against the real one: every figure with its relative difference."""
    tally.flush()
    real_len = np.bincount(prof.lengths)
    rows = [_row("postings per document, mean", (np.arange(len(tally.lengths)) * tally.lengths).sum()
                 / max(tally.documents, 1), prof.lengths.mean())]
    for q, s, r in zip(QUANTILES, _hist_quantiles(tally.lengths, QUANTILES), _hist_quantiles(real_len, QUANTILES)):
        rows.append(_row(f"postings per document, p{int(q * 100)}", s, r))
    real_share = prof.df / prof.documents
    syn_share = tally.df / max(tally.documents, 1)
    frequent = prof.df >= MIN_DF
    errors = np.abs(syn_share[frequent] - real_share[frequent]) / real_share[frequent]
    postings = prof.df[frequent]
    within = float(postings[errors <= TOLERANCE].sum() / postings.sum()) if len(postings) else 1.0
    rows.append(_row("terms with postings (distinct terms)", int((tally.df > 0).sum()), len(prof.terms)))
    rows.append(_row("top term document frequency (share of documents)", syn_share.max(), real_share.max()))
    df_quant = (0.5, 0.9, 0.99)
    weight_real = np.repeat(real_share, prof.df)  # df of the term behind each real posting
    order = np.argsort(syn_share)
    cdf = np.cumsum(tally.df[order]) / max(tally.df.sum(), 1)
    for q in df_quant:
        s = syn_share[order][min(np.searchsorted(cdf, q), len(order) - 1)]
        rows.append(_row(f"document frequency of a posting's term (share of documents), p{int(q * 100)}",
                         s, np.quantile(weight_real, q)))
    real_hist = [np.bincount(prof.impacts[np.repeat(bands(prof), prof.df) == b],
                             minlength=tally.band_hist.shape[1]) for b in range(BANDS)]
    all_real, all_syn = np.sum(real_hist, axis=0), tally.band_hist.sum(axis=0)
    idx = np.arange(tally.band_hist.shape[1])
    rows.append(_row("impact, mean", (idx * all_syn).sum() / max(all_syn.sum(), 1), prof.impacts.mean()))
    for q, s, r in zip(QUANTILES, _hist_quantiles(all_syn, QUANTILES), _hist_quantiles(all_real, QUANTILES)):
        rows.append(_row(f"impact, p{int(q * 100)}", s, r))
    for b in range(BANDS):
        for q, s, r in zip((0.5, 0.9), _hist_quantiles(tally.band_hist[b], (0.5, 0.9)),
                           _hist_quantiles(real_hist[b], (0.5, 0.9))):
            rows.append(_row(f"impact in df band {b + 1} of {BANDS}, p{int(q * 100)}", s, r))
    mean_real = np.add.reduceat(prof.impacts, prof.offsets[:-1]) / np.maximum(prof.df, 1)
    mean_syn = tally.impact_sum / np.maximum(tally.df, 1)
    used = frequent & (tally.df > 0)
    term_impact_err = np.abs(mean_syn[used] - mean_real[used]) / mean_real[used]
    summary = {
        "frequent_terms": int(frequent.sum()), "min_df": MIN_DF,
        "frequent_terms_share_of_postings": round(float(postings.sum() / max(prof.df.sum(), 1)), 4),
        "df_relative_error_median": round(float(np.median(errors)), 4) if len(errors) else 0.0,
        "df_relative_error_p90": round(float(np.quantile(errors, 0.9)), 4) if len(errors) else 0.0,
        "postings_share_in_terms_within_10pct_df": round(within, 4),
        "term_mean_impact_relative_error_median": round(float(np.median(term_impact_err)), 4)
        if len(term_impact_err) else 0.0,
        "term_mean_impact_relative_error_p90": round(float(np.quantile(term_impact_err, 0.9)), 4)
        if len(term_impact_err) else 0.0,
        "unknown_term_postings": tally.unknown,
    }
    worst = max(r["relative_difference"] for r in rows)
    return {"documents": tally.documents, "real_documents": prof.documents, "figures": rows,
            "per_term": summary, "max_relative_difference": round(worst, 4),
            "within_10pct": bool(worst <= TOLERANCE and summary["df_relative_error_p90"] <= TOLERANCE
                                 and summary["term_mean_impact_relative_error_p90"] <= TOLERANCE)}
