"""The training fraction (see docs/plan.md): which labels a fold may use.

The fraction is of the whole labeled dataset; the cases are drawn, seeded, from the fold's training
split. One permutation per (seed, fold) is cut at different lengths, so a smaller fraction's cases
are always inside a larger fraction's: label-efficiency curves compare nested subsets.
"""
from __future__ import annotations

import numpy as np

from rbmnet.errors import RbmnetError


def training_subset(train_split: list[str], fraction: float, num_labeled: int, seed: int,
                    fold: int | str) -> list[str]:
    if not 0 < fraction <= 1:
        raise RbmnetError(f"fraction must be in (0, 1], got {fraction}")
    wanted = max(1, round(fraction * num_labeled))
    if wanted > len(train_split):
        share = len(train_split) / num_labeled
        raise RbmnetError(
            f"fraction {fraction:g} asks for {wanted} of {num_labeled} labeled cases, but fold {fold}'s "
            f"training split holds {len(train_split)} ({share:.0%}); use a smaller fraction, fold 'all', "
            f"or more folds (rbmnet_plan_and_preprocess --num-folds 10 --overwrite-splits allows up to 0.9)")
    fold_key = 99 if fold == "all" else int(fold)
    order = np.random.default_rng([seed, fold_key]).permutation(len(train_split))
    ordered = sorted(train_split)
    return sorted(ordered[i] for i in order[:wanted])
