"""Tiny raw datasets written with numpy + PIL, for tests of checks, planning and preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rbmnet.data.dataset_json import make_dataset_json, tooth_labels, write_dataset_json

TOOTH_VALUES = (11, 12, 21)  # a few FDI numbers


def tooth_label(shape, index: int) -> np.ndarray:
    """A label map with three rectangular 'teeth' whose position depends on the case index."""
    height, width = shape
    label = np.zeros(shape, np.uint8)
    for k, value in enumerate(TOOTH_VALUES):
        top = height // 4 + (index % 3)
        left = width // 8 + k * width // 4
        label[top:top + height // 2, left:left + width // 8] = value
    return label


def radiograph(shape, index: int, label: np.ndarray | None = None, bits: int = 8) -> np.ndarray:
    rng = np.random.default_rng(index)
    image = rng.normal(60, 15, shape)
    if label is not None:
        image[label > 0] += 120  # teeth are bright
    image = np.clip(image, 0, 255)
    if bits == 16:
        return (image * 257).astype(np.uint16)
    return image.astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_raw_dataset(raw_root: Path, name: str = "Tiny", n_labeled: int = 6, n_unlabeled: int = 2,
                     n_test: int = 1, shape=(32, 64), bits: int = 8) -> Path:
    """rbmnet_raw/<name>/ with FDI labels; cases are named lab000, unl000, tst000."""
    folder = raw_root / name
    for i in range(n_labeled):
        label = tooth_label(shape, i)
        write_png(folder / "imagesTr" / f"lab{i:03d}.png", radiograph(shape, i, label, bits))
        write_png(folder / "labelsTr" / f"lab{i:03d}.png", label)
    for i in range(n_unlabeled):
        write_png(folder / "imagesUnlabeled" / f"unl{i:03d}.png", radiograph(shape, 100 + i, bits=bits))
    for i in range(n_test):
        write_png(folder / "imagesTs" / f"tst{i:03d}.png", radiograph(shape, 200 + i, bits=bits))
    write_dataset_json(folder, make_dataset_json(name, tooth_labels("FDI"), n_labeled, n_unlabeled, n_test,
                                                 tooth_numbering="FDI"))
    return folder
