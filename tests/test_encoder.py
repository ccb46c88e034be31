"""The fast encoder against the naive formula, with the real splade-tiny."""

import numpy as np
import pytest
import torch

from pipeline.encoder import SparseVector, _groups, quantise

TEXTS = [
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Tides rise and fall because the Moon's gravity pulls on the oceans. " * 12,
    "short",
    "Binary search halves a sorted interval until the item is found; it takes logarithmic time. " * 30,
    "",
]


def naive(encoder, texts, pooling):
    """w_j = pool_i log(1 + ReLU(logit_ij)) over the full logits tensor, as Pyserini computes it."""
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(encoder.model_ref.location).eval()
    batch = encoder.tokenizer(texts, max_length=encoder.max_length, truncation=True, padding="longest",
                              return_tensors="pt", return_token_type_ids=False)
    with torch.inference_mode():
        logits = model(**batch).logits
        activated = torch.log(1 + torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)
        return (activated.max(1).values if pooling == "max" else activated.sum(1)).numpy()


def dense(vector: SparseVector, width: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.float32)
    out[vector.ids] = vector.weights
    return out


def test_max_pooling_equals_naive_formula(encoder):
    expected = naive(encoder, TEXTS, "max")
    got = np.stack([dense(v, encoder.vocab_size) for v in encoder.encode(TEXTS, batch_size=2)])
    assert np.abs(got - expected).max() < 1e-4
    assert all(len(v) > 0 for v in encoder.encode(TEXTS))  # even "" gets terms from [CLS] [SEP]


def test_sum_pooling_equals_naive_formula():
    from pipeline import models
    from pipeline.encoder import SpladeEncoder

    encoder = SpladeEncoder(models.resolve(None), "sum", 512)
    expected = naive(encoder, TEXTS, "sum")
    got = np.stack([dense(v, encoder.vocab_size) for v in encoder.encode(TEXTS, batch_size=3)])
    assert np.abs(got - expected).max() / expected.max() < 1e-5
    assert got.sum() > 2 * naive(encoder, TEXTS, "max").sum()  # sums over tokens exceed maxima


def test_result_does_not_depend_on_order_or_batch(encoder):
    one = encoder.encode(TEXTS, batch_size=1)
    many = encoder.encode(list(reversed(TEXTS)), batch_size=4)[::-1]
    for a, b in zip(one, many):
        assert np.array_equal(a.ids, b.ids)
        assert np.abs(a.weights - b.weights).max() < 1e-5


def test_truncation_at_max_length(encoder):
    ids = encoder.tokenize([TEXTS[3]])[0]
    assert len(ids) == 512 and ids[-1] == encoder.tokenizer.sep_token_id


def test_quantise_rounds_half_to_even_and_drops_zeros():
    # Every w * scale below is an exact .5 in binary floating point: 0.125, 0.375, 0.625 are exact
    # float32 values, and times 4 or 100 they stay exact. Half-up rounding would give 1, 2, 3 / 13, 38, 63.
    vector = SparseVector(np.array([1, 2, 3, 4]), np.array([0.125, 0.375, 0.625, 1.0], dtype=np.float32))
    ids, values = quantise(vector, 4)
    assert dict(zip(ids.tolist(), values.tolist())) == {2: 2, 3: 2, 4: 4}  # 0.5 -> 0 (dropped), 1.5 -> 2, 2.5 -> 2
    ids, values = quantise(vector, 100)
    assert dict(zip(ids.tolist(), values.tolist())) == {1: 12, 2: 38, 3: 62, 4: 100}


def test_to_terms_uses_wordpieces(encoder):
    terms = encoder.to_terms(encoder.encode(["goldfish growth"])[0], 100)
    assert all(isinstance(v, int) and v > 0 for v in terms.values())
    assert "gold" in terms and "##fish" in terms


