"""Masking schemes of the pretext task by name (the plan's `masking.scheme`): an explicit dict.

A scheme makes the mask of one image (numpy, for the worker path and the validation masks) and of a
batch on a device (the device path), and says where the reconstruction loss looks: `random_blocks`
(the paper's Random Block Masking) scores the whole image, as the paper does; `grid` (fine-grained
masking) scores the hidden pixels only, as masked-image pretraining does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rbmnet.errors import RbmnetError
from rbmnet.pretexts.grid import grid_mask, grid_masks_torch
from rbmnet.pretexts.random_blocks import block_mask, block_masks_torch


@dataclass(frozen=True)
class MaskingScheme:
    name: str
    mask: Callable  # (shape, masking config, grid cell, numpy rng) -> (H, W) bool, True = hidden
    masks_torch: Callable  # (batch, height, width, masking config, cell, torch generator, device) -> (B, 1, H, W)
    loss_on_hidden_pixels: bool  # False: the loss covers the whole image
    # what model ids say for weights pretrained with this scheme: the pretext id's suffix, and the
    # initialisation part of a segmentation id started from them (the paper's RBM keeps the ids it had)
    pretext_id_tag: str = ""
    init_tag: str = "rbm"


MASKING_SCHEMES: dict[str, MaskingScheme] = {
    "random_blocks": MaskingScheme(
        "random_blocks", lambda shape, config, cell, rng: block_mask(shape, config, rng),
        lambda batch, height, width, config, cell, generator, device: block_masks_torch(
            batch, height, width, config, generator, device),
        loss_on_hidden_pixels=False),
    "grid": MaskingScheme("grid", grid_mask, grid_masks_torch, loss_on_hidden_pixels=True,
                          pretext_id_tag="__grid", init_tag="grid"),
}


def masking_scheme(name: str) -> MaskingScheme:
    if name not in MASKING_SCHEMES:
        raise RbmnetError(f"unknown masking scheme '{name}' (known: {', '.join(MASKING_SCHEMES)})")
    return MASKING_SCHEMES[name]
