"""The time side of `rbmnet_plan_and_preprocess`: the budget, where speeds come from, the choice.

plan -> candidates -> speeds (measured here, cached, or from --speed-from / an assumed GPU table)
-> choice (planning/time_budget.py) -> plan again with the chosen values -> predictions of the
final plan (explicit --set values included) into plans.json derivation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rbmnet.errors import RbmnetError
from rbmnet.planning.durations import format_duration, parse_duration
from rbmnet.planning.plan import Plan
from rbmnet.planning.planner import MIN_SEGMENTATION_ITERATIONS, MemoryBudget
from rbmnet.planning.speeds import Speed, SpeedCache, SpeedCase, assumed_gpu_speed, case_part, load_speed_file
from rbmnet.planning.time_budget import DEFAULT_CPU_BUDGET_SECONDS, BudgetOption, choose_for_budget
from rbmnet.planning.time_candidates import (budget_cases, chosen_values, fixed_values, plan_case, predict_plan,
                                             width_units, workload_of)

OFF = ("off", "none")


def resolve_budget(text: str | None, planning_for_gpu: bool) -> tuple[float | None, str]:
    """(seconds or None for the paper's protocol, one line saying how the budget was decided).
    `text` None: the flag was not given."""
    if text is None:
        if planning_for_gpu:
            return None, "GPU: the paper's protocol (--time-budget DURATION plans for a time budget instead)"
        return DEFAULT_CPU_BUDGET_SECONDS, (
            f"no GPU: planned for a {format_duration(DEFAULT_CPU_BUDGET_SECONDS)} budget for one fold "
            f"(and the pretext stage when segmentation starts from it; --time-budget 4h for more time, "
            f"--time-budget off for the paper's full protocol)")
    if str(text).strip().lower() in OFF:
        return None, "--time-budget off: the paper's protocol"
    seconds = parse_duration(text)
    return seconds, (f"--time-budget {text}: one fold (and the pretext stage when used) planned to fit "
                     f"{format_duration(seconds)}")


@dataclass
class SpeedSource:
    """Speeds of SpeedCases: measured on `device` (cached), or from a file, or assumed for a GPU elsewhere."""
    plan: Plan
    dataset_json: dict
    original_shape: tuple
    device: object = None  # torch.device to measure on; None: the training machine is not this one
    file_speeds: dict[str, Speed] | None = None
    measured: int = 0
    cached: int = 0
    speeds: dict[SpeedCase, Speed] = field(default_factory=dict)

    def __call__(self, case: SpeedCase) -> Speed:
        if case not in self.speeds:
            self.speeds[case] = self._speed(case)
        return self.speeds[case]

    def _speed(self, case: SpeedCase) -> Speed:
        if self.file_speeds is not None:
            return _from_file(case, self.file_speeds)
        if self.device is None:
            return assumed_gpu_speed(case, width_units(case.features_per_stage))
        from rbmnet.tasks import build_task
        from rbmnet.training.speed_probe import speed_for  # measuring runs training steps

        task = build_task(self.plan, self.dataset_json)
        speed, from_cache = speed_for(case, self.plan, task, self.device, self.original_shape, SpeedCache())
        self.cached += from_cache
        self.measured += not from_cache
        return speed

    def describe(self) -> str:
        if self.file_speeds is not None:
            return "speeds from --speed-from (not measured on this machine)"
        if self.device is None:
            return "speeds assumed for a GPU that is not this machine: NOT measured (--speed-from FILE to use measured ones)"
        return f"speeds measured on {self.device} ({self.measured} configuration(s) probed, {self.cached} from the cache)"


def _from_file(case: SpeedCase, file_speeds: dict[str, Speed]) -> Speed:
    """The file's entry for this configuration, else its nearest entry scaled by pixels, widths and batch."""
    for key, speed in file_speeds.items():
        if case_part(key) == case.describe():
            return speed
    if not file_speeds:
        raise RbmnetError("--speed-from: the file holds no speeds")

    def pixel_ratio(reference: SpeedCase) -> float:
        return case.input_size[0] * case.input_size[1] / (reference.input_size[0] * reference.input_size[1])

    def work_ratio(reference: SpeedCase) -> float:
        return pixel_ratio(reference) * width_units(case.features_per_stage) / width_units(reference.features_per_stage)

    key, speed = min(file_speeds.items(), key=lambda item: abs(math.log(work_ratio(_case_from_key(item[0])))))
    reference = _case_from_key(key)
    pixels, work = pixel_ratio(reference), work_ratio(reference)
    seg = work * case.seg_batch_size / reference.seg_batch_size
    pretext = work * case.pretext_batch_size / reference.pretext_batch_size
    return Speed(seg_step_seconds=speed.seg_step_seconds * seg, pretext_step_seconds=speed.pretext_step_seconds * pretext,
                 seg_batch_seconds=speed.seg_batch_seconds * pixels * case.seg_batch_size / reference.seg_batch_size,
                 pretext_batch_seconds=speed.pretext_batch_seconds * pixels * case.pretext_batch_size
                 / reference.pretext_batch_size,
                 eval_seconds_per_image=speed.eval_seconds_per_image * work,
                 seg_report_seconds_per_megapixel=speed.seg_report_seconds_per_megapixel,
                 pretext_report_seconds_per_image=speed.pretext_report_seconds_per_image * pixels,
                 source=f"{speed.source}, scaled from {case_part(key)}")


def _case_from_key(key: str) -> SpeedCase:
    try:
        parts = case_part(key).split("|")
        height, width = (int(v) for v in parts[0].split("x"))
        features = tuple(int(v) for v in parts[1].removeprefix("features [").removesuffix("]").split(","))
        batches = parts[2].split()
        return SpeedCase((height, width), features, int(batches[2]), int(batches[4]), int(parts[3].split()[1]))
    except (IndexError, ValueError):
        raise RbmnetError(f"--speed-from: cannot read the configuration of entry '{key}'") from None


def choose(seconds: float, fingerprint: dict, plan: Plan, memory: MemoryBudget, output_channels: int,
           max_side: int, overrides: dict, input_size, speeds: SpeedSource, num_folds: int) -> BudgetOption:
    """The budget's choice; candidates are measured lazily, cheapest first."""
    fixed_size = overrides.get("input_size") or input_size
    fixed_batch = {"segmentation": overrides.get("segmentation.batch_size"),
                   "pretext": overrides.get("pretext.batch_size")}
    cases = budget_cases(fingerprint, plan, memory, output_channels, max_side, fixed_size,
                         overrides.get("network.features_per_stage"), fixed_batch, num_folds)
    work = workload_of(fingerprint, plan, num_folds)
    known: dict[SpeedCase, Speed] = {}
    while True:
        outcome = choose_for_budget(seconds, cases, known, work, fixed_values(overrides, plan),
                                    MIN_SEGMENTATION_ITERATIONS)
        if isinstance(outcome, SpeedCase):
            known[outcome] = speeds(outcome)
            continue
        return outcome


def attach_predictions(plan: Plan, fingerprint: dict, speeds: SpeedSource, output_channels: int, num_folds: int,
                       budget_seconds: float | None, budget_note: str, option: BudgetOption | None) -> dict:
    """plans.json derivation gains the speeds, the predicted seconds of the plan as it stands and the budget."""
    case = plan_case(plan, output_channels)
    speed = speeds(case)
    predictions = predict_plan(plan, speed, workload_of(fingerprint, plan, num_folds))
    derivation = dict(plan.derivation)
    derivation["speeds"] = {**derivation.get("speeds", {}),
                            case.describe(): {**speed.to_dict()}}
    derivation["predicted_seconds"] = predictions
    if option is not None or budget_seconds is not None or "time_budget" not in derivation:
        derivation["time_budget"] = {
            "budget_seconds": budget_seconds, "how": budget_note,
            "rule": "docs/time_budget.md: segmentation steps first, then input size, then width; pretext "
                    "gets its share; epochs up to the paper's protocol",
            "chosen": chosen_values(option) if option is not None else None,
            "quality_proxy": round(option.quality_proxy, 3) if option is not None else None}
    plan.derivation = derivation
    return predictions


def gpu_planned(memory: MemoryBudget) -> bool:
    return memory.device.startswith("cuda")
