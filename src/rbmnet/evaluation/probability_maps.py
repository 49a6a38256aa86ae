"""Predictions saved as probabilities (rbmnet_predict --save-probabilities, or another program's maps),
binarised at a threshold so that rbmnet_evaluate --threshold can score them as tooth masks.

A file's values are read as probabilities by its pixel type: 8-bit values / 255, 16-bit values
/ 65535, floating-point values (TIFF) as they are, which must lie in [0, 1]. A pixel is tooth when its
probability is above the threshold, as prediction decides (tasks/binary.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rbmnet.errors import RbmnetError
from rbmnet.io.images import read_image


def threshold_rule(threshold: float) -> str:
    """The rule in words, for reports."""
    return f"probability > {threshold} (8-bit value / 255, 16-bit value / 65535, floating point as stored)"


def binarise_probability_map(path: str | Path, threshold: float) -> np.ndarray:
    """uint8 mask (1 tooth, 0 background) of the file's probabilities above `threshold`."""
    return (read_probability_map(path) > threshold).astype(np.uint8)


def read_probability_map(path: str | Path) -> np.ndarray:
    """float32 probabilities in [0, 1]; a 0/1 mask or floating-point values outside [0, 1] are errors."""
    path = Path(path)
    floating = _floating_point_pixels(path)
    if floating is not None:
        if not np.all(np.isfinite(floating)) or floating.min() < 0 or floating.max() > 1:
            raise RbmnetError(f"{path}: floating-point values outside 0..1 (min {np.nanmin(floating):.3g}, max "
                              f"{np.nanmax(floating):.3g}); --threshold reads them as probabilities")
        return floating
    array = read_image(path)
    if array.max() == 1:  # read as probabilities, 1 would be 1/255: every tooth pixel lost
        raise RbmnetError(f"{path}: holds only 0 and 1, a mask rather than a probability map; evaluate it "
                          f"without --threshold")
    return array.astype(np.float32) / np.iinfo(array.dtype).max


def _floating_point_pixels(path: Path) -> np.ndarray | None:
    # read_image turns floating-point pixels into integers (losing every probability below 1), so they
    # are read here; anything else, unreadable files included, goes through read_image
    try:
        with Image.open(path) as img:
            if img.mode != "F":
                return None
            img.load()
            return np.asarray(img, dtype=np.float32)
    except (OSError, SyntaxError, ValueError):
        return None
