"""Sobel edge magnitude, the second input channel of the network (see docs/architecture.md).

In pretext training the edges come from the UNMASKED radiograph: they show the network what lies
behind the blocks it must reconstruct. Segmentation and prediction use the edges of the image itself.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_Y = ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0))

# Largest magnitude a [0, 1] image can produce. The magnitude is convex in the nine pixels, so its
# maximum over [0, 1]^9 lies at a binary pattern; the best one (a full right column of ones plus the
# bottom-middle pixel) gives gx = 4, gy = 2, hence sqrt(4^2 + 2^2). Checked by brute force in the tests.
MAX_MAGNITUDE = math.sqrt(20.0)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 1, H, W) gradient magnitude, in [0, 1] for an image in [0, 1].

    Replicate padding: the border of a radiograph is not an edge.
    """
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"sobel_magnitude takes (B, 1, H, W), got {tuple(image.shape)}")
    kernels = torch.tensor((SOBEL_X, SOBEL_Y), dtype=image.dtype, device=image.device)[:, None]
    gradients = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernels)  # (B, 2, H, W)
    return torch.linalg.vector_norm(gradients, dim=1, keepdim=True) / MAX_MAGNITUDE


# The channels `network_input` makes: what every network is built for (networks/build_network's input_channels).
NETWORK_INPUT_CHANNELS = 2


def network_input(image: torch.Tensor, edges_of: torch.Tensor | None = None) -> torch.Tensor:
    """(B, NETWORK_INPUT_CHANNELS = 2, H, W): the image and the Sobel magnitude of `edges_of` (default: the image)."""
    source = image if edges_of is None else edges_of
    return torch.cat([image, sobel_magnitude(source)], dim=1)
