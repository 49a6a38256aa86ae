"""Quality flags (`quality.csv` beside the predictions): how much the ensemble's members agree on each
image, the predicted tooth area, and for numbered teeth how many teeth and which numbers were given to
two separate teeth. Columns, definitions and the evidence behind DEFAULT_FLAG_BELOW: docs/quality.md.

Agreement is measured where the ensemble already has every member's probabilities, on the network's
output (thinned, AGREEMENT_PIXELS) and before post-processing, so it costs a few argmaxes per batch and no
extra forward pass.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from skimage import measure

from rbmnet.evaluation.reports import write_csv

QUALITY_CSV = "quality.csv"
DEFAULT_FLAG_BELOW = 0.9  # docs/quality.md: chosen on UFBA-425 fold 0's validation cases
# a component of a tooth number counts as a tooth when it holds at least this share of the number's
# largest component: specks (what post-processing removes) are not second teeth
SIZEABLE_FRACTION = 0.25
# agreement is measured on every second row and column of the network's output: at full size the argmaxes
# over 33 channels (classes head) added ~15-20 % to a CPU forward pass with TTA, thinned at most ~5 %
# (measured, 256 x 256; docs/quality.md); objects as large as teeth keep their Dice
AGREEMENT_PIXELS = (Ellipsis, slice(None, None, 2), slice(None, None, 2))
COLUMNS = ("file", "flagged", "agreement", "fold_agreement", "tta_agreement", "fold_number_agreement",
           "tta_number_agreement", "tooth_pixels", "tooth_fraction", "teeth", "duplicated_numbers")
ALWAYS = ("file", "flagged", "agreement", "fold_agreement", "tta_agreement", "tooth_pixels", "tooth_fraction")


def pairwise_dice(maps: np.ndarray, numbered: bool = False) -> np.ndarray:
    """(M, B, H, W) index maps of M members for B images (0 = background) -> (B,) mean Dice over the
    member pairs; NaN when M < 2. Tooth vs background, or with `numbered` a pixel overlaps only where
    both members give it the same number. Both members empty: 1 (the metrics' empty rule)."""
    maps = np.asarray(maps)
    if len(maps) < 2:
        return np.full(maps.shape[1], np.nan)
    tooth = maps > 0
    sizes = tooth.sum(axis=(2, 3))
    scores = []
    for a, b in itertools.combinations(range(len(maps)), 2):
        overlap = tooth[a] & tooth[b]
        if numbered:
            overlap &= maps[a] == maps[b]
        total = sizes[a] + sizes[b]
        scores.append(np.where(total > 0, 2 * overlap.sum(axis=(1, 2)) / np.maximum(total, 1), 1.0))
    return np.mean(scores, axis=0)


def member_agreement(fold_maps: list[np.ndarray], pass_maps: list[list[np.ndarray]], numbered: bool) -> list[dict]:
    """Per image of a batch: the folds' agreement (each fold's TTA-averaged map) and the mean over folds of
    its TTA passes' agreement; NaN where there is nothing to compare. Maps are (B, H, W) index maps."""
    kinds = [("", False), ("number_", True)] if numbered else [("", False)]
    columns = {}
    for prefix, by_number in kinds:
        columns[f"fold_{prefix}agreement"] = pairwise_dice(np.stack(fold_maps), by_number)
        if min(len(passes) for passes in pass_maps) < 2:
            columns[f"tta_{prefix}agreement"] = np.full(len(fold_maps[0]), np.nan)
        else:
            columns[f"tta_{prefix}agreement"] = np.mean([pairwise_dice(np.stack(p), by_number) for p in pass_maps],
                                                        axis=0)
    rows = [{name: float(values[i]) for name, values in columns.items()} for i in range(len(fold_maps[0]))]
    for row in rows:
        row["agreement"] = flag_score(row)
    return rows


def flag_score(row: dict) -> float:
    """The score --flag-below compares: the folds' agreement when there are several folds, else the TTA
    passes' (docs/quality.md says why), NaN when neither exists."""
    fold = row.get("fold_agreement", math.nan)
    return fold if math.isfinite(fold) else row.get("tta_agreement", math.nan)


def duplicated_numbers(label_map: np.ndarray, sizeable_fraction: float = SIZEABLE_FRACTION) -> list[int]:
    """Tooth numbers present as two or more sizeable 8-connected components (see SIZEABLE_FRACTION)."""
    label_map = np.asarray(label_map)
    # one labelling pass for every number: neighbours join only when they carry the same number
    components = measure.label(label_map, background=0, connectivity=label_map.ndim)
    sizes = np.bincount(components.ravel())[1:]
    numbers = np.zeros(len(sizes) + 1, dtype=label_map.dtype)
    numbers[components] = label_map
    frame = pd.DataFrame({"number": numbers[1:], "size": sizes})
    largest = frame.groupby("number")["size"].transform("max")
    counts = frame.loc[frame["size"] >= sizeable_fraction * largest, "number"].value_counts()
    return sorted(int(number) for number in counts.index[counts > 1])


def describe_prediction(decoded: np.ndarray, saved: np.ndarray, numbered: bool) -> dict:
    """Area of the saved map; for numbered maps its tooth count, and the duplicated numbers of the map
    before post-processing (which keeps one component per number and so would hide them)."""
    tooth = np.asarray(saved) > 0
    row = {"tooth_pixels": int(tooth.sum()), "tooth_fraction": float(tooth.mean())}
    if numbered:
        row["teeth"] = int(len(np.unique(saved[tooth])))
        row["duplicated_numbers"] = " ".join(str(n) for n in duplicated_numbers(decoded))
    return row


def write_quality(output_dir: Path, rows: list[dict], flag_below: float,
                  kept_files: set[str] = frozenset()) -> list[dict]:
    """quality.csv from the new rows, plus an earlier quality.csv's rows for `kept_files` (cases a resumed
    run skipped); `flagged` is (re)computed for all. Returns the rows written, sorted by file."""
    path = Path(output_dir) / QUALITY_CSV
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys([*ALWAYS, *(k for row in rows for k in row)])))
    earlier = _earlier_rows(path, kept_files - set(frame["file"])) if kept_files else None
    if earlier is not None and len(earlier):
        frame = pd.concat([frame, earlier], ignore_index=True)
    frame = frame.sort_values("file", ignore_index=True)
    defined = frame["agreement"].notna() & (flag_below > 0)
    frame["flagged"] = (frame["agreement"] < flag_below).where(defined, None).astype(object)
    columns = [c for c in COLUMNS if c in frame.columns]
    written = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    write_csv(path, written, columns)
    return written


def _earlier_rows(path: Path, files: set[str]) -> pd.DataFrame | None:
    """The rows of an earlier quality.csv for `files`; None when there is none or it cannot be read
    (a derived file: a damaged one only costs the skipped images their rows)."""
    try:
        earlier = pd.read_csv(path, dtype={"duplicated_numbers": str})
    except (OSError, ValueError, UnicodeDecodeError):  # pandas' parser errors are ValueErrors
        return None
    if not {"file", "agreement"} <= set(earlier.columns):
        return None
    return earlier[earlier["file"].isin(files)]


def flag_message(rows: list[dict], flag_below: float, path: Path) -> str:
    """One line for the terminal: how many images were flagged, or why none could be."""
    scored = [row for row in rows if row["agreement"] is not None]
    if rows and not scored:
        return (f"note: no agreement to measure with one fold and no mirrored pass: {path} leaves it empty "
                f"and flags nothing (ensemble several folds, or add --tta)")
    if flag_below <= 0:
        return f"quality: {path} (flagging off)"
    flagged = sum(bool(row["flagged"]) for row in scored)
    return f"{flagged} of {len(scored)} images flagged (agreement below {flag_below:g}); see {path}"
