"""dataset_fingerprint.json: the facts about a raw dataset that the planner derives its choices from.

Per case: shape, dtype and bit depth, stored channels, intensity statistics over all pixels and over
the foreground (label > 0), foreground fraction and the labels present. Aggregate: case counts,
median shape and aspect ratio, and the same statistics over all training images (labeled and
unlabeled; test images are described per case but kept out of the aggregate, as they never train).

Computing it decodes every file through `checks.read_case`, so it is also the content check, with the
label-value rules of data/label_values.py: a label map with a gradient of values is an error, values
on a few pixels only become notes. The result carries the raw data's signature and is reused while
the raw files are unchanged.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from rbmnet.data.checks import DatasetInventory, raw_signature, read_case, summarize_notes
from rbmnet.data.label_values import refuse_gradient, stray_value_notes, value_counts
from rbmnet.parallel import map_cases
from rbmnet.io.atomic import read_json, write_json

FINGERPRINT_VERSION = 2  # 2: label maps checked for gradients and stray values
# Pooled pixel samples for the aggregate percentiles (nnU-Net does the same with 10k voxels per case):
# exact percentiles over every pixel of a large dataset would need all of them in memory.
SAMPLES_PER_CASE = 10_000
PERCENTILES = (0.5, 99.5)


def intensity_stats(values: np.ndarray) -> dict | None:
    if values.size == 0:
        return None
    low, high = np.percentile(values, PERCENTILES)
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "percentile_00_5": float(low), "percentile_99_5": float(high)}


def case_fingerprint(task) -> tuple[dict, dict]:
    """One case -> (its fingerprint entry, pixel sums and samples for the aggregate). Runs in workers."""
    role, case, image_path, label_path, declared, folder = task
    content = read_case(case, image_path, label_path, declared)
    image = content.image
    pixels = image.ravel().astype(np.float64)
    entry = {
        "case": case, "role": role,
        "image": image_path.relative_to(folder).as_posix(),
        "label": label_path.relative_to(folder).as_posix() if label_path else None,
        "shape": list(image.shape), "dtype": str(image.dtype), "bit_depth": image.dtype.itemsize * 8,
        "channels": content.channels, "mode": content.mode,
        "intensity": intensity_stats(pixels),
        "foreground_intensity": None, "foreground_fraction": None, "labels_present": None,
        "notes": content.notes,
    }
    rng = np.random.default_rng(zlib.crc32(case.encode()))  # seeded by name: independent of case order
    extras = {"sum": pixels.sum(), "sum_sq": np.square(pixels).sum(), "count": pixels.size,
              "sample": rng.choice(pixels, min(SAMPLES_PER_CASE, pixels.size)), "fg": None, "label_counts": None}
    if content.label is not None:
        extras["label_counts"] = value_counts(content.label)
        refuse_gradient(str(label_path), extras["label_counts"])
        foreground = content.label.ravel() > 0
        fg_pixels = pixels[foreground]
        entry["foreground_intensity"] = intensity_stats(fg_pixels)
        entry["foreground_fraction"] = float(foreground.mean())
        entry["labels_present"] = sorted(extras["label_counts"])
        extras["fg"] = {"sum": fg_pixels.sum(), "sum_sq": np.square(fg_pixels).sum(), "count": fg_pixels.size,
                        "sample": rng.choice(fg_pixels, min(SAMPLES_PER_CASE, fg_pixels.size))
                        if fg_pixels.size else fg_pixels}
    return entry, extras


def compute_fingerprint(inventory: DatasetInventory, num_processes: int = 2, verbose: bool = True) -> dict:
    declared = inventory.declared_labels
    tasks = [(role, case, image, label, declared, inventory.folder)
             for role, case, image, label in inventory.cases()]
    entries, extras = [], []
    for entry, extra in map_cases(case_fingerprint, tasks, num_processes, "fingerprint", verbose):
        entries.append(entry)
        extras.append(extra)
    training = [i for i, e in enumerate(entries) if e["role"] != "test"]
    label_counts = {str(inventory.folder / e["label"]): x["label_counts"]
                    for e, x in zip(entries, extras) if x["label_counts"] is not None}
    return {
        "format_version": FINGERPRINT_VERSION,
        "dataset_name": inventory.name,
        "raw_signature": raw_signature(inventory),
        "num_labeled": len(inventory.labeled),
        "num_unlabeled": len(inventory.unlabeled),
        "num_test": len(inventory.test),
        "declared_labels": declared,
        "notes": (inventory.notes + summarize_notes((e["case"], e["notes"]) for e in entries)
                  + stray_value_notes(label_counts)),
        "aggregate": _aggregate([entries[i] for i in training], [extras[i] for i in training]),
        "cases": entries,
    }


def _aggregate(entries: list[dict], extras: list[dict]) -> dict:
    shapes = np.array([e["shape"] for e in entries])
    labeled = [e for e in entries if e["labels_present"] is not None]
    fg_extras = [x["fg"] for x in extras if x["fg"] is not None]
    fractions = [e["foreground_fraction"] for e in labeled]
    case_counts: dict[str, int] = {}
    for e in labeled:
        for v in e["labels_present"]:
            case_counts[str(v)] = case_counts.get(str(v), 0) + 1
    return {
        "num_cases": len(entries),
        "median_shape": [float(v) for v in np.median(shapes, axis=0)],
        "median_aspect_ratio": float(np.median(shapes[:, 1] / shapes[:, 0])),  # width / height
        "min_shape": shapes.min(axis=0).tolist(),
        "max_shape": shapes.max(axis=0).tolist(),
        "dtypes": _counts(e["dtype"] for e in entries),
        "bit_depths": _counts(str(e["bit_depth"]) for e in entries),
        "channels": _counts(str(e["channels"]) for e in entries),
        "intensity": _pooled(extras),
        "foreground_intensity": _pooled(fg_extras),
        "foreground_fraction": ({"mean": float(np.mean(fractions)), "median": float(np.median(fractions)),
                                 "min": float(np.min(fractions)), "max": float(np.max(fractions))}
                                if fractions else None),
        "labels_present": sorted(int(v) for v in case_counts),
        "label_case_counts": dict(sorted(case_counts.items(), key=lambda kv: int(kv[0]))),
    }


def _pooled(extras: list[dict]) -> dict | None:
    """Exact mean and std over all pixels (from sums); percentiles from the pooled samples."""
    count = sum(x["count"] for x in extras)
    if count == 0:
        return None
    mean = sum(x["sum"] for x in extras) / count
    variance = max(sum(x["sum_sq"] for x in extras) / count - mean ** 2, 0.0)
    low, high = np.percentile(np.concatenate([x["sample"] for x in extras]), PERCENTILES)
    return {"mean": float(mean), "std": float(np.sqrt(variance)), "percentile_00_5": float(low),
            "percentile_99_5": float(high), "num_pixels": int(count)}


def _counts(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def load_or_compute_fingerprint(inventory: DatasetInventory, path: Path, num_processes: int = 2,
                                verbose: bool = True, save: bool = True) -> tuple[dict, bool]:
    """Reuse the saved fingerprint while the raw files are unchanged; returns (fingerprint, recomputed).
    `save=False` (a dry run) computes without writing."""
    if path.is_file():
        try:
            saved = read_json(path)
        except ValueError:
            saved = None
        if (isinstance(saved, dict) and saved.get("format_version") == FINGERPRINT_VERSION
                and saved.get("raw_signature") == raw_signature(inventory)):
            return saved, False
    fingerprint = compute_fingerprint(inventory, num_processes, verbose)
    if save:
        write_json(path, fingerprint)
    return fingerprint, True
