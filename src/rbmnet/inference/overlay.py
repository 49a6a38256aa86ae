"""A picture to check a prediction at a glance: the radiograph with the teeth tinted and outlined."""
from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

TINT = np.array([0, 200, 255], dtype=np.float32)  # cyan-ish: distinct from the grey radiograph
OUTLINE = np.array([255, 220, 0], dtype=np.uint8)  # yellow contour: visible on bright enamel too
TINT_OPACITY = 0.3


def display_gray(image: np.ndarray, clip_low: float, clip_high: float) -> np.ndarray:
    """8- or 16-bit radiograph -> uint8 for display, stretched between the preprocessing's clip values."""
    if clip_high <= clip_low:
        return np.zeros(image.shape, np.uint8)
    scaled = (image.astype(np.float32) - clip_low) / (clip_high - clip_low)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def overlay(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H,W) uint8 radiograph and (H,W) mask (non-zero = tooth) -> (H,W,3) uint8 RGB picture."""
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    tooth = mask > 0
    rgb[tooth] = (1 - TINT_OPACITY) * rgb[tooth] + TINT_OPACITY * TINT
    picture = np.round(rgb).astype(np.uint8)
    picture[find_boundaries(tooth, mode="inner")] = OUTLINE
    return picture
