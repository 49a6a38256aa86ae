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


def numbered_overlay(gray: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """(H,W) uint8 radiograph and (H,W) tooth-number map -> RGB picture with each tooth in its own colour,
    outlined, and its number written at its centre (so a wrong or swapped number is seen at a glance)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont
    from scipy import ndimage

    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    numbers = [int(n) for n in np.unique(label_map) if n != 0]
    palette = colormaps["tab20"]
    for number in numbers:
        tooth = label_map == number
        colour = np.array(palette(number % 20)[:3], dtype=np.float32) * 255
        rgb[tooth] = (1 - 2 * TINT_OPACITY) * rgb[tooth] + 2 * TINT_OPACITY * colour
    picture = np.round(rgb).astype(np.uint8)
    picture[find_boundaries(label_map, mode="inner") & (label_map > 0)] = OUTLINE
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    size = max(8, min(label_map.shape) // 40)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    centres = ndimage.center_of_mass(np.ones_like(label_map), label_map, numbers) if numbers else []
    for number, (row, col) in zip(numbers, centres):
        draw.text((col, row), str(number), fill=(255, 255, 255), font=font, anchor="mm",
                  stroke_width=max(1, size // 8), stroke_fill=(0, 0, 0))
    return np.asarray(image)
