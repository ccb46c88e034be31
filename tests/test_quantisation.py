"""``--quantisation anserini``: the impacts Pyserini's SPLADE encoders write, term for term."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline import encoders, jvm, stages
from pipeline.demo import DEMO_DATA
from pipeline.errors import PipelineError
from pipeline.impacts import ANSERINI_SCALE, SparseVector, quantise
from pipeline.readers import read_corpus, read_topics


def test_anserini_rule_is_pythons_round_of_w_over_5_times_256():
    """Weights on and beside the rounding boundaries: Python's ``round(w / 5 * 256)``, never ``w * 51.2``'s."""
    rng = np.random.default_rng(5)
    boundaries = (np.arange(1, 400) + 0.5) * 5 / 256  # w / 5 * 256 lands on k + 0.5 (or within a bit of it)
    weights = np.concatenate([rng.uniform(0, 4, 20_000), boundaries, np.nextafter(boundaries, 0),
                              np.nextafter(boundaries, 9)]).astype(np.float32)
    ids = np.arange(len(weights))
    kept, values = quantise(SparseVector(ids, weights), ANSERINI_SCALE, "anserini")
    expected = {i: round(float(w) / 5 * 256) for i, w in zip(ids.tolist(), weights.tolist())}
    assert dict(zip(kept.tolist(), values.tolist())) == {i: v for i, v in expected.items() if v > 0}
    # the products differ in the last bit, yet round alike (pipeline.impacts.quantise says so)
    assert any(float(w) * 51.2 != float(w) / 5 * 256 for w in weights.tolist())
    kept_scaled, values_scaled = quantise(SparseVector(ids, weights), ANSERINI_SCALE)
    assert np.array_equal(kept, kept_scaled) and np.array_equal(values, values_scaled)


def test_anserini_quantisation_fixes_its_scale(tmp_path):
    with pytest.raises(PipelineError, match=r"--quantisation anserini quantises at scale 51\.2"):
        stages.encode(DEMO_DATA / "corpus.jsonl", tmp_path / "c", scale=100, quantisation="anserini",
                      progress=False, say=lambda text: None)
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_pyserini_splade_encoders_give_identical_term_dictionaries():
    """Pyserini's SpladeDocumentEncoder and SpladeQueryEncoder on splade-tiny's folder, against the
    pipeline with ``--quantisation anserini``. Pyserini keeps terms whose weight rounds to 0 (Anserini
    indexes nothing for them); they are dropped before comparing."""
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini.encode builds an OpenAI client on import
    jvm.start()  # the project's JVM (Java 21) before Pyserini starts one of its own
    from pyserini.encode import SpladeDocumentEncoder, SpladeQueryEncoder

    document = encoders.resolve(None).document
    texts = [doc.text for _, doc in read_corpus(DEMO_DATA / "corpus.jsonl")]
    queries = list(read_topics(DEMO_DATA / "queries.jsonl").values())
    theirs = SpladeDocumentEncoder(document.model.location, device="cpu").encode(texts, max_length=512)
    ours = encoders.load_documents(document, threads=1)
    mine = [ours.to_terms(vector, ANSERINI_SCALE, "anserini") for vector in ours.encode(texts)]
    assert [{t: w for t, w in found.items() if w} for found in theirs] == mine
    assert sum(len(found) for found in mine) > 1000
    query_encoder = SpladeQueryEncoder(document.model.location, device="cpu")
    mine = encoders.load_queries(encoders.QuerySpec(document, ANSERINI_SCALE, "anserini"), threads=1).encode(queries)
    assert [{t: w for t, w in query_encoder.encode(text).items() if w} for text in queries] == mine
