"""Losses and regularisers on hand-computed values."""

import math

import pytest
import torch

from pipeline.losses import flops, in_batch_contrastive, l1, margin_mse, quadratic_warmup


def test_in_batch_contrastive_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # scores q1: [2, 0, 1, 0] (target 0); q2: [0, 2, 2, 0] (target 1)
    expected = (-(2 - math.log(math.exp(2) + 1 + math.exp(1) + 1))
                - (2 - math.log(1 + math.exp(2) + math.exp(2) + 1))) / 2
    assert in_batch_contrastive(q, pos, neg).item() == pytest.approx(expected)
    assert in_batch_contrastive(q, pos).item() == pytest.approx(
        (-(2 - math.log(math.exp(2) + 1)) - (2 - math.log(1 + math.exp(2)))) / 2)


def test_margin_mse_hand_computed():
    q = torch.tensor([[1.0, 2.0]])
    pos, neg = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # student margin (3 + 2) - 1 = 4; teacher margin 9 - 6 = 3 -> (4 - 3)^2
    assert margin_mse(q, pos, neg, torch.tensor([9.0]), torch.tensor([6.0])).item() == pytest.approx(1.0)


def test_flops_and_l1_hand_computed():
    w = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # column means 2, 0, 1 -> 4 + 0 + 1
    assert flops(w).item() == pytest.approx(5.0)
    assert l1(w).item() == pytest.approx((3 + 3) / 2)
    # FLOPS prefers spreading mass over different terms; L1 does not care
    spread, shared = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert flops(spread) < flops(shared) and l1(spread) == l1(shared)


def test_quadratic_warmup():
    assert quadratic_warmup(0.1, 0, 100) == 0.0
    assert quadratic_warmup(0.1, 50, 100) == pytest.approx(0.025)
    assert quadratic_warmup(0.1, 100, 100) == pytest.approx(0.1)
    assert quadratic_warmup(0.1, 500, 100) == pytest.approx(0.1)
    assert quadratic_warmup(0.1, 3, 0) == 0.1


# -- the same objective on sentence-transformers (pipeline.training.objectives) ----------------------

@pytest.fixture(scope="module")
def st_model():
    from pipeline import models
    from pipeline.training.modules import splade_model

    return splade_model(models.resolve(None).location)


def test_sentence_transformers_losses_equal_ours(st_model):
    from sentence_transformers.sparse_encoder.losses import FlopsLoss

    from pipeline.training.objectives import Regulariser, splade_loss

    torch.manual_seed(0)
    q, pos, neg = (torch.rand(4, 30).relu() for _ in range(3))
    contrastive = splade_loss(st_model, "contrastive", "flops", 3e-3, 1e-3)
    assert contrastive.loss.compute_loss_from_embeddings([q, pos, neg], None).item() == pytest.approx(
        in_batch_contrastive(q, pos, neg).item(), rel=1e-6)
    teacher = torch.tensor([[9.0, 2.0], [5.0, 4.0], [1.0, 3.0], [7.0, 7.0]])
    mse = splade_loss(st_model, "margin-mse", "l1", 3e-3, 1e-3)
    assert mse.loss.compute_loss_from_embeddings([q, pos, neg], teacher).item() == pytest.approx(
        margin_mse(q, pos, neg, teacher[:, 0], teacher[:, 1]).item(), rel=1e-6)
    documents = torch.cat([pos, neg])
    assert Regulariser("flops").compute_loss_from_embeddings(documents).item() == pytest.approx(
        FlopsLoss(st_model).compute_loss_from_embeddings(documents).item(), rel=1e-6)
    l1_module = mse.document_regularizer
    assert l1_module.compute_loss_from_embeddings(documents).item() == pytest.approx(l1(documents).item())
    assert l1_module.take()["postings"] == pytest.approx((documents > 0).sum(1).float().mean().item())
    with pytest.raises(ValueError, match="regulariser"):
        Regulariser("l2")


def test_regulariser_warmup_is_quadratic_in_steps(st_model):
    from types import SimpleNamespace

    from pipeline.training.objectives import RegulariserWarmup, splade_loss

    loss = splade_loss(st_model, "contrastive", "flops", 0.1, 0.02)
    warmup = RegulariserWarmup(loss, steps=10)
    state, control = SimpleNamespace(max_steps=1000, global_step=0), SimpleNamespace()
    warmup.on_train_begin(None, state, control)
    for step in (0, 5, 10, 500):
        state.global_step = step
        warmup.on_step_begin(None, state, control)
        assert loss.query_regularizer_weight == pytest.approx(quadratic_warmup(0.1, step, 10))
        assert loss.document_regularizer_weight == pytest.approx(quadratic_warmup(0.02, step, 10))
