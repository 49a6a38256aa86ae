"""splits_final.json: five seeded cross-validation folds over the labeled cases, written once and reused.

Reused as long as it covers exactly the current labeled cases, so results of different runs and
training fractions stay comparable; when the cases changed it is an error, never a silent re-split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json, write_json

NUM_FOLDS = 5


def make_splits(cases: list[str], seed: int, num_folds: int = NUM_FOLDS) -> list[dict]:
    """[{"train": [...], "val": [...]}] * num_folds; every case is in exactly one "val"."""
    if len(cases) < num_folds:
        raise RbmnetError(f"{len(cases)} labeled case(s); {num_folds}-fold cross-validation needs at least "
                          f"{num_folds} (add labeled cases to imagesTr/ and labelsTr/)")
    ordered = sorted(cases)  # the input order must not change the folds
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    folds = [sorted(ordered[i] for i in part) for part in np.array_split(permutation, num_folds)]
    return [{"train": sorted(c for other in folds if other is not val for c in other), "val": val}
            for val in folds]


def load_or_create_splits(path: Path, cases: list[str], seed: int, overwrite: bool = False,
                          num_folds: int | None = None) -> tuple[list[dict], bool]:
    """Return (splits, created). Existing splits are kept when they cover exactly `cases`.

    num_folds None keeps whatever exists (five folds when new); more folds leave a larger training
    split per fold, which large training fractions (0.9) need.
    """
    if path.is_file() and not overwrite:
        splits = _read_splits(path)
        if num_folds is not None and len(splits) != num_folds:
            raise RbmnetError(f"{path}: has {len(splits)} folds, {num_folds} asked for; pass --overwrite-splits")
        listed = {c for fold in splits for c in fold["val"]}
        if listed == set(cases):
            return splits, False
        added, removed = sorted(set(cases) - listed), sorted(listed - set(cases))
        raise RbmnetError(
            f"{path}: its folds list other cases than the labeled ones now ({len(added)} new, e.g. "
            f"{added[:1] or '-'}; {len(removed)} gone, e.g. {removed[:1] or '-'}); delete it or pass --overwrite-splits")
    splits = make_splits(cases, seed, num_folds or NUM_FOLDS)
    write_json(path, splits)
    return splits, True


def _read_splits(path: Path) -> list[dict]:
    try:
        splits = read_json(path)
    except ValueError as exc:
        raise RbmnetError(f"{path}: not valid JSON ({exc}); delete it or pass --overwrite-splits") from None
    valid = isinstance(splits, list) and splits and all(
        isinstance(f, dict) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list) for f in splits)
    if not valid:
        raise RbmnetError(f"{path}: expected a list of {{\"train\": [...], \"val\": [...]}}; "
                          f"delete it or pass --overwrite-splits")
    return splits
