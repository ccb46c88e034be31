"""Training: the shared kernel's gradients, data, and short real fine-tunes on sentence-transformers' trainer."""

import json

import pytest
import torch

from pipeline import models
from pipeline.demo import DEMO_DATA
from pipeline.encoder import SpladeEncoder
from pipeline.errors import InputError, PipelineError
from pipeline.projection import MaxProjection
from pipeline.train import TrainSettings, Triple, mine_triples, read_triples, train

TEXTS = ["coral reefs bleach when the ocean warms", "photosynthesis in plants",
         "what do bees do in winter? they cluster and shiver to keep the queen warm"]


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
                           negatives="bm25")
    assert len(triples) == 20  # one per judged relevant pair
    corpus = {json.loads(l)["_id"]: json.loads(l) for l in (DEMO_DATA / "corpus.jsonl").read_text().splitlines()}
    text = {f"{d['title']} {d['text']}": i for i, d in corpus.items()}
    first = triples[0]
    assert text[first.positive] == "plants-01" and text[first.negative] not in ("plants-01", "plants-02", "plants-05")
    random_triples = mine_triples(DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv",
                                  DEMO_DATA / "corpus.jsonl", negatives="random")
    assert len(random_triples) == 20


@pytest.fixture(scope="module")
def demo_triples():
    return mine_triples(DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv", DEMO_DATA / "corpus.jsonl",
                        negatives="random")


SETTINGS = TrainSettings(batch_size=4, max_steps=4, doc_max_length=64, warmup_steps=1, lambda_warmup_steps=2,
                         learning_rate=2e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_triples):
    """A fine-tune stopped by --max-minutes after one step, then resumed to the end (the same call again)."""
    output = tmp_path_factory.mktemp("train") / "model"
    partial = train(demo_triples, output, settings=SETTINGS, save_steps=2, max_minutes=0, progress=False)
    summary = train(demo_triples, output, settings=SETTINGS, save_steps=2, progress=False)
    return output, partial, summary


def test_short_fine_tune_stops_resumes_and_writes_a_checkpoint_encode_loads(trained, demo_triples):
    output, partial, summary = trained
    assert partial["finished"] is False and partial["step"] == 1  # the deadline stops it after one step
    assert summary["finished"] and summary["steps"] == 4
    log = [json.loads(l) for l in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["postings_d"] > 0 and r["postings_q"] > 0 and r["ranking"] is not None for r in log)
    assert [r["lambda_q"] for r in log] == pytest.approx([0.0, 0.25 * 3e-3, 3e-3, 3e-3])  # quadratic, 2 steps
    assert not (output / "checkpoint").exists()  # the run's checkpoints go once the model is written
    assert models.resolve(str(output)).fingerprint != models.resolve(None).fingerprint  # the weights moved
    assert len(SpladeEncoder(models.resolve(str(output))).encode(["coral reefs"])[0]) > 0
    again = train(demo_triples, output, settings=SETTINGS, progress=False)  # finished: nothing to do
    assert again == json.loads((output / "training.json").read_text())


def test_a_run_with_other_settings_is_not_resumed(tmp_path, demo_triples):
    output = tmp_path / "model"
    (output / "checkpoint").mkdir(parents=True)
    (output / "checkpoint" / "state.json").write_text(json.dumps({"settings": {}, "base": "x"}))
    with pytest.raises(PipelineError, match="other settings"):
        train(demo_triples, output, settings=SETTINGS, progress=False)


def dense(vectors, vocab):
    out = torch.zeros(len(vectors), vocab)
    for row, vector in enumerate(vectors):
        out[row, torch.as_tensor(vector.ids, dtype=torch.long)] = torch.as_tensor(vector.weights)
    return out


def test_a_trained_checkpoint_encodes_as_the_trainer_scores_it(trained):
    """The trainer's module chain (tiled trainable max pooling, gradients on), sentence-transformers'
    own SparseEncoder loading the folder (plain SpladePooling over full logits) and ``encode`` agree."""
    from sentence_transformers import SparseEncoder

    from pipeline.training.modules import splade_model

    output = str(trained[0])
    encoder = SpladeEncoder(models.resolve(output))
    expected = dense(encoder.encode(TEXTS), encoder.vocab_size)

    chain = splade_model(output, doc_max_length=512)
    chain.eval()  # no dropout; gradients stay on, so the pooling is the trainable kernel the trainer runs
    with torch.enable_grad():
        scored = chain(chain.preprocess(TEXTS, task="document"))["sentence_embedding"]
    assert scored.requires_grad
    plain = SparseEncoder(output, device="cpu")
    with torch.inference_mode():
        loaded = plain(plain.preprocess(TEXTS))["sentence_embedding"]

    for got in (scored.detach(), loaded):
        assert torch.allclose(got, expected, atol=1e-5)
        assert ((got > 0) == (expected > 0)).all()
        for row in range(len(TEXTS)):
            assert got[row].topk(10).indices.tolist() == expected[row].topk(10).indices.tolist()
    # the scores the contrastive loss sees are the dot products search computes from encode's vectors
    assert torch.allclose(scored.detach() @ scored.detach().T, expected @ expected.T, rtol=1e-5)


