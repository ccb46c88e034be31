"""Training's batch order and learning-rate schedule, IDF, and the inference-free model `train` makes."""

import json
import random

import numpy as np
import pytest
import torch

from pipeline import models
from pipeline.demo import DEMO_DATA
from pipeline.encoder import SpladeEncoder
from pipeline.errors import PipelineError
from pipeline.train import TrainSettings, mine_triples, train
from pipeline.training.idf import bm25_idf, document_frequencies
from pipeline.training.schedule import EpochShuffle, linear_warmup_decay

TEXTS = ["coral reefs bleach when the ocean warms", "photosynthesis in plants"]


def test_batches_are_the_seeded_epoch_shuffle_of_the_loop_before_the_trainer():
    sampler = EpochShuffle(list(range(10)), batch_size=3, drop_last=True, seed=13)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(range(10))
        random.Random(13 + epoch).shuffle(order)
        assert list(sampler) == [order[0:3], order[3:6], order[6:9]]  # the partial batch dropped
    assert len(sampler) == 3
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first  # each epoch its own order
    keep = EpochShuffle(list(range(10)), batch_size=3, drop_last=False, seed=13)
    assert len(keep) == 4 and sorted(i for batch in keep for i in batch) == list(range(10))


def test_learning_rate_starts_above_zero_and_ends_at_zero():
    factor = linear_warmup_decay(warmup=4, total=10)
    assert [factor(s) for s in range(10)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert linear_warmup_decay(0, 3)(0) == 1.0


def test_idf_counts_each_wordpiece_once_per_document():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.resolve(None).location)
    texts = ["coral coral reef", "coral sand", "desert sand"]
    frequencies, documents = document_frequencies(tokenizer, iter(texts), len(tokenizer.get_vocab()))
    coral, sand, desert = tokenizer.convert_tokens_to_ids(["coral", "sand", "desert"])
    assert documents == 3 and (frequencies[coral], frequencies[sand], frequencies[desert]) == (2, 2, 1)
    assert frequencies[tokenizer.cls_token_id] == 0  # no special tokens: queries never carry them
    idf = bm25_idf(frequencies, documents)
    assert idf[desert] == pytest.approx(np.log(1 + 2.5 / 1.5)) and idf[coral] == pytest.approx(np.log(1 + 1.5 / 2.5))
    assert idf[tokenizer.cls_token_id] > idf[desert] > idf[coral] > 0
    with pytest.raises(ValueError):
        bm25_idf(frequencies, 0)


SETTINGS = TrainSettings(batch_size=4, max_steps=2, doc_max_length=64, warmup_steps=1, lambda_warmup_steps=0,
                         learning_rate=2e-4, lambda_d=1e-3, inference_free=True, query_learning_rate=1e-2)


def test_each_route_has_its_own_defaults_and_given_values_win():
    symmetric, free = TrainSettings(), TrainSettings(inference_free=True)
    assert (symmetric.learning_rate, symmetric.lambda_d) == (3e-5, 1e-3)
    assert (free.learning_rate, free.lambda_d, free.query_learning_rate) == (1e-5, 0.0, 1e-2)
    given = TrainSettings(inference_free=True, learning_rate=3e-5, lambda_d=1e-3)
    assert (given.learning_rate, given.lambda_d) == (3e-5, 1e-3)


@pytest.fixture(scope="module")
def inference_free(tmp_path_factory):
    triples = mine_triples(DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv",
                           DEMO_DATA / "corpus.jsonl", negatives="random")
    corpus = [json.loads(line) for line in (DEMO_DATA / "corpus.jsonl").read_text().splitlines()]
    documents = [f"{d['title']} {d['text']}" for d in corpus]
    output = tmp_path_factory.mktemp("train-free") / "model"
    summary = train(triples, output, settings=SETTINGS, progress=False, documents=iter(documents))
    return output, summary, documents


