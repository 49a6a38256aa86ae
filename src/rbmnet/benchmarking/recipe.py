"""A cell's recipe: the plan keys that decide what a training run produces, and how two plans differ in them.

A finished cell is reused only when the plan in its checkpoint matches, in these keys, the plan this
benchmark run would train it with; otherwise `rbmnet_benchmark --epochs 50` after a 5-epoch grid would
print the 5-epoch numbers under the new heading. Keys that only decide where or how fast batches are
made (the data path) are left out: they do not change the numbers; so are keys no longer in the plan.
"""
from __future__ import annotations

from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.planning.plan import LAUNCH_ONLY_KEYS, REMOVED_KEYS, Plan
from rbmnet.planning.planner import flatten_plan
from rbmnet.model.checkpoint import read_checkpoint_plan

SEGMENTATION_SECTIONS = ("input_size", "normalization", "network", "segmentation", "augmentation", "seed")
PRETEXT_SECTIONS = ("input_size", "normalization", "network", "masking", "pretext", "augmentation", "seed")
RBM_SECTIONS = SEGMENTATION_SECTIONS + ("masking", "pretext")  # an RBM cell is also the pretext recipe
# removed keys: an older checkpoint's plan may hold them; launch-only keys: the arm's --init decides
RUNTIME_ONLY = {"augmentation.data_path", *REMOVED_KEYS, *LAUNCH_ONLY_KEYS}
MAX_LISTED = 4  # differences named in one message
DEFAULTS = flatten_plan(Plan(dataset_name="defaults").to_dict())


def recipe(plan: dict, sections: tuple[str, ...]) -> dict[str, object]:
    """The plan's result-deciding values by dotted key; tuples as lists, as a plan read from JSON has them.
    A key the plan lacks has its default: a checkpoint from before the key existed was trained the
    default way (e.g. no semi-supervision), so an upgrade does not turn finished cells into changed ones."""
    values = {**DEFAULTS, **flatten_plan(plan)}
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()
            if key.split(".")[0] in sections and key not in RUNTIME_ONLY}


def recipe_changes(recorded: dict, current: dict, sections: tuple[str, ...]) -> list[str]:
    """'key: recorded -> current' for every recipe value that differs."""
    before, after = recipe(recorded, sections), recipe(current, sections)
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)]


def checkpoint_changes(checkpoint: Path, current: dict, sections: tuple[str, ...]) -> list[str]:
    """How the plan that trained `checkpoint` differs from `current`; an unreadable checkpoint is one change."""
    try:
        recorded = read_checkpoint_plan(checkpoint)
    except RbmnetError as exc:
        return [str(exc)]
    return recipe_changes(recorded, current, sections)


def describe_changes(changes: list[str]) -> str:
    listed = "; ".join(changes[:MAX_LISTED])
    more = len(changes) - MAX_LISTED
    return listed + (f"; and {more} more" if more > 0 else "")
