"""Label noise for the robustness study: wrong ground truth on a seeded share of the training masks.

The paper claims robustness to imperfect annotations without measuring it. `rbmnet_train seg
--label-noise P` (and `rbmnet_benchmark --label-noise`) corrupt a share P of the TRAINING label maps
with the mistakes annotators make, tooth by tooth, on the tooth-numbered map BEFORE binarisation:
    erode   a tooth shrinks by a few pixels (outline drawn inside the tooth)
    dilate  a tooth grows by a few pixels into the background (outline drawn outside)
    drop    a tooth is missing from the annotation (set to background)
    merge   a tooth is labelled as its nearest neighbour and the gap between them filled
Validation reads the raw label files, so evaluation stays on clean masks.

Decided once per case, seeded by (seed, case name): the same cases carry the same wrong masks in every
epoch, in every worker and after a resume. Each training case gets a seeded key; the round(P * N) of
the N training cases with the smallest keys are corrupted, so the share is exactly P and the cases
corrupted at a lower P are among those at a higher P. How a case is corrupted depends only on
(seed, case name) too, so a case corrupted in two runs carries the same wrong mask in both.

Label maps with a single foreground value (binary masks) are corrupted per connected component.
"""
from __future__ import annotations

import functools
import zlib

import numpy as np
from scipy import ndimage
from skimage.morphology import disk

from rbmnet.errors import RbmnetError

OPERATIONS = ("erode", "dilate", "drop", "merge")
TOOTH_SHARE = 0.3  # each tooth of a corrupted case is hit with this probability (at least one tooth)
RADIUS_RANGE = (0.2, 0.5)  # erode/dilate radius, as a share of the tooth's half-width (inscribed radius)
_CASE_KEY_STREAM = 41  # keeps the which-case draw apart from the how-to-corrupt draw
_CORRUPTION_STREAM = 42


def check_share(share: float) -> float:
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 <= share <= 1.0:
        raise RbmnetError(f"label noise must be a share of the training cases in [0, 1], got {share}")
    return float(share)


def _case_number(case: str) -> int:
    return zlib.crc32(case.encode("utf-8"))  # stable across processes (hash() is salted per process)


def case_rng(seed: int, case: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _case_number(case), stream])


def corrupted_cases(case_names: list[str], share: float, seed: int) -> list[str]:
    """The round(share * N) cases, of the training cases, whose masks are corrupted (sorted)."""
    share = check_share(share)
    wanted = round(share * len(case_names))
    keyed = sorted((case_rng(seed, name, _CASE_KEY_STREAM).random(), name) for name in set(case_names))
    return sorted(name for _, name in keyed[:wanted])


# --- the four per-tooth operations; `label` is never modified, a new map is returned -------------
# Each works in a window around the tooth: whole-image distance transforms would cost seconds per case.

def _window(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of `mask` grown by `margin` pixels, clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(max(0, rows[0] - margin), rows[-1] + margin + 1),
            slice(max(0, cols[0] - margin), cols[-1] + margin + 1))


def inscribed_radius(label: np.ndarray, tooth: int) -> float:
    """Half the tooth's thickness: the largest distance from a tooth pixel to the tooth's outline."""
    mask = label == tooth
    return float(ndimage.distance_transform_edt(np.pad(mask[_window(mask, 0)], 1)).max())


def erode_tooth(label: np.ndarray, tooth: int, radius: int) -> np.ndarray:
    mask = label == tooth
    window = _window(mask, radius + 1)
    kept = ndimage.binary_erosion(mask[window], structure=disk(radius), border_value=1)  # not from the frame
    out = label.copy()
    out[window][mask[window] & ~kept] = 0
    return out


def dilate_tooth(label: np.ndarray, tooth: int, radius: int) -> np.ndarray:
    mask = label == tooth
    window = _window(mask, radius + 1)
    grown = ndimage.binary_dilation(mask[window], structure=disk(radius))
    out = label.copy()
    out[window][grown & (label[window] == 0)] = tooth  # other teeth stay as they are
    return out


def drop_tooth(label: np.ndarray, tooth: int) -> np.ndarray:
    return np.where(label == tooth, 0, label).astype(label.dtype)


def nearest_tooth(label: np.ndarray, tooth: int) -> tuple[int | None, float]:
    """The other tooth closest to `tooth` and the distance (pixels) between their nearest pixels."""
    mask = label == tooth
    rows, cols = _window(mask, 0)
    margin = max(rows.stop - rows.start, cols.stop - cols.start)
    for window in (_window(mask, margin), (slice(None), slice(None))):
        part = label[window]
        others = (part != 0) & (part != tooth)
        if not others.any():
            continue
        distance = np.where(others, ndimage.distance_transform_edt(part != tooth), np.inf)
        closest = int(np.argmin(distance))
        gap = float(distance.flat[closest])
        if gap <= margin or window[0] == slice(None):  # nothing outside the window can be nearer
            return int(part.flat[closest]), gap
    return None, float("inf")


