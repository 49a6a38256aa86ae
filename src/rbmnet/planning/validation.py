"""One check of a plan's values (types, ranges, names), run whenever a plan is built: written by the
planner, changed by --set, loaded from plans.json or from a checkpoint. A bad value stops everything
before any file is touched, with one line naming the key, the value and what is allowed."""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Callable

from rbmnet.errors import RbmnetError
from rbmnet.networks import ARCHITECTURES
from rbmnet.networks.optimization import LR_SCHEDULES, OPTIMIZERS, TRANSFERS
from rbmnet.planning.plan import DATA_PATHS, NORMALIZATION_SCHEMES
from rbmnet.planning.planner import flatten_plan
from rbmnet.pretexts import MASKING_SCHEMES
from rbmnet.semisupervised import SEMI_SUPERVISED_METHODS
from rbmnet.tasks import TASKS
from rbmnet.tasks.teeth import NUMBERING_HEADS

Rule = tuple[Callable[[object], bool], str]  # (value is allowed, what is allowed)


def _at_least(low):
    return (lambda v: v >= low), f">= {low}"


def _between(low, high, open_low=False, open_high=False):
    def allowed(v):
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    return allowed, f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"


def _one_of(names):
    return (lambda v: v in names), f"one of {', '.join(names)}"


def _ordered_pair(low):
    return (lambda v: len(v) == 2 and low <= v[0] <= v[1]), f"[low, high] with {low} <= low <= high"


_STAGE = {"epochs": _at_least(1), "iterations_per_epoch": _at_least(1), "batch_size": _at_least(1),
          "optimizer": _one_of(list(OPTIMIZERS)), "learning_rate": _between(0, 10, open_low=True),
          "weight_decay": _at_least(0), "lr_schedule": _one_of(list(LR_SCHEDULES)),
          "validation_fraction": _between(0, 1, open_high=True), "warmup_epochs": _at_least(0)}

RULES: dict[str, Rule] = {
    "dataset_name": ((lambda v: bool(v.strip())), "a non-empty name"),
    "plans_name": ((lambda v: bool(v.strip()) and "/" not in v), "a non-empty name without '/'"),
    "input_size": ((lambda v: len(v) == 2 and min(v) >= 1), "[height, width], positive"),
    "seed": _at_least(0),
    "normalization.scheme": _one_of(NORMALIZATION_SCHEMES),
    "normalization.lower_percentile": _between(0, 100, open_high=True),
    "normalization.upper_percentile": _between(0, 100, open_low=True),
    "network.architecture": _one_of(list(ARCHITECTURES)),
    "network.features_per_stage": ((lambda v: len(v) >= 2 and min(v) >= 1), "two or more positive widths"),
    "network.dropout": _between(0, 1, open_high=True),
    "masking.scheme": _one_of(list(MASKING_SCHEMES)),
    "masking.mask_ratio": _between(0, 1, open_low=True, open_high=True),
    "masking.min_blocks": _at_least(1),
    "masking.max_blocks": _at_least(1),
    "masking.block_area_fraction": _between(0, 1, open_low=True, open_high=True),
    "masking.max_aspect_ratio": _at_least(1),
    **{f"pretext.{key}": rule for key, rule in _STAGE.items()},
    **{f"segmentation.{key}": rule for key, rule in _STAGE.items()},
    "segmentation.fraction": _between(0, 1, open_low=True),
    "segmentation.task": _one_of(list(TASKS)),
    "segmentation.numbering_head": _one_of(list(NUMBERING_HEADS)),
    "segmentation.dice_weight": _at_least(0),
    "segmentation.bce_weight": _at_least(0),
    "segmentation.threshold": _between(0, 1, open_low=True, open_high=True),
    "segmentation.initialisation": _one_of(["pretext", "scratch"]),
    "segmentation.transfer": _one_of(list(TRANSFERS)),
    "segmentation.transferred_lr_factor": _between(0, 10, open_low=True),
    "segmentation.semi_supervised": _one_of(list(SEMI_SUPERVISED_METHODS)),
    "segmentation.consistency_weight": _at_least(0),
    "segmentation.consistency_rampup": _between(0, 1),
    "segmentation.ema_decay": _between(0, 1, open_high=True),
    "augmentation.rotation_degrees": _between(0, 180),
    "augmentation.scale_range": ((lambda v: len(v) == 2 and 0 < v[0] <= v[1]), "[low, high] with 0 < low <= high"),
    "augmentation.gamma_range": ((lambda v: len(v) == 2 and 0 < v[0] <= v[1]), "[low, high] with 0 < low <= high"),
    "augmentation.brightness_range": _ordered_pair(0),
    "augmentation.contrast_range": _ordered_pair(0),
    "augmentation.noise_variance": _ordered_pair(0),
    "augmentation.blur_sigma": _ordered_pair(0),
    "augmentation.probability": _between(0, 1),
    "augmentation.data_path": _one_of(DATA_PATHS),
}


def validate_plan(plan, where: str = "plan") -> None:
    """Raise RbmnetError for the first value of `plan` whose type or range is wrong."""
    _check_types(plan, where, "")
    values = flatten_plan(dataclasses.asdict(plan))
    for key, (allowed, description) in RULES.items():
        if not allowed(values[key]):
            _refuse(where, key, values[key], f"must be {description}")
    if values["masking.max_blocks"] < values["masking.min_blocks"]:
        _refuse(where, "masking.max_blocks", values["masking.max_blocks"], "must be >= masking.min_blocks")
    if values["normalization.upper_percentile"] <= values["normalization.lower_percentile"]:
        _refuse(where, "normalization.upper_percentile", values["normalization.upper_percentile"],
                "must be above normalization.lower_percentile")
    for stage in ("pretext", "segmentation"):
        if values[f"{stage}.warmup_epochs"] >= values[f"{stage}.epochs"]:
            _refuse(where, f"{stage}.warmup_epochs", values[f"{stage}.warmup_epochs"],
                    f"must be below {stage}.epochs ({values[f'{stage}.epochs']})")
    step = plan.network.total_downsampling
    if any(size % step for size in plan.input_size):
        _refuse(where, "input_size", plan.input_size,
                f"must be multiples of {step} (the network's total downsampling, from network.features_per_stage)")


def _check_types(node, where: str, prefix: str) -> None:
    hints = typing.get_type_hints(type(node))
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        key = prefix + field.name
        if dataclasses.is_dataclass(value):
            _check_types(value, where, key + ".")
        elif not _has_type(value, hints[field.name]):
            _refuse(where, key, value, f"must be {_type_name(hints[field.name])}")


def _has_type(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a fine float (1 for 1.0)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        item = typing.get_args(hint)[0]
        return f"a list of {({int: 'integers', float: 'numbers', str: 'strings'}).get(item, item)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "an object"}.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _refuse(where: str, key: str, value, problem: str) -> typing.NoReturn:
    raise RbmnetError(f"{where}: {key} = {json.dumps(value)} {problem}")
