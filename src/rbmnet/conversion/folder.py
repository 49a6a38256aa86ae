"""`rbmnet_convert folder`: a folder of radiographs and a folder of label maps with matching names.

Images may be png, jpg, bmp or tif, 8- or 16-bit, gray or RGB with equal channels (collapsed to
gray); they are written as PNG keeping their bit depth. Label values are kept as they are (tooth
numbers stay tooth numbers), except that 0/255 masks become 0/1 and lossy JPEG masks are
thresholded at 128, each with a note. Any other label map with a gradient of values is refused, and
values found on a few pixels only are reported (data/label_values.py).
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rbmnet.conversion.writer import (ConversionResult, check_values_fit_numbering, detect_tooth_numbering,
                                      finish_dataset, labels_for, refuse_existing,
                                      staged_dataset_dir, write_case)
from rbmnet.data.label_values import refuse_gradient, stray_value_notes, value_counts
from rbmnet.errors import RbmnetError
from rbmnet.parallel import map_cases
from rbmnet.io.images import image_files_by_case, read_image, read_label
from rbmnet.paths import raw_root

# Files that operating systems and viewers drop into folders; never radiographs.
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class FolderCase:
    case: str
    split: str  # "train", "unlabeled" or "test"
    image_path: Path
    label_path: Path | None = None


@dataclass(frozen=True)
class CaseOutcome:
    case: str
    value_counts: dict[int, int]  # pixels per label value present (empty without a label)
    mask_binarised: str | None  # "0/255" or "jpeg" when the label was a mask converted to 0/1
    rgb_collapsed: bool
    bit_depth: int


def list_image_files(folder: Path) -> dict[str, Path]:
    """Case name -> file of every image in a user's folder (subfolders are skipped)."""
    if not Path(folder).is_dir():
        raise RbmnetError(f"{folder}: not a folder")
    return image_files_by_case(folder, subfolders_allowed=True)


def pair_cases(images_dir: Path, labels_dir: Path, unlabeled_dir: Path | None = None,
               test_dir: Path | None = None, unmatched_to_unlabeled: bool = False) -> list[FolderCase]:
    """Match images with labels by case name and assign every image to its split."""
    images = list_image_files(images_dir)
    labels = list_image_files(labels_dir)
    for case, label_path in labels.items():
        if case not in images:
            raise RbmnetError(f"{label_path}: label without image (no {case}.* in {images_dir})")
    cases = []
    for case, image_path in images.items():
        if case in labels:
            cases.append(FolderCase(case, "train", image_path, labels[case]))
        elif unmatched_to_unlabeled:
            cases.append(FolderCase(case, "unlabeled", image_path))
        else:
            raise RbmnetError(f"{image_path}: image without label (no {case}.* in {labels_dir}); "
                              f"pass --unmatched-to-unlabeled to use such images for pretraining only")
    for split, folder in (("unlabeled", unlabeled_dir), ("test", test_dir)):
        if folder is not None:
            cases += [FolderCase(case, split, path) for case, path in list_image_files(folder).items()]
    _refuse_repeated_case_names(cases)
    return cases


def _refuse_repeated_case_names(cases: list[FolderCase]) -> None:
    # later stages address cases by name across imagesTr, imagesUnlabeled and imagesTs
    first: dict[str, FolderCase] = {}
    for item in cases:
        if item.case in first:
            raise RbmnetError(f"{item.image_path}: case name '{item.case}' is used twice "
                              f"(also {first[item.case].image_path})")
        first[item.case] = item


def binarise_mask(label: np.ndarray, path: Path) -> tuple[np.ndarray, str | None]:
    """0/255 masks -> 0/1; JPEG masks (lossy, values smeared around 0 and 255) -> thresholded at 128."""
    values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))  # np.unique, 4x faster on uint8
    if values.size == 2 and values[0] == 0 and values[1] == 255:
        return (label > 0).astype(np.uint8), "0/255"
    if path.suffix.lower() in JPEG_SUFFIXES and values.size > 2:
        near_extremes = np.mean((label <= 32) | (label >= 223))
        if near_extremes < 0.99:
            raise RbmnetError(f"{path}: JPEG label map with {values.size} distinct values is not a "
                              f"0/255 mask; store label maps losslessly (PNG)")
        return (label >= 128).astype(np.uint8), "jpeg"
    return label, None


