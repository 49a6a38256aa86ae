"""Per-image preprocessing shared by training-data preparation and prediction, so both see the same input."""
from __future__ import annotations

import numpy as np
from skimage.transform import resize

from rbmnet.planning.plan import NORMALIZATION_SCHEMES, NormalizationConfig


def normalize(image: np.ndarray, config: NormalizationConfig) -> tuple[np.ndarray, tuple[float, float]]:
    """Clip to the image's own percentiles and scale to [0, 1]; returns the image and the clip values."""
    if config.scheme not in NORMALIZATION_SCHEMES:
        raise ValueError(f"unknown normalization scheme '{config.scheme}'")
    image = image.astype(np.float32)
    low, high = np.percentile(image, [config.lower_percentile, config.upper_percentile])
    if high <= low:  # flat image: nothing to stretch
        return np.zeros_like(image), (float(low), float(high))
    return np.clip((image - low) / (high - low), 0.0, 1.0), (float(low), float(high))


def resize_image(image: np.ndarray, size: tuple[int, int] | list[int]) -> np.ndarray:
    """Linear resampling with anti-aliasing when shrinking; float32 out."""
    size = tuple(int(s) for s in size)
    if image.shape == size:
        return image.astype(np.float32, copy=False)
    shrinking = any(new < old for new, old in zip(size, image.shape))
    return resize(image, size, order=1, mode="edge", anti_aliasing=shrinking, preserve_range=True).astype(np.float32)


def resize_label(label: np.ndarray, size: tuple[int, int] | list[int]) -> np.ndarray:
    """Nearest-neighbour resampling keeps label values (tooth numbers) intact."""
    size = tuple(int(s) for s in size)
    if label.shape == size:
        return label
    return resize(label, size, order=0, mode="edge", anti_aliasing=False, preserve_range=True).astype(label.dtype)


def preprocess_image(image: np.ndarray, input_size, config: NormalizationConfig) -> tuple[np.ndarray, dict]:
    """Raw decoded radiograph -> normalized float32 array of the plan's input size, plus what maps it back."""
    normalized, (low, high) = normalize(image, config)
    properties = {"original_shape": list(image.shape), "original_dtype": str(image.dtype),
                  "clip_low": low, "clip_high": high}
    return resize_image(normalized, input_size), properties


def restore_probabilities(probabilities: np.ndarray, original_shape) -> np.ndarray:
    """Resize (C, H, W) or (H, W) probabilities back to the original image size (linear)."""
    original_shape = tuple(int(s) for s in original_shape)
    if probabilities.ndim == 2:
        return resize_image(probabilities, original_shape)
    return np.stack([resize_image(p, original_shape) for p in probabilities])
