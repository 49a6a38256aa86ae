"""What both stages read before training: the plan with command-line overrides, the data, the device."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rbmnet.data.dataset_json import load_dataset_json
from rbmnet.errors import RbmnetError
from rbmnet.layout import plans_file_name
from rbmnet.paths import preprocessed_dataset_dir, raw_dataset_dir, resolve_dataset_name
from rbmnet.planning.plan import Plan, apply_overrides, load_plan
from rbmnet.preprocessing.store import PreprocessedDataset, configuration_dir


@dataclass
class StageInputs:
    dataset_name: str
    plan: Plan
    dataset_json: dict
    data: PreprocessedDataset
    raw_dir: Path
    preprocessed_dir: Path


def load_stage_inputs(dataset: str | None, plans_name: str, overrides: dict) -> StageInputs:
    name = resolve_dataset_name(dataset)
    preprocessed_dir = preprocessed_dataset_dir(name)
    plan = load_plan(preprocessed_dir / plans_file_name(plans_name))
    if overrides:
        plan = apply_overrides(plan, overrides)
    data = PreprocessedDataset(configuration_dir(preprocessed_dir, plan.configuration))
    data.check_matches(plan)
    return StageInputs(name, plan, load_dataset_json(raw_dataset_dir(name)), data,
                       raw_dataset_dir(name), preprocessed_dir)


def cli_overrides(epochs: int | None, lr: float | None, batch_size: int | None, seed: int | None,
                  stage: str, extra: dict) -> dict:
    """The named training flags are shorthands for plan keys of the stage being trained."""
    overrides = dict(extra)
    for key, value in (("epochs", epochs), ("learning_rate", lr), ("batch_size", batch_size)):
        if value is not None:
            overrides[f"{stage}.{key}"] = value
    if seed is not None:
        overrides["seed"] = seed
    for key, value in overrides.items():
        if key.endswith((".epochs", ".batch_size", ".iterations_per_epoch")) and (
                not isinstance(value, int) or value < 1):
            raise RbmnetError(f"{key} must be a positive integer, got {value}")
    return overrides