def merge_teeth(label: np.ndarray, tooth: int, neighbour: int) -> np.ndarray:
    """Relabel `tooth` as `neighbour` and fill the background between them: one region results.

    The gap is the background within distance g of both teeth (g = their distance): it holds the
    straight segment between their closest pixels, so the two become connected.
    """
    pair = (label == tooth) | (label == neighbour)
    window = _window(pair, 1)
    part = label[window]
    tooth_mask, neighbour_mask = part == tooth, part == neighbour
    gap = ndimage.distance_transform_edt(~tooth_mask)[neighbour_mask].min()
    window = _window(pair, int(np.ceil(gap)) + 1)
    part = label[window]
    tooth_mask, neighbour_mask = part == tooth, part == neighbour
    reach = disk(int(np.ceil(gap)))
    bridge = (ndimage.binary_dilation(tooth_mask, structure=reach)
              & ndimage.binary_dilation(neighbour_mask, structure=reach) & (part == 0))
    out = label.copy()
    out[window][tooth_mask | bridge] = neighbour
    return out


# --- one case --------------------------------------------------------------------------------------

def _instances(label: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Tooth-numbered maps are their own instances; a binary mask is split into connected components."""
    values = np.unique(label[label > 0])
    if len(values) != 1:
        return label, None
    components, _ = ndimage.label(label > 0)
    return components.astype(np.int32), int(values[0])


def corrupt_label(label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Apply random per-tooth operations; returns the corrupted map and the (operation, tooth) applied."""
    instances, binary_value = _instances(np.asarray(label))
    teeth = [int(v) for v in np.unique(instances) if v != 0]
    if not teeth:
        return np.array(label, copy=True), []
    hit = [t for t in teeth if rng.random() < TOOTH_SHARE] or [teeth[int(rng.integers(len(teeth)))]]
    applied = []
    for tooth in hit:
        if not (instances == tooth).any():  # merged into an earlier tooth already
            continue
        operation = OPERATIONS[int(rng.integers(len(OPERATIONS)))]
        share_of_half_width = rng.uniform(*RADIUS_RANGE)  # drawn for every tooth: same stream whatever happens
        if operation == "merge":
            neighbour, _ = nearest_tooth(instances, tooth)
            if neighbour is None:
                operation = "dilate"
            else:
                instances = merge_teeth(instances, tooth, neighbour)
        if operation in ("erode", "dilate"):
            radius = max(1, round(share_of_half_width * inscribed_radius(instances, tooth)))
            change = erode_tooth if operation == "erode" else dilate_tooth
            instances = change(instances, tooth, radius)
        elif operation == "drop":
            instances = drop_tooth(instances, tooth)
        applied.append((operation, tooth))
    if binary_value is not None:
        instances = np.where(instances > 0, binary_value, 0)
    return instances.astype(np.asarray(label).dtype), applied


_CORRUPTED_CACHE: dict[tuple[str, int, int], np.ndarray] = {}  # per process: a case is corrupted once


def noisy_label(label: np.ndarray, case: str, corrupted: set[str] | list[str], seed: int) -> np.ndarray:
    """The training label of `case`: corrupted (the same way every time) when it is one of `corrupted`."""
    if case not in corrupted:
        return label
    label = np.ascontiguousarray(label)
    key = (case, seed, zlib.crc32(label))  # the checksum keeps two datasets' same-named cases apart
    if key not in _CORRUPTED_CACHE:
        _CORRUPTED_CACHE[key], _ = corrupt_label(label, case_rng(seed, case, _CORRUPTION_STREAM))
    return _CORRUPTED_CACHE[key].copy()


@functools.lru_cache(maxsize=16)
def _corrupted_set(case_names: tuple[str, ...], share: float, seed: int) -> frozenset[str]:
    return frozenset(corrupted_cases(list(case_names), share, seed)) if share else frozenset()


def training_labels(source, names: list[str], case_names: list[str], share: float, seed: int) -> np.ndarray:
    """(len(names), H, W) training label maps read from `source` (.label(name)), those of the corrupted
    share of `case_names` corrupted. Which cases is decided once per process: make_batch asks every batch."""
    corrupted = _corrupted_set(tuple(case_names), share, seed)
    return np.stack([noisy_label(source.label(name), name, corrupted, seed) for name in names])