def test_margin_mse_l1_and_gradient_accumulation(tmp_path):
    triples = [Triple(f"query {i} about coral", f"coral reef text {i}", f"desert sand text {i}", (10.0 + i, 2.0))
               for i in range(8)]
    settings = TrainSettings(loss="margin-mse", regulariser="l1", batch_size=2, gradient_accumulation_steps=2,
                             max_steps=2, doc_max_length=32, warmup_steps=0, lambda_warmup_steps=0)
    summary = train(triples, tmp_path / "model", settings=settings, progress=False)
    log = [json.loads(l) for l in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert summary["finished"] and [r["step"] for r in log] == [1, 2]
    assert log[0]["lambda_d"] == pytest.approx(1e-3)  # no warm-up: the full lambda from the first step
    with pytest.raises(PipelineError, match="teacher scores"):
        train([Triple("q", "p", "n")] * 4, tmp_path / "other", settings=settings, progress=False)


def test_absent_device_or_unsupported_precision_is_one_line(tmp_path, demo_triples):
    from pipeline.cli import main

    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="--device cuda"):
            train(demo_triples, tmp_path / "a", settings=SETTINGS, device="cuda", progress=False)
    with pytest.raises(PipelineError, match="fp16 needs a GPU"):
        train(demo_triples, tmp_path / "b", settings=SETTINGS, device="cpu", precision="fp16", progress=False)
    triples = tmp_path / "triples.jsonl"
    triples.write_text(json.dumps({"query": "q", "positive": "p", "negative": "n"}) + "\n")
    code = main(["train", "--output", str(tmp_path / "c"), "--triples", str(triples), "--device", "cuda:99",
                 "--quiet"])
    assert code == 2 and not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def same_weights(first, second) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def log_lines(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def test_a_resumed_fine_tune_ends_with_the_weights_of_an_uninterrupted_one(trained, demo_triples, tmp_path):
    """Stopped after one step and resumed (the ``trained`` fixture), the run ends where one that never
    stopped ends: the same weights, bit for bit, and the same log."""
    whole = tmp_path / "whole"
    train(demo_triples, whole, settings=SETTINGS, save_steps=2, progress=False)
    assert same_weights(weights(trained[0]), weights(whole))
    assert log_lines(trained[0]) == log_lines(whole)


def test_draws_between_steps_do_not_move_the_dropout_masks(demo_triples, tmp_path, monkeypatch):
    """Whatever else takes numbers from torch's generator between the steps (here a callback at the
    start of every epoch and the end of every step), the run trains the same model: its masks come
    from the seed and the steps alone (``callbacks.DropoutStream``)."""
    from transformers import TrainerCallback

    import pipeline.train as train_module

    class Draws(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            torch.rand(7)

        def on_step_end(self, args, state, control, **kwargs):
            torch.rand(3)

    settings = TrainSettings(**{**SETTINGS.__dict__, "max_steps": 6})  # past an epoch of the demo's 20
    train(demo_triples, tmp_path / "plain", settings=settings, progress=False)
    trainer = train_module._trainer
    monkeypatch.setattr(train_module, "_trainer", lambda *args: trainer(*args[:-1], [*args[-1], Draws()]))
    train(demo_triples, tmp_path / "drawn", settings=settings, progress=False)
    assert same_weights(weights(tmp_path / "plain"), weights(tmp_path / "drawn"))


def test_dropout_masks_come_from_the_seed_and_the_steps_alone(tmp_path):
    """The stream itself: draws outside the steps skipped, continued across a checkpoint; a file cut
    short by a kill is refused by name."""
    from types import SimpleNamespace

    from pipeline.training.callbacks import DropoutStream

    torch.manual_seed(7)
    expected = [torch.rand(4) for _ in range(3)]  # the loop: seeded, then only forward passes draw
    args = SimpleNamespace(device=torch.device("cpu"), output_dir=str(tmp_path), seed=7, world_size=1,
                           process_index=0)
    stream, drawn = DropoutStream(), []
    torch.manual_seed(999)  # whatever the trainer seeded before
    stream.on_train_begin(args, None, None)
    for step in (1, 2):
        torch.rand(3)  # drawn outside the steps
        stream.on_step_begin(args, None, None)
        drawn.append(torch.rand(4))
        stream.on_step_end(args, None, None)
    (tmp_path / "checkpoint-2").mkdir()
    stream.on_save(args, SimpleNamespace(global_step=2), None)
    assert sorted(path.name for path in (tmp_path / "checkpoint-2").iterdir()) == ["dropout_rng.pt"]
    resumed = DropoutStream(resume_from=tmp_path / "checkpoint-2")
    torch.manual_seed(123)  # a fresh process
    resumed.on_train_begin(args, None, None)
    torch.rand(5)
    resumed.on_step_begin(args, None, None)
    drawn.append(torch.rand(4))
    assert all(torch.equal(got, want) for got, want in zip(drawn, expected, strict=True))

    saved = tmp_path / "checkpoint-2" / "dropout_rng.pt"
    saved.write_bytes(saved.read_bytes()[:40])
    with pytest.raises(InputError, match="dropout_rng.pt: unreadable"):
        DropoutStream(resume_from=tmp_path / "checkpoint-2").on_train_begin(args, None, None)


def test_each_column_goes_through_the_model_in_a_forward_pass_of_its_own():
    """As the hand-written loop ran them: the document columns are not merged into one batch padded
    to the wider of the two (dropout would draw its masks over that shape)."""
    from pipeline.training import modules, objectives

    model = modules.splade_model(models.resolve(None).location, doc_max_length=64)
    loss = objectives.splade_loss(model, "contrastive", "flops", 3e-3, 1e-3)
    columns = [["coral reefs", "bees in winter"], ["coral reefs bleach when the ocean warms", "bees cluster"],
               ["a desert", "photosynthesis in plants turns light, water and air into sugar and oxygen"]]
    features = [model.preprocess(texts, task="query" if n == 0 else "document") for n, texts in enumerate(columns)]
    shapes = []
    original = model.forward
    model.forward = lambda batch, **kwargs: shapes.append(tuple(batch["input_ids"].shape)) or original(batch, **kwargs)
    loss(features, None)
    assert shapes == [tuple(f["input_ids"].shape) for f in features]
    assert len({shape[1] for shape in shapes[1:]}) == 2  # the two document columns padded apart