@pytest.mark.parametrize("lengths, groups", [
    ([500, 3, 4], [(0, 1), (1, 3)]),
    ([100, 100, 100, 100], [(0, 4)]),
    ([200, 200, 200], [(0, 2), (2, 3)]),
])
def test_groups_cover_every_document_once(lengths, groups):
    assert _groups(lengths, 384) == groups


def test_background_tokenisation_gives_the_same_vectors(encoder, monkeypatch):
    """Windows tokenised by the background thread encode exactly as one tokenised list does."""
    import pipeline.encoder as encoder_module

    whole = encoder.encode_ids(encoder.tokenize(TEXTS))
    monkeypatch.setattr(encoder_module, "TOKENIZE_WINDOW", 2)
    windowed = encoder.encode(TEXTS)
    assert len(windowed) == len(TEXTS)
    for a, b in zip(whole, windowed):
        assert np.array_equal(a.ids, b.ids) and np.abs(a.weights - b.weights).max() < 1e-5


def test_batches_are_sized_by_tokens(encoder, monkeypatch):
    """Short texts share a batch up to batch_size x max_length padded tokens; long ones go alone."""
    seen = []
    original = encoder._pooled
    monkeypatch.setattr(encoder, "_pooled", lambda batch, **kw: seen.append([len(ids) for ids in batch]) or original(batch, **kw))
    encoder.encode(["one two"] * 100 + [TEXTS[3]] * 3, batch_size=2)
    assert [len(batch) for batch in seen] == [100, 2, 1]  # 100 x 4 tokens fit 2 x 512; 512-token texts 2 a batch


def test_single_queries_encode_exactly_as_the_search_stage_batches_them(encoder, scifact):
    """The service encodes one query at a time (a batch of one, one torch thread); the search stage
    encodes a topics file in batches. Every SciFact query gets the same float weights, hence the
    same integers, even though this encoder otherwise runs on two threads."""
    from pipeline.encoders import ModelQueries
    from pipeline.readers import read_topics
    from pipeline.search import encode_queries

    topics = read_topics(scifact / "queries.jsonl")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # two threads whatever this machine has, so one-thread encoding is what is tested
    try:
        batched = encode_queries(ModelQueries(encoder, 100, "scale"), topics, 32, progress=False)
        assert torch.get_num_threads() == 2  # restored
        vectors = encoder.encode_queries(encoder.tokenize(list(topics.values())), 32)
        assert torch.get_num_threads() == 2  # restored
        alone = [encoder.encode_queries([ids])[0] for ids in encoder.tokenize(list(topics.values()))]
    finally:
        torch.set_num_threads(before)
    assert len({len(ids) for ids in encoder.tokenize(list(topics.values()))}) > 10  # many lengths, many batches
    for qid, single, in_batch in zip(topics, alone, vectors):
        assert np.array_equal(single.ids, in_batch.ids) and np.array_equal(single.weights, in_batch.weights), qid
        assert encoder.to_terms(single, 100) == batched[qid], qid


def test_queries_always_encode_on_one_torch_thread(encoder, monkeypatch):
    """``encode_queries`` (the search stage's and the service's entry point) runs torch and numpy's
    BLAS on one thread whatever the counts were, and gives both back."""
    from pipeline import blas

    seen = []
    original = encoder._pooled
    monkeypatch.setattr(encoder, "_pooled", lambda batch, **kw: seen.append(
        (torch.get_num_threads(), blas.threads(), kw)) or original(batch, **kw))
    torch.set_num_threads(2)
    blas_before = blas.threads()
    blas.set_threads(2)
    try:
        encoder.encode_queries(encoder.tokenize(["a query", "a somewhat longer query"]))
        assert torch.get_num_threads() == 2 and blas.threads() == 2
    finally:
        torch.set_num_threads(encoder.threads)
        blas.set_threads(blas_before)
    assert seen == [(1, 1, {"queries": True})] * 2


def test_one_length_batches_never_mix_lengths():
    from pipeline.encoder import token_batches

    assert token_batches([3, 3, 3, 4, 9, 9], 6, one_length=True) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert token_batches([2, 2, 2, 5], 100, one_length=True) == [(0, 3), (3, 4)]
    assert token_batches([], 10, one_length=True) == []


