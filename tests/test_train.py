"""Training: exact gradients of the tiled max projection, data, and a short real fine-tune."""

import json

import pytest
import torch

from pipeline.errors import InputError, PipelineError
from pipeline.train import MaxProjection, TrainSettings, Triple, mine_triples, read_triples, train
from pipeline.demo import DEMO_DATA


def naive_max(packed, weight, starts):
    return torch.stack([(packed[a:b] @ weight.T).max(0).values for a, b in zip(starts[:-1], starts[1:])])


def test_max_projection_matches_autograd_of_the_naive_formula():
    torch.manual_seed(0)
    packed = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(40, dtype=torch.float64)
    starts = [0, 4, 5, 11]
    upstream = torch.randn(3, 40, dtype=torch.float64)

    ours = torch.log1p(torch.relu(MaxProjection.apply(packed, weight, starts) + bias))
    (ours * upstream).sum().backward()
    grads = packed.grad.clone(), weight.grad.clone()
    packed.grad, weight.grad = None, None
    expected = torch.log1p(torch.relu(naive_max(packed, weight, starts) + bias))
    (expected * upstream).sum().backward()

    assert torch.allclose(ours, expected)
    assert torch.allclose(grads[0], packed.grad) and torch.allclose(grads[1], weight.grad)
    assert torch.autograd.gradcheck(lambda p, w: MaxProjection.apply(p, w, starts), (packed, weight))


def test_read_triples(tmp_path):
    path = tmp_path / "triples.jsonl"
    path.write_text(json.dumps({"query": "q", "positive": "p", "negative": "n", "scores": [9.5, 2]}) + "\n"
                    + json.dumps({"query": "q2", "positive": "p2", "negative": "n2"}) + "\n")
    assert read_triples(path) == [Triple("q", "p", "n", (9.5, 2)), Triple("q2", "p2", "n2", None)]
    path.write_text('{"query": "q", "positive": "p"}\n')
    with pytest.raises(InputError, match=r"triples.jsonl:1: missing text field\(s\): negative"):
        read_triples(path)


def test_mined_triples_avoid_judged_documents(tmp_path):
    triples = mine_triples(DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv", DEMO_DATA / "corpus.jsonl",
                           negatives="bm25", workdir=tmp_path)
    assert len(triples) == 20  # one per judged relevant pair
    corpus = {json.loads(l)["_id"]: json.loads(l) for l in (DEMO_DATA / "corpus.jsonl").read_text().splitlines()}
    text = {f"{d['title']} {d['text']}": i for i, d in corpus.items()}
    first = triples[0]
    assert text[first.positive] == "plants-01" and text[first.negative] not in ("plants-01", "plants-02", "plants-05")
    random_triples = mine_triples(DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv",
                                  DEMO_DATA / "corpus.jsonl", negatives="random")
    assert len(random_triples) == 20


def test_short_fine_tune_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    triples = mine_triples(DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv", DEMO_DATA / "corpus.jsonl",
                           negatives="random")
    settings = TrainSettings(batch_size=4, max_steps=4, doc_max_length=64, warmup_steps=1, lambda_warmup_steps=2)
    output = tmp_path / "model"
    partial = train(triples, output, settings=settings, save_steps=2, max_minutes=0, progress=False)
    assert partial["finished"] is False and partial["step"] == 1  # the deadline stops it after one step
    summary = train(triples, output, settings=settings, save_steps=2, progress=False)
    assert summary["finished"] and summary["steps"] == 4
    log = [json.loads(l) for l in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["postings_d"] > 0 for r in log)
    from pipeline import models
    from pipeline.encoder import SpladeEncoder
    encoder = SpladeEncoder(models.resolve(str(output)))
    assert len(encoder.encode(["coral reefs"])[0]) > 0
    with pytest.raises(PipelineError, match="other settings"):
        (output / "training.json").unlink()
        (output / "checkpoint").mkdir()
        (output / "checkpoint" / "state.json").write_text(json.dumps({"step": 1, "settings": {}, "base": "x"}))
        train(triples, output, settings=settings, progress=False)
