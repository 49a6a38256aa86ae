"""Segmentation and reconstruction losses."""
from __future__ import annotations

import math

import pytest
import torch

from rbmnet.tasks.losses import dice_bce_loss, dice_from_sums, dice_sums
from rbmnet.training.pretext import reconstruction_l1


def test_perfect_prediction_has_loss_near_zero():
    target = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    logits = 20.0 * (2 * target - 1)
    assert dice_bce_loss(logits, target).item() < 1e-4


def test_hand_computed_value():
    # p = 0.5 everywhere, one foreground pixel of four: Dice = 2 * 0.5 / (2 + 1) = 1/3, BCE = ln 2
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    expected = 0.7 * (1 - 1 / 3) + 0.3 * math.log(2)
    assert dice_bce_loss(logits, target).item() == pytest.approx(expected, abs=1e-5)
    assert dice_bce_loss(logits, target, dice_weight=1.0, bce_weight=0.0).item() == pytest.approx(2 / 3, abs=1e-5)


def test_dice_is_summed_over_the_whole_batch():
    probabilities = torch.stack([torch.full((1, 2, 2), 0.5), torch.ones(1, 2, 2)])
    target = torch.stack([torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), torch.ones(1, 2, 2)])
    intersection, denominator = dice_sums(probabilities, target)
    assert intersection.tolist() == pytest.approx([0.5 + 4.0])
    assert denominator.tolist() == pytest.approx([(2.0 + 1.0) + (4.0 + 4.0)])
    # batch Dice 9/11, not the per-image mean (1/3 + 1) / 2
    assert dice_from_sums(intersection, denominator).item() == pytest.approx(9 / 11, abs=1e-5)


def test_dice_is_per_channel_for_multiclass():
    target = torch.zeros(1, 2, 2, 2)
    target[:, 0, 0] = 1
    target[:, 1, 1] = 1
    probabilities = torch.stack([target[:, 0], torch.zeros(1, 2, 2)], dim=1)
    dice = dice_from_sums(*dice_sums(probabilities, target))
    assert dice.shape == (2,)
    assert dice[0].item() == pytest.approx(1.0) and dice[1].item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_flows_and_descends():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    logits = torch.zeros(2, 1, 8, 8, requires_grad=True)
    first = dice_bce_loss(logits, target)
    first.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # foreground pixels are pushed up, background down
    assert logits.grad[0, 0, 3, 3] < 0 < logits.grad[0, 0, 0, 0]
    optimizer = torch.optim.SGD([logits], lr=50.0)
    for _ in range(20):
        optimizer.zero_grad()
        dice_bce_loss(logits, target).backward()
        optimizer.step()
    assert dice_bce_loss(logits, target).item() < first.item() / 2


def test_half_precision_logits_give_float32_loss():
    logits = torch.randn(2, 1, 64, 64).half()
    target = (torch.rand(2, 1, 64, 64) > 0.5).half()
    loss = dice_bce_loss(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(dice_bce_loss(logits.float(), target.float()).item(), abs=1e-6)


def test_reconstruction_l1_is_mean_absolute_error():
    prediction = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.75]]]])
    assert reconstruction_l1(prediction, target).item() == pytest.approx((1 + 0 + 1 + 0.5) / 4)