def test_inference_free_model_loads_in_sentence_transformers(inference_free):
    from sentence_transformers import SparseEncoder
    from transformers import AutoTokenizer

    output, summary, documents = inference_free
    assert summary["finished"] and summary["query_weights"]["documents"] == len(documents)
    assert (output / "router_config.json").is_file()
    model = SparseEncoder(str(output), device="cpu")
    queries = model.encode_query(TEXTS, convert_to_tensor=True).to_dense()
    docs = model.encode_document(TEXTS, convert_to_tensor=True).to_dense()
    assert queries.shape == docs.shape == (2, 30522)

    # a query is its distinct wordpieces, weighted by the trained table that started as IDF
    tokenizer = AutoTokenizer.from_pretrained(models.resolve(None).location)
    ids = sorted(set(tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]))
    assert torch.nonzero(queries[0]).flatten().tolist() == ids
    frequencies, count = document_frequencies(tokenizer, documents, len(tokenizer.get_vocab()))
    start = torch.from_numpy(bm25_idf(frequencies, count))
    trained = model[0].sub_modules["query"][0].weight.detach()
    assert torch.equal(queries[0, ids], trained[ids])
    # the query weights train at their own rate: two Adam steps at 1e-2 move the training queries'
    # wordpieces about 1e-2 each; at the documents' 2e-4 (and weight decay alone) they would move < 1e-3
    moved = (trained - start).abs()
    assert 5e-3 < moved.max().item() < 0.05

    # the document route is a plain masked-LM folder that encode takes, giving the library's weights
    encoder = SpladeEncoder(models.resolve(str(output / "document_0_Transformer")))
    ours = torch.zeros_like(docs)
    for row, vector in enumerate(encoder.encode(TEXTS)):
        ours[row, torch.as_tensor(vector.ids, dtype=torch.long)] = torch.as_tensor(vector.weights)
    assert torch.allclose(ours, docs, atol=1e-5)
    assert models.resolve(str(output / "document_0_Transformer")).fingerprint != models.resolve(None).fingerprint


def test_inference_free_log_and_settings(inference_free):
    output, summary, _ = inference_free
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(r["lambda_q"] == 0.0 and r["lambda_d"] == pytest.approx(1e-3) for r in log)  # queries unregularised
    assert log[0]["learning_rate"] == pytest.approx(2e-4)  # the first step already learns (warm-up of 1)
    assert summary["settings"]["inference_free"] is True


def test_inference_free_needs_documents(tmp_path):
    from pipeline.train import Triple

    with pytest.raises(PipelineError, match="documents to count IDF"):
        train([Triple("q", "p", "n")], tmp_path / "m", progress=False, documents=iter([]),
              settings=TrainSettings(batch_size=1, max_steps=1, inference_free=True))
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_cli_trains_an_inference_free_model_with_idf_over_the_corpus(tmp_path):
    from pipeline.cli import main

    triples = tmp_path / "triples.jsonl"
    triples.write_text("".join(json.dumps({"query": f"coral reef {i}", "positive": f"coral reefs bleach {i}",
                                           "negative": f"desert sand {i}"}) + "\n" for i in range(4)))
    output = tmp_path / "model"
    code = main(["train", "--output", str(output), "--triples", str(triples), "--corpus",
                 str(DEMO_DATA / "corpus.jsonl"), "--inference-free", "--batch-size", "2", "--max-steps", "1",
                 "--max-length", "32", "--quiet"])
    assert code == 0
    record = json.loads((output / "training.json").read_text())
    corpus_size = len((DEMO_DATA / "corpus.jsonl").read_text().splitlines())
    assert record["query_weights"]["documents"] == corpus_size  # the corpus, not the triples' 8 texts
    assert (output / "query_0_SparseStaticEmbedding").is_dir() and (output / "document_0_Transformer").is_dir()
    # train again with --overwrite: the Router folder is recognised as train's own output
    assert main(["train", "--output", str(output), "--triples", str(triples), "--inference-free",
                 "--batch-size", "2", "--max-steps", "1", "--max-length", "32", "--overwrite", "--quiet"]) == 0
    assert json.loads((output / "training.json").read_text())["query_weights"]["documents"] == 8


@pytest.mark.parametrize("option, value", [("--query-learning-rate", "0"), ("--batches", "random")])
def test_bad_training_options_are_one_line(tmp_path, capsys, option, value):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", "--output", str(tmp_path / "m"), "--triples", str(tmp_path / "t.jsonl"), option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and option in err[0]
    assert not (tmp_path / "m").exists()
