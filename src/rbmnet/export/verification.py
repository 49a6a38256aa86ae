"""An export checks itself: ONNX Runtime and PyTorch on the same sample images, a couple of sizes, batch 1 and 2."""
from __future__ import annotations

import numpy as np
import torch

from rbmnet.model.forward import FoldPredictor, ProbabilityNetwork

# Largest absolute difference of any probability allowed between the two. ONNX Runtime's kernels round
# float32 sums differently from torch's: ~5e-6 of the largest logit (measured). The tiny test models
# differ by 1e-6 to 8e-5, the default-width network with random weights (logits in the hundreds) by
# ~4e-4; a wrong graph differs by far more, and 1e-3 can only flip pixels within 1e-3 of a threshold.
TOLERANCE = 1e-3


def sample_shapes(input_size: list[int], size_multiple: int) -> list[tuple[int, int, int, int]]:
    """The plan's input size and a smaller one of another aspect ratio (a graph that kept the
    example's size fails there), each with batch 1 and 2."""
    height, width = input_size
    other = (_multiple(height // 2, size_multiple), _multiple(width // 2, size_multiple) + size_multiple)
    return [(batch, 1, *size) for size in ((height, width), other) for batch in (1, 2)]


def max_difference(model: ProbabilityNetwork, predict: FoldPredictor, shapes, seed: int = 0) -> float:
    """Largest |ONNX - torch| over all probabilities of seeded random images of each shape."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in shapes:
        images = rng.random(shape, dtype=np.float32)  # normalized images lie in [0, 1]
        with torch.inference_mode():
            expected = model(torch.from_numpy(images))
        got = predict(images)
        if tuple(got.shape) != tuple(expected.shape):
            return float("inf")
        difference = (got - expected).abs().nan_to_num(nan=float("inf"))  # NaN would compare as small
        worst = max(worst, float(difference.max()))
    return worst


def _multiple(value: int, multiple: int) -> int:
    """`value` rounded up to a positive multiple of `multiple`."""
    return max(multiple, -(-value // multiple) * multiple)