def test_queries_equal_the_naive_formula_in_both_poolings(encoder):
    """``encode_queries`` (mask-free layers, numpy's BLAS projection) against the full logits tensor."""
    from pipeline import models
    from pipeline.encoder import SpladeEncoder

    queries = TEXTS[:3] + ["what causes tides", "what causes tides?"]
    for model in (encoder, SpladeEncoder(models.resolve(None), "sum", 512)):
        expected = naive(model, queries, model.pooling)
        got = np.stack([dense(v, model.vocab_size) for v in model.encode_queries(model.tokenize(queries))])
        assert np.abs(got - expected).max() / expected.max() < 1e-5, model.pooling
        assert (got > 0).sum() == (expected > 0).sum()


def test_unpadded_batches_take_the_layer_path_bit_for_bit(encoder, scifact):
    """The torch runner's mask-free path (the model's own modules in turn) equals its full forward
    on every SciFact query, alone and in equal-length batches (one thread, as queries run); padded
    batches keep the full forward."""
    from pipeline.readers import read_topics

    runner = encoder.runner
    assert runner._unmasked is not None
    ids = encoder.tokenize(list(read_topics(scifact / "queries.jsonl").values()))
    by_length = {}
    for row in ids:
        by_length.setdefault(len(row), []).append(row)
    with torch.inference_mode(), encoder.one_thread():
        for rows in by_length.values():
            batch = torch.tensor(rows)
            full = runner.model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
            assert torch.equal(runner.hidden(batch, torch.ones_like(batch)), full)
            assert torch.equal(runner._unmasked(batch[:1]), full[:1])
        calls = []
        original = runner._unmasked
        runner._unmasked = lambda batch: calls.append(batch) or original(batch)
        try:
            input_ids, mask = encoder._inputs([ids[0], ids[0][:3]])
            runner.hidden(input_ids, mask)
            assert calls == []  # a padded batch needs its mask: the full forward
        finally:
            runner._unmasked = original


def test_layer_path_is_refused_when_it_differs_or_does_not_apply():
    """Another architecture, or a model whose full forward does more than its layers, keeps the full
    forward (random tiny models: only the path's choice is under test)."""
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    from pipeline.backends.torch_runner import layer_path

    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32)).eval()
    bert.get_output_embeddings().forward = lambda hidden: hidden
    assert layer_path(bert) is not None
    distil = DistilBertForMaskedLM(DistilBertConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    assert layer_path(distil.eval()) is None
    full = bert.forward
    bert.forward = lambda **kw: type("Out", (), {"logits": full(**kw).logits + 1})()
    assert layer_path(bert) is None


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_project_rows_equals_the_tiled_torch_kernel(pooling):
    """numpy's BLAS projection over texts of several lengths and a vocabulary of several tiles,
    against ``project`` (the same dot products summed by MKL or OpenBLAS); a text gives the same bits
    alone as among others."""
    from pipeline import blas, projection

    generator = torch.Generator().manual_seed(3)
    lengths = [5, 1, 7, 7, 2]
    packed = torch.randn(sum(lengths), 24, generator=generator)
    weight = torch.randn(2 * projection.VOCAB_TILE + 100, 24, generator=generator) * 0.3
    bias = torch.randn(weight.shape[0], generator=generator) - 1
    expected = projection.project(packed, lengths, weight, bias, pooling).numpy()
    arguments = (packed.numpy(), lengths, weight.T.contiguous().numpy(), bias.numpy(), pooling)
    with blas.one_thread():
        got = projection.project_rows(*arguments)
        alone = projection.project_rows(packed[5:6].numpy(), [1], *arguments[2:])
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5
    assert ((got > 0) == (expected > 0)).all()
    assert np.array_equal(got[1], alone[0])
    with pytest.raises(ValueError):
        projection.project_rows(*arguments[:4], "mean")
