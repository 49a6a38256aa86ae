"""Fine-grained masking: a random share of the cells of a grid whose cell is the network's total
downsampling (SparK, Tian et al. 2023; Wald et al. 2025 for CNN U-Nets): every cell is either seen
or hidden at the network's coarsest resolution, so hidden content cannot leak through a partly
masked deepest feature, and many small holes make the task local and dense instead of a few large
ones (Random Block Masking). Exactly round(mask_ratio x cells) cells are hidden per image.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def grid_mask(shape: tuple[int, int], config, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (H, W) mask, True where hidden; `config.mask_ratio` of the cells (at least one, never all)."""
    height, width = shape
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    cells = rows * cols
    hidden = min(max(1, round(config.mask_ratio * cells)), max(1, cells - 1))
    grid = np.zeros(cells, dtype=bool)
    grid[rng.permutation(cells)[:hidden]] = True
    return np.repeat(np.repeat(grid.reshape(rows, cols), cell, axis=0), cell, axis=1)[:height, :width]


def grid_masks_torch(batch: int, height: int, width: int, config, cell: int, generator: torch.Generator,
                     device) -> torch.Tensor:
    """(B, 1, H, W) masks on `device`, seeded by one draw of `generator` (as random_blocks does)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    rng = np.random.default_rng(seed)
    masks = np.stack([grid_mask((height, width), config, cell, rng) for _ in range(batch)])
    return torch.from_numpy(masks[:, None]).to(device)
