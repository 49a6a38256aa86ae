"""Dataset checks: everything a user can get wrong in rbmnet_raw/<Name>/, found before anything is planned.

Two levels, so that the expensive one runs once:
- `inventory_dataset` looks at names only (dataset.json, folders, pairing, duplicates, stray files);
- `read_case` decodes one case and checks its content (readable, sizes match, label values declared).
  The fingerprint calls it for every case, so checking and fingerprinting decode each file once.
`check_dataset` does both, for callers that only want to validate.

Every problem is a one-line RbmnetError naming the case or file. Oddities with one obvious reading
(0/255 masks, gray images stored as RGB) are fixed and reported as notes instead.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from rbmnet.data.dataset_json import load_dataset_json
from rbmnet.errors import RbmnetError
from rbmnet.io.images import image_files_by_case, read_image, read_label
from rbmnet.layout import DATASET_JSON, IMAGES_TR, IMAGES_TS, IMAGES_UNLABELED, LABELS_TR
from rbmnet.parallel import map_cases
from rbmnet.paths import raw_root, resolve_dataset_name

IMAGE_FOLDERS = {"labeled": IMAGES_TR, "unlabeled": IMAGES_UNLABELED, "test": IMAGES_TS}
LABEL_FOLDER = LABELS_TR
# Files that operating systems drop into folders; never data.


@dataclass
class DatasetInventory:
    name: str
    folder: Path
    dataset_json: dict
    labeled: list[tuple[str, Path, Path]]  # (case, image, label)
    unlabeled: list[tuple[str, Path]]
    test: list[tuple[str, Path]]
    notes: list[str] = field(default_factory=list)  # non-fatal findings, one line each

    @property
    def declared_labels(self) -> list[int]:
        return sorted(set(self.dataset_json["labels"].values()))

    def cases(self) -> list[tuple[str, str, Path, Path | None]]:
        """Every case as (role, case, image, label or None): labeled, then unlabeled, then test."""
        return ([("labeled", c, i, l) for c, i, l in self.labeled]
                + [("unlabeled", c, i, None) for c, i in self.unlabeled]
                + [("test", c, i, None) for c, i in self.test])


@dataclass
class CaseContent:
    """One decoded, checked case: what preprocessing and the fingerprint need."""
    image: np.ndarray
    label: np.ndarray | None
    channels: int  # channels stored in the file (3 for gray saved as RGB)
    mode: str  # PIL mode of the image file
    notes: list[tuple[str, str]]  # (kind, text): kinds let many identical notes be summarised


def inventory_dataset(name: str | None) -> DatasetInventory:
    """Find every case of a raw dataset and check names and pairing (no pixels are read)."""
    name = resolve_dataset_name(name)
    folder = raw_root() / name
    content = load_dataset_json(folder)
    found = {role: _case_files(folder / sub) for role, sub in IMAGE_FOLDERS.items()}
    labels = _case_files(folder / LABEL_FOLDER)
    _check_unique_across_folders(found)
    without_label = sorted(set(found["labeled"]) - set(labels))
    if without_label:
        case = without_label[0]
        raise RbmnetError(f"case '{case}': image {IMAGE_FOLDERS['labeled']}/{found['labeled'][case].name} has no "
                          f"label in {LABEL_FOLDER}/{_more(without_label)} (unlabeled images belong in "
                          f"{IMAGE_FOLDERS['unlabeled']}/)")
    without_image = sorted(set(labels) - set(found["labeled"]))
    if without_image:
        case = without_image[0]
        raise RbmnetError(f"case '{case}': label {LABEL_FOLDER}/{labels[case].name} has no image in "
                          f"{IMAGE_FOLDERS['labeled']}/{_more(without_image)}")
    if not found["labeled"] and not found["unlabeled"]:
        raise RbmnetError(f"{folder}: empty dataset, no images in {IMAGE_FOLDERS['labeled']}/ or "
                          f"{IMAGE_FOLDERS['unlabeled']}/")
    inventory = DatasetInventory(
        name=name, folder=folder, dataset_json=content,
        labeled=[(c, p, labels[c]) for c, p in sorted(found["labeled"].items())],
        unlabeled=sorted(found["unlabeled"].items()),
        test=sorted(found["test"].items()))
    for key, role in (("numTraining", "labeled"), ("numUnlabeled", "unlabeled")):
        if content.get(key) != len(found[role]):
            inventory.notes.append(f"dataset.json says {key}={content.get(key)} but "
                                   f"{IMAGE_FOLDERS[role]}/ holds {len(found[role])} images; using the files")
    return inventory


def _more(cases: list[str]) -> str:
    return f" (and {len(cases) - 1} more)" if len(cases) > 1 else ""


def _case_files(folder: Path) -> dict[str, Path]:
    return image_files_by_case(folder, subfolders_allowed=False) if folder.is_dir() else {}


def _check_unique_across_folders(found: dict[str, dict[str, Path]]) -> None:
    seen: dict[str, str] = {}
    for role, files in found.items():
        for case in files:
            if case in seen:
                raise RbmnetError(f"case '{case}' is in both {IMAGE_FOLDERS[seen[case]]}/ and "
                                  f"{IMAGE_FOLDERS[role]}/; case names must be unique across folders")
            seen[case] = role


def read_case(case: str, image_path: Path, label_path: Path | None, declared_labels: list[int]) -> CaseContent:
    """Decode one case and check it; raises RbmnetError naming the case for any problem."""
    notes: list[tuple[str, str]] = []
    mode, channels = _file_mode(image_path)
    image = read_image(image_path)  # collapses gray RGB, rejects colour and unreadable files
    if channels >= 3:
        notes.append(("rgb_gray_image", "images stored as RGB with equal channels were read as grayscale"))
    label = None
    if label_path is not None:
        label = read_label(label_path)
        if _file_mode(label_path)[1] >= 3:
            notes.append(("rgb_gray_label", "label maps stored as RGB with equal channels were read as gray"))
        if label.shape != image.shape:
            raise RbmnetError(
                f"case '{case}': image {image_path.name} is {_size(image.shape)} but label {label_path.name} "
                f"is {_size(label.shape)} (height x width); they must be the same size")
        label = _check_label_values(case, label_path, label, declared_labels, notes)
    return CaseContent(image=image, label=label, channels=channels, mode=mode, notes=notes)


def _check_label_values(case: str, path: Path, label: np.ndarray, declared: list[int],
                        notes: list[tuple[str, str]]) -> np.ndarray:
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))  # uint8: faster than np.unique
    undeclared = sorted(set(present.tolist()) - set(declared))
    if not undeclared:
        return label
    foreground = [v for v in declared if v != 0]
    # A 0/255 mask of a dataset with one foreground label has one obvious meaning.
    if set(present.tolist()) <= {0, 255} and len(foreground) == 1:
        notes.append(("mask_0_255", f"0/255 masks were read as background/label {foreground[0]}"))
        return np.where(label == 255, foreground[0], 0).astype(np.uint8)
    raise RbmnetError(f"case '{case}': label values {_compact(undeclared)} in {path.name} are not declared in "
                      f"dataset.json 'labels' (declared: {_compact(declared)})")


def _file_mode(path: Path) -> tuple[str, int]:
    try:
        with Image.open(path) as img:  # header only: cheap
            return img.mode, len(img.getbands())
    except Exception:  # read_image reports unreadable files with the proper message
        return "unknown", 1


def _size(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def _compact(values: Iterable[int]) -> str:
    """[0, 11, 12, 13, 21] -> '0, 11-13, 21': label lists stay one short line."""
    values = sorted(values)
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def summarize_notes(case_notes: Iterable[tuple[str, list[tuple[str, str]]]]) -> list[str]:
    """[(case, [(kind, text)])] -> one line per kind of note, with a count and an example case."""
    grouped: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    for case, notes in case_notes:
        for kind, text in notes:
            grouped.setdefault(kind, []).append(case)
            texts[kind] = text
    return [f"{texts[k]}: {len(cases)} case(s), e.g. '{cases[0]}'" for k, cases in grouped.items()]


# Public API (module docstring): validate a dataset without planning; no rbmnet command calls it, tests do.
def check_dataset(name: str | None, num_processes: int = 1, verbose: bool = False) -> DatasetInventory:
    """All checks: names and pairing, then every file decoded and checked. Returns the inventory."""
    inventory = inventory_dataset(name)
    tasks = [(case, image, label, inventory.declared_labels) for _, case, image, label in inventory.cases()]
    notes = map_cases(_check_one, tasks, num_processes, "checking", verbose)
    inventory.notes.extend(summarize_notes(zip((t[0] for t in tasks), notes)))
    return inventory


def _check_one(task) -> list[tuple[str, str]]:
    return read_case(*task).notes


def raw_signature(inventory: DatasetInventory) -> str:
    """Hash of dataset.json and every case file's path, size and mtime: changes when the raw data changes."""
    digest = hashlib.sha256((inventory.folder / DATASET_JSON).read_bytes())
    for role, case, image, label in inventory.cases():
        for path in (image, label):
            if path is not None:
                stat = path.stat()
                digest.update(f"{role}|{path.relative_to(inventory.folder).as_posix()}|"
                              f"{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
