"""Writing one raw dataset folder (see docs/architecture.md), shared by every converter.

A converter writes into a hidden staging folder beside the target and the finished folder is
renamed into place at the end, so an interrupted conversion never leaves a half dataset that later
stages would take for a whole one. The staging folders are named after their process, so that the
next conversion of the same dataset deletes those a killed one left (io/leftovers.py).
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from rbmnet.data.dataset_json import (FDI_TEETH, UNIVERSAL_TEETH, make_dataset_json, tooth_labels,
                                      write_dataset_json)
from rbmnet.errors import RbmnetError
from rbmnet.io.images import write_png
from rbmnet.io.leftovers import owned_name, remove_leftovers
from rbmnet.layout import IMAGES_TR, IMAGES_TS, IMAGES_UNLABELED, LABELS_TR, LABELS_TS
from rbmnet.paths import raw_root

# split -> (image folder, label folder or None)
SPLIT_FOLDERS = {
    "train": (IMAGES_TR, LABELS_TR),
    "unlabeled": (IMAGES_UNLABELED, None),
    "test": (IMAGES_TS, LABELS_TS),  # labelsTs only where the source has test labels
}
NUMBERING_CHOICES = ("FDI", "universal", "none")
STAGING_KINDS = ("partial", "old")  # .<name>.partial-<owner>: being written; .<name>.old-<owner>: being replaced


@dataclass
class ConversionResult:
    dataset_dir: Path
    dataset_json: dict
    notes: list[str] = field(default_factory=list)  # things the user should know, one line each


def check_dataset_name(name: str) -> str:
    if not name or name.startswith(".") or any(ch in name for ch in "/\\:") or name.strip() != name:
        raise RbmnetError(f"dataset name '{name}' is not a plain folder name")
    return name


def refuse_existing(name: str, overwrite: bool) -> Path:
    """Target folder of dataset `name`; an existing one is an error unless `overwrite`."""
    target = raw_root() / check_dataset_name(name)
    if target.exists() and not overwrite:
        raise RbmnetError(f"{target}: dataset exists already; pass --overwrite to replace it")
    return target


@contextlib.contextmanager
def staged_dataset_dir(name: str, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces rbmnet_raw/<name>, on failure it is removed."""
    target = refuse_existing(name, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    for kind in STAGING_KINDS:  # left by a killed conversion of this dataset; a running one's are kept
        remove_leftovers(target.parent, f".{name}.{kind}-")
    staging = _fresh_hidden_dir(target.parent, f".{name}.partial-")
    try:
        yield staging
        refuse_existing(name, overwrite)  # another process may have written it meanwhile
        if target.exists():
            old = _fresh_hidden_dir(target.parent, f".{name}.old-")
            target.rename(old / name)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _fresh_hidden_dir(parent: Path, prefix: str) -> Path:
    # not tempfile.mkdtemp: its 0700 mode would stay on the dataset folder after the rename
    path = parent / owned_name(prefix)
    path.mkdir()
    return path


def write_case(dataset_dir: Path, split: str, case: str, image: np.ndarray,
               label: np.ndarray | None = None) -> None:
    image_folder, label_folder = SPLIT_FOLDERS[split]
    # fast zlib level: converting is dominated by compressing noisy radiographs; files grow ~15 %
    write_png(dataset_dir / image_folder / f"{case}.png", image, compress_level=1)
    if label is not None:
        if label_folder is None:
            raise ValueError(f"split {split} has no labels")
        write_png(dataset_dir / label_folder / f"{case}.png", label.astype(np.uint8))


def detect_tooth_numbering(values: Iterable[int]) -> str | None:
    """Guess the numbering from the nonzero label values of the whole dataset.

    Rule: all values FDI tooth numbers (11-18, 21-28, 31-38, 41-48) -> "FDI"; else all within
    1..32 with at least 3 distinct values -> "universal"; else None. A binary mask (only 1) or a
    two-class map is therefore never "universal". FDI wins where both fit (only values 11-18 and
    21-28, i.e. no lower FDI teeth and no universal 1-10); pass the numbering explicitly then.
    """
    present = {int(v) for v in values} - {0}
    if present and present <= set(FDI_TEETH):
        return "FDI"
    if len(present) >= 3 and present <= set(UNIVERSAL_TEETH):
        return "universal"
    return None


def labels_for(values: Iterable[int], numbering: str | None) -> dict[str, int]:
    """dataset.json `labels`: the whole tooth set of a numbering, else one entry per value present."""
    present = sorted({int(v) for v in values} - {0})
    if numbering is not None:
        return tooth_labels(numbering)
    if present in ([], [1]):
        return {"background": 0, "tooth": 1}
    return {"background": 0, **{f"label_{v}": v for v in present}}


def check_values_fit_numbering(values_by_source: dict[str, set[int]], numbering: str | None) -> None:
    """A label value outside the declared numbering is an error naming the first file (or case) holding it."""
    if numbering is None:
        return
    allowed = set(tooth_labels(numbering).values())
    for source, values in sorted(values_by_source.items()):
        stray = sorted(set(values) - allowed)
        if stray:
            raise RbmnetError(f"{source}: label value(s) {stray} are not {numbering} tooth numbers "
                              f"(choose --numbering none to keep them as plain classes)")


def count_cases(dataset_dir: Path, split: str) -> int:
    folder = dataset_dir / SPLIT_FOLDERS[split][0]
    return len(list(folder.glob("*.png"))) if folder.is_dir() else 0


def finish_dataset(dataset_dir: Path, name: str, labels: dict[str, int], numbering: str | None,
                   description: str = "", source: str = "") -> dict:
    """Write dataset.json with the case counts found on disk; returns its content."""
    for split in ("train", "unlabeled", "test"):
        (dataset_dir / SPLIT_FOLDERS[split][0]).mkdir(exist_ok=True)
    (dataset_dir / LABELS_TR).mkdir(exist_ok=True)
    content = make_dataset_json(
        name, labels, num_training=count_cases(dataset_dir, "train"),
        num_unlabeled=count_cases(dataset_dir, "unlabeled"), num_test=count_cases(dataset_dir, "test"),
        tooth_numbering=numbering, description=description, source=source)
    write_dataset_json(dataset_dir, content)
    return content


