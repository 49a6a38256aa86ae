"""Random Block Masking, the paper's masking scheme (see docs/plan.md, `masking`).

Each image gets n ~ U{min_blocks..max_blocks} (2..5) rectangles, each covering `block_area_fraction`
(15 %) of the image, with a random aspect ratio and a random position fully inside the image. The
paper states that this masks "30-75 % of the image", which holds only when blocks do not overlap, so
each block is redrawn up to PLACEMENT_ATTEMPTS times to avoid the blocks placed before it; when no
free spot is found (five blocks of 15 % leave little room) the last draw is kept and overlaps. The
masked share therefore lies between one block (15 %) and n blocks, and is n * 15 % in most cases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PLACEMENT_ATTEMPTS = 20


@dataclass(frozen=True)
class Block:
    top: int
    left: int
    height: int
    width: int

    def overlaps(self, other: "Block") -> bool:
        return (self.top < other.top + other.height and other.top < self.top + self.height
                and self.left < other.left + other.width and other.left < self.left + self.width)


def block_size(shape: tuple[int, int], config, rng: np.random.Generator) -> tuple[int, int]:
    """Height and width of one block of the configured area, aspect ratio log-uniform, clamped to fit."""
    image_height, image_width = shape
    area = config.block_area_fraction * image_height * image_width
    log_ratio = math.log(config.max_aspect_ratio)
    ratio = math.exp(rng.uniform(-log_ratio, log_ratio))  # height / width
    height = min(max(round(math.sqrt(area * ratio)), 1), image_height)
    # the width follows from the area; clamping it (very elongated images) gives up some area
    width = min(max(round(area / height), 1), image_width)
    return height, width


def block_rectangles(shape: tuple[int, int], config, rng: np.random.Generator) -> list[Block]:
    """The blocks of one image; all randomness comes from `rng`."""
    image_height, image_width = shape
    count = int(rng.integers(config.min_blocks, config.max_blocks + 1))
    blocks: list[Block] = []
    for _ in range(count):
        for _attempt in range(PLACEMENT_ATTEMPTS):
            height, width = block_size(shape, config, rng)
            block = Block(int(rng.integers(0, image_height - height + 1)),
                          int(rng.integers(0, image_width - width + 1)), height, width)
            if not any(block.overlaps(placed) for placed in blocks):
                break
        blocks.append(block)
    return blocks


def block_mask(shape: tuple[int, int], config, rng: np.random.Generator) -> np.ndarray:
    """Boolean (H, W) mask, True where the image is hidden."""
    mask = np.zeros(shape, dtype=bool)
    for block in block_rectangles(shape, config, rng):
        mask[block.top:block.top + block.height, block.left:block.left + block.width] = True
    return mask


def block_masks_torch(batch: int, height: int, width: int, config,
                      generator: torch.Generator, device) -> torch.Tensor:
    """(B, 1, H, W) bool masks built on `device`; seeded by `generator` alone.

    The blocks are drawn by the same numpy code as `block_mask` (a few dozen numbers per image), from
    a numpy generator seeded by one draw of `generator`; only the pixel masks are made on the device.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    rng = np.random.default_rng(seed)
    per_image = [block_rectangles((height, width), config, rng) for _ in range(batch)]
    most = max(len(blocks) for blocks in per_image)
    # (B, K, 4) top/left/height/width; missing blocks have zero size and cover nothing
    table = torch.zeros(batch, most, 4, dtype=torch.long)
    for i, blocks in enumerate(per_image):
        for k, b in enumerate(blocks):
            table[i, k] = torch.tensor([b.top, b.left, b.height, b.width])
    table = table.to(device)
    top, left, block_height, block_width = (table[..., j, None] for j in range(4))  # each (B, K, 1)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top) & (rows < top + block_height)  # (B, K, H)
    in_cols = (cols >= left) & (cols < left + block_width)  # (B, K, W)
    covered = (in_rows[..., :, None] & in_cols[..., None, :]).any(dim=1)  # (B, H, W)
    return covered[:, None]
