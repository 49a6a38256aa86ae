"""Segmentation losses: batch soft Dice + BCE (binary), and the multi-class Dice + cross-entropy.

The Dice is a "batch Dice": intersections and sums are added over the whole batch before the
ratio, so an image with little foreground does not dominate. `dice_sums` returns those sums on their
own so that distributed training can all-reduce them across ranks before `dice_from_sums`.
Everything is computed in float32, whatever the logits' dtype, because half-precision sums over
a batch of 512x512 images overflow.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

SPATIAL_AND_BATCH = (0, 2, 3)  # sum over batch and pixels of (B, C, H, W), one value per channel


def dice_sums(probabilities: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel intersection sum(p * t) and denominator sum(p) + sum(t), each of shape (C,)."""
    intersection = (probabilities * target).sum(dim=SPATIAL_AND_BATCH)
    denominator = probabilities.sum(dim=SPATIAL_AND_BATCH) + target.sum(dim=SPATIAL_AND_BATCH)
    return intersection, denominator


def dice_from_sums(intersection: torch.Tensor, denominator: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice per channel; `smooth` makes empty-vs-empty a Dice of 1 instead of 0/0."""
    return (2.0 * intersection + smooth) / (denominator + smooth)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.7,
                  bce_weight: float = 0.3, smooth: float = 1e-5,
                  sums_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """dice_weight * (1 - batch soft Dice) + bce_weight * BCE, for (B, 1, H, W) logits and {0, 1} target.

    `sums_reducer` (distributed.all_reduce_sum under DDP) sums the Dice sums over ranks, so the Dice
    is that of the global batch; the BCE is a mean, which DDP's gradient averaging makes global.
    """
    logits = logits.float()
    target = target.float()
    sums = torch.stack(dice_sums(torch.sigmoid(logits), target))  # (2, C): one collective for both
    if sums_reducer is not None:
        sums = sums_reducer(sums)
    dice = dice_from_sums(sums[0], sums[1], smooth).mean()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return dice_weight * (1.0 - dice) + bce_weight * bce


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.7, ce_weight: float = 0.3,
                 smooth: float = 1e-5, sums_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """dice_weight * (1 - mean batch soft Dice) + ce_weight * cross-entropy, for (B, K+1, H, W) logits
    and (B, H, W) class indices (0 = background).

    The Dice is averaged over the foreground classes present in the (global) batch's target, so a
    tooth that appears in a few images weighs as much as one in every image, and a class that is
    absent contributes nothing (its 0/0 Dice would otherwise reward predicting nothing).
    """
    logits = logits.float()
    probabilities = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
    intersection, denominator = dice_sums(probabilities[:, 1:], one_hot[:, 1:])
    present = one_hot[:, 1:].sum(dim=SPATIAL_AND_BATCH)
    sums = torch.stack((intersection, denominator, present))
    if sums_reducer is not None:
        sums = sums_reducer(sums)
    dice = dice_from_sums(sums[0], sums[1], smooth)
    has_class = sums[2] > 0
    mean_dice = dice[has_class].mean() if bool(has_class.any()) else dice.new_tensor(1.0)
    return dice_weight * (1.0 - mean_dice) + ce_weight * F.cross_entropy(logits, target)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy over the pixels whose target is not `ignore_index`; 0 when there is none."""
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0  # keeps the graph (DDP expects every parameter to get a gradient)
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
