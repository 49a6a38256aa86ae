"""Probabilities to the mask files users get: binary masks are 0/255 PNGs (visible in any viewer)."""
from __future__ import annotations

import numpy as np

MASK_FOREGROUND = 255


def probabilities_to_mask(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(1,H,W) or (H,W) tooth probabilities -> uint8 mask with 0 background and 255 tooth."""
    probabilities = probabilities[0] if probabilities.ndim == 3 else probabilities
    return np.where(probabilities > threshold, MASK_FOREGROUND, 0).astype(np.uint8)
