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
