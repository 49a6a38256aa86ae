"""Semi-supervised segmentation methods by name (the plan's `segmentation.semi_supervised`): an explicit dict.

A method is built around the student network once training has its starting weights, adds a term to
each batch's loss from the batch's unlabeled images, follows the student after every optimizer step,
and is saved in checkpoints with it, so that a resumed run continues the same method state.
"""
from __future__ import annotations

from rbmnet.errors import RbmnetError
from rbmnet.semisupervised.mean_teacher import MeanTeacher

OFF = "off"
SEMI_SUPERVISED_METHODS: dict[str, type | None] = {OFF: None, "mean_teacher": MeanTeacher}


def semi_supervised_method(name: str):
    """The method class, or None for "off"."""
    if name not in SEMI_SUPERVISED_METHODS:
        raise RbmnetError(f"unknown semi-supervised method '{name}' (known: {', '.join(SEMI_SUPERVISED_METHODS)})")
    return SEMI_SUPERVISED_METHODS[name]
