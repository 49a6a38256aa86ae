"""What the time planner chooses among, and what the stages of a plan iterate over.

`budget_cases` lists the candidate configurations, cheapest first (planning/time_budget.py says
why this order): the dataset's median shape scaled to each LADDER_SIDES longer side at half the
paper's widths, then the largest of them at full width. Sizes and widths the user fixed (`--input-size`,
`--set input_size=...`, `--set network.features_per_stage=...`) replace the ladder's. Batch sizes:
on a CPU CPU_BATCH_SIZE (or fewer when memory holds fewer), on a GPU what the memory model holds.
"""
from __future__ import annotations

import dataclasses
import math

from rbmnet.planning.plan import NetworkConfig, Plan
from rbmnet.planning.planner import (MemoryBudget, batch_size_for, check_input_size, fold_training_cases,
                                     model_state_bytes, per_sample_bytes, plan_input_size)
from rbmnet.planning.speeds import SpeedCase
from rbmnet.planning.time_budget import (BUDGET_LEARNING_RATE, BUDGET_LR_SCHEDULE, CPU_BATCH_SIZE, LADDER_SIDES,
                                         FixedValues, Workload, predict_pretext,
                                         predict_segmentation, predictions_record)

FULL_WIDTHS = tuple(NetworkConfig().features_per_stage)
HALF_WIDTHS = tuple(f // 2 for f in FULL_WIDTHS)


def workload_of(fingerprint: dict, plan: Plan, num_folds: int = 5) -> Workload:
    images = fingerprint["num_labeled"] + fingerprint["num_unlabeled"]
    pretext_validation = max(1, math.ceil(images * plan.pretext.validation_fraction)) if images > 1 else 0
    height, width = fingerprint["aggregate"]["median_shape"]
    return Workload(
        pretext_training_images=max(1, images - pretext_validation),
        pretext_validation_images=pretext_validation,
        seg_training_cases=fold_training_cases(fingerprint["num_labeled"], plan.segmentation.fraction, num_folds),
        seg_validation_cases=math.ceil(fingerprint["num_labeled"] / num_folds),
        original_megapixels=height * width / 1e6, folds=num_folds)


def budget_cases(fingerprint: dict, plan: Plan, memory: MemoryBudget, output_channels: int, max_side: int,
                 fixed_size=None, fixed_features=None, fixed_batch: dict | None = None,
                 num_folds: int = 5) -> list[SpeedCase]:
    """Candidates, cheapest first. `plan` gives everything the budget does not move (e.g. the fraction)."""
    downsampling = plan.network.total_downsampling
    if fixed_size is not None:
        sizes = [check_input_size(fixed_size, downsampling)]
    else:
        median = fingerprint["aggregate"]["median_shape"]
        sides = [side for side in LADDER_SIDES if side <= max_side] or [max_side]
        sizes = []
        for side in sides:
            size = plan_input_size(median, downsampling, side)
            if size not in sizes:
                sizes.append(size)
    if fixed_features is not None:
        configs = [(size, tuple(fixed_features)) for size in sizes]
    else:
        configs = [(size, HALF_WIDTHS) for size in sizes] + [(sizes[-1], FULL_WIDTHS)]
    fixed_batch = fixed_batch or {}
    images = fingerprint["num_labeled"] + fingerprint["num_unlabeled"]
    seg_cases = fold_training_cases(fingerprint["num_labeled"], plan.segmentation.fraction, num_folds)
    cases = []
    for size, features in configs:
        network = dataclasses.replace(plan.network, features_per_stage=list(features))
        fitting = memory.budget_bytes, per_sample_bytes(size, network, output_channels), model_state_bytes(network)
        seg_batch = fixed_batch.get("segmentation") or _batch(memory, *fitting, seg_cases)
        pretext_batch = fixed_batch.get("pretext") or _batch(memory, *fitting, images)
        cases.append(SpeedCase(tuple(size), tuple(features), seg_batch, pretext_batch, output_channels))
    return cases


def _batch(memory: MemoryBudget, budget_bytes: int, sample: int, state: int, cases: int) -> int:
    fitting = batch_size_for(budget_bytes, sample, state, cases)
    return fitting if memory.device.startswith("cuda") else min(CPU_BATCH_SIZE, fitting)


def plan_case(plan: Plan, output_channels: int) -> SpeedCase:
    """The configuration a finished plan trains with."""
    return SpeedCase(tuple(plan.input_size), tuple(plan.network.features_per_stage), plan.segmentation.batch_size,
                     plan.pretext.batch_size, output_channels)


def fixed_values(overrides: dict, plan: Plan) -> FixedValues:
    """The user's explicit epochs and iterations, and the plan's (overridden) choices that change what a
    fold costs: semi-supervision, and whether the pretext stage runs before it."""
    return FixedValues(pretext_epochs=overrides.get("pretext.epochs"),
                       pretext_iterations=overrides.get("pretext.iterations_per_epoch"),
                       seg_epochs=overrides.get("segmentation.epochs"),
                       seg_iterations=overrides.get("segmentation.iterations_per_epoch"),
                       semi_supervised=plan.segmentation.semi_supervised != "off",
                       pretrained=plan.segmentation.initialisation == "pretext")


def chosen_values(option) -> dict:
    """A BudgetOption as the dotted plan keys it sets."""
    case = option.case
    return {"input_size": list(case.input_size), "network.features_per_stage": list(case.features_per_stage),
            "pretext.batch_size": case.pretext_batch_size, "segmentation.batch_size": case.seg_batch_size,
            "pretext.epochs": option.pretext.epochs, "pretext.iterations_per_epoch": option.pretext.iterations_per_epoch,
            "segmentation.epochs": option.segmentation.epochs,
            "segmentation.iterations_per_epoch": option.segmentation.iterations_per_epoch,
            "pretext.learning_rate": BUDGET_LEARNING_RATE, "pretext.lr_schedule": BUDGET_LR_SCHEDULE,
            "segmentation.learning_rate": BUDGET_LEARNING_RATE, "segmentation.lr_schedule": BUDGET_LR_SCHEDULE}


def predict_plan(plan: Plan, speed, work: Workload) -> dict:
    """plans.json derivation's `predicted_seconds` for the plan as it stands (explicit values included)."""
    pretext = predict_pretext(plan.pretext.epochs, plan.pretext.iterations_per_epoch, plan.pretext.batch_size,
                              speed, work)
    seg = predict_segmentation(plan.segmentation.epochs, plan.segmentation.iterations_per_epoch,
                               plan.segmentation.batch_size, speed, work, plan.segmentation.semi_supervised != "off")
    return predictions_record(pretext, seg, work.folds, speed, plan.segmentation.initialisation == "pretext")


def width_units(features) -> float:
    """Convolution work of widths relative to the paper's (sum_s features[s]^2 / 4^s): half widths = 0.25."""
    def work(widths):
        return sum(f * f / 4 ** s for s, f in enumerate(widths))
    return work(features) / work(FULL_WIDTHS)