def convert_case(item: FolderCase, dataset_dir: Path) -> CaseOutcome:
    """Read, check and write one case (runs in a worker process)."""
    image = read_image(item.image_path)
    with Image.open(item.image_path) as img:  # header only: was it stored as RGB?
        rgb_collapsed = img.mode in ("RGB", "RGBA")
    label = None
    counts: dict[int, int] = {}
    binarised = None
    if item.label_path is not None:
        label = read_label(item.label_path)
        if label.shape != image.shape:
            raise RbmnetError(f"{item.label_path}: label size {label.shape[1]}x{label.shape[0]} differs from "
                              f"image {item.image_path.name} size {image.shape[1]}x{image.shape[0]}")
        label, binarised = binarise_mask(label, item.label_path)
        counts = value_counts(label)
        refuse_gradient(str(item.label_path), counts)
    write_case(dataset_dir, item.split, item.case, image, label)
    return CaseOutcome(item.case, counts, binarised, rgb_collapsed, image.dtype.itemsize * 8)


def convert_folder(name: str, images_dir: Path, labels_dir: Path, unlabeled_dir: Path | None = None,
                   test_dir: Path | None = None, numbering: str = "auto",
                   unmatched_to_unlabeled: bool = False, num_processes: int = 1,
                   overwrite: bool = False, progress: bool = True) -> ConversionResult:
    """Write rbmnet_raw/<name> from image and label folders.

    `numbering`: "auto" (see writer.detect_tooth_numbering), "FDI", "universal" or "none".
    """
    refuse_existing(name, overwrite)
    cases = pair_cases(Path(images_dir), Path(labels_dir), unlabeled_dir and Path(unlabeled_dir),
                       test_dir and Path(test_dir), unmatched_to_unlabeled)
    if not any(item.split == "train" for item in cases):
        raise RbmnetError(f"{images_dir}: no image has a label in {labels_dir}")
    with staged_dataset_dir(name, overwrite) as dataset_dir:
        outcomes = list(map_cases(functools.partial(convert_case, dataset_dir=dataset_dir), cases,
                                  num_processes, f"converting {name}", progress))
        # keyed by label file, so that a value outside the numbering names the file holding it
        counts_by_file = {str(item.label_path): o.value_counts
                          for item, o in zip(cases, outcomes) if item.label_path is not None}
        values_by_file = {path: set(counts) for path, counts in counts_by_file.items()}
        all_values = set().union(*values_by_file.values())
        if numbering == "auto":
            tooth_numbering = detect_tooth_numbering(all_values)
        else:
            tooth_numbering = None if numbering == "none" else numbering
        check_values_fit_numbering(values_by_file, tooth_numbering)
        content = finish_dataset(dataset_dir, name, labels_for(all_values, tooth_numbering), tooth_numbering,
                                 description=f"converted from {images_dir} and {labels_dir}",
                                 source=str(Path(images_dir).absolute()))
    unmatched = sum(1 for item in cases
                    if item.split == "unlabeled" and item.image_path.parent == Path(images_dir))
    notes = stray_value_notes(counts_by_file) + _notes(outcomes, unmatched, tooth_numbering, numbering)
    return ConversionResult(raw_root() / name, content, notes)


def _notes(outcomes: list[CaseOutcome], unmatched: int, numbering: str | None, requested: str) -> list[str]:
    notes = []
    binarised = Counter(o.mask_binarised for o in outcomes if o.mask_binarised)
    if binarised["0/255"]:
        notes.append(f"{binarised['0/255']} label mask(s) stored as 0/255 were converted to 0/1")
    if binarised["jpeg"]:
        notes.append(f"{binarised['jpeg']} JPEG label mask(s) were thresholded at 128 to 0/1 "
                     f"(JPEG is lossy; prefer PNG masks)")
    rgb = sum(o.rgb_collapsed for o in outcomes)
    if rgb:
        notes.append(f"{rgb} RGB image(s) with equal channels were stored as one gray channel")
    sixteen = sum(o.bit_depth == 16 for o in outcomes)
    if sixteen:
        notes.append(f"{sixteen} image(s) are 16-bit and were kept 16-bit")
    if unmatched:
        notes.append(f"{unmatched} image(s) without label went to imagesUnlabeled (pretraining only)")
    if requested == "auto":
        notes.append(f"tooth numbering detected: {numbering or 'none (labels are plain classes)'}")
    return notes
