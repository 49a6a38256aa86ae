"""Time budgets on a folder of radiographs, in one command: predicted vs actual durations, and the
evidence behind the budget rule (docs/time_budget.md).

    .venv/bin/python benchmarks/time_budget.py RAW_DIR [--work DIR] [--arms a,b] [--json FILE]

RAW_DIR holds images/ and labels/ (the UFBA-425 layout). Everything derived from the radiographs stays in
WORK (default /tmp/rbmnet_time_budget), never in the repository; the speed cache too (WORK/cache), so
the first plan measures on this machine. Run it on an otherwise idle machine: the durations are the point.
Each arm plans with `rbmnet_plan_and_preprocess --time-budget`, trains pretext (where it has one) and
fold 0 with rbmnet's defaults (2 batch workers), and records the plan's predictions, the stages'
duration.json and the fold's validation summary. A finished stage is read, an interrupted one is
continued, so running the same command again finishes the grid; the JSON is rewritten after every arm.

Arms (fold 0, UFBA's FDI labels: the plan's task is teeth):
    rule_30m, rule_2h   the rule's choice for the budget (pretext + fold 0); the rule's 10-minute plan is
                        the 192 x 192 one, size192_10m
    size128_10m, size192_10m, size256_10m   10 minutes at a fixed input size (the rest chosen by the budget):
                        fewer pixels buy more steps; 384 x 384 does not fit 10 minutes on a 2-core CPU
                        at all (the planner's minimum for it is 12 m 11 s)
    size256_30m         30 minutes at 256 x 256 (what the first rule, which started at 256, chose)
    scratch_10m         the 10-minute plan's fold from scratch (no pretext weights): is the pretext share worth it
    paper_lr_10m        the 10-minute plan and pretext weights, the fold at the paper's learning rate (1e-4, constant)
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import click

from numbered_teeth import paired_difference
from rbmnet.evaluation.reports import json_ready
from rbmnet.io.atomic import read_json, write_json
from workdir import convert_once, rbmnet, work_environment

DEFAULT_DATASET = "UFBA425"
RESULTS = Path(__file__).resolve().parent / "results"
PAPER_LR = ["--set", "segmentation.learning_rate=0.0001", "--set", 'segmentation.lr_schedule="constant"']
# every arm measures the budget of the paper's pipeline, pretext + fold (folds start from scratch by default)
PRETRAINED = ["--set", 'segmentation.initialisation="pretext"']

# name: (plans name, plan arguments, seg --init: None = the plan's own pretext, timed: durations reported)
ARMS = {
    "rule_30m": ("rule30m", [*PRETRAINED, "--time-budget", "30m"], None, True),
    "rule_2h": ("rule2h", [*PRETRAINED, "--time-budget", "2h"], None, True),
    "size128_10m": ("b10m_128", [*PRETRAINED, "--time-budget", "10m", "--input-size", "128", "128"], None, True),
    "size192_10m": ("b10m_192", [*PRETRAINED, "--time-budget", "10m", "--input-size", "192", "192"], None, True),
    "size256_10m": ("b10m", [*PRETRAINED, "--time-budget", "10m", "--input-size", "256", "256"], None, True),
    "size256_30m": ("b30m", [*PRETRAINED, "--time-budget", "30m", "--input-size", "256", "256"], None, True),
    "scratch_10m": ("b10m_192", [*PRETRAINED, "--time-budget", "10m", "--input-size", "192", "192"], "scratch", False),
    "paper_lr_10m": ("b10m_192_paperlr", [*PRETRAINED, "--time-budget", "10m", "--input-size", "192", "192", *PAPER_LR],
                     "pretext_of:b10m_192", False),
}
# (name, arm a, arm b, metric): paired difference a - b over the validation cases
COMPARISONS = [
    ("10 m, more steps on smaller inputs: 192 vs 256", "size192_10m", "size256_10m", "tooth_dice"),
    ("10 m, more steps on smaller inputs: 192 vs 256 (binary Dice)", "size192_10m", "size256_10m", "binary_dice"),
    ("10 m, more steps on smaller inputs: 128 vs 192", "size128_10m", "size192_10m", "tooth_dice"),
    ("10 m, more steps on smaller inputs: 128 vs 192 (binary Dice)", "size128_10m", "size192_10m", "binary_dice"),
    ("30 m: the rule's choice vs 256 x 256", "rule_30m", "size256_30m", "tooth_dice"),
    ("30 m: the rule's choice vs 256 x 256 (binary Dice)", "rule_30m", "size256_30m", "binary_dice"),
    ("30 m: the rule's choice vs 256 x 256 (identification)", "rule_30m", "size256_30m", "identification_accuracy"),
    ("10 m, more steps on smaller inputs: 128 vs 192 (identification)", "size128_10m", "size192_10m",
     "identification_accuracy"),
    ("pretext share at 10 m: pretext weights vs scratch", "size192_10m", "scratch_10m", "tooth_dice"),
    ("budget learning rate 1e-3 poly vs the paper's 1e-4", "size192_10m", "paper_lr_10m", "tooth_dice"),
    ("2 h vs 30 m", "rule_2h", "rule_30m", "tooth_dice"),
]


def seg_folder(results: Path, plans: str, task_tag: str, init: str | None) -> Path:
    """The model folder rbmnet_train seg writes (its id names the initialisation)."""
    if init is None:
        init_tag = "rbm"
    elif init == "scratch":
        init_tag = "scratch"
    else:  # another plan's pretext checkpoint, passed as a path
        init_tag = f"init-pretext__resunet__{init.split(':', 1)[1]}"
    return results / f"seg__resunet__{init_tag}__frac0.2__{plans}{task_tag}"


def continue_flag(folder: Path) -> list[str]:
    return ["--continue"] if (folder / "checkpoint_latest.pt").is_file() else []


def run_arm(arm: str, dataset: str, env: dict, results: Path, preprocessed: Path) -> dict:
    plans, plan_args, init, timed = ARMS[arm]
    walls = {}
    plan_path = preprocessed / f"{plans}.json"
    if not plan_path.is_file():
        started = time.perf_counter()
        rbmnet("plan_and_preprocess", "-d", dataset, "-p", plans, *plan_args, env=env)
        walls["plan_and_preprocess"] = round(time.perf_counter() - started, 1)
    plan = read_json(plan_path)
    head = plan["segmentation"]["numbering_head"]
    task_tag = f"__teeth-{head}" if plan["segmentation"]["task"] == "teeth" else ""
    pretext = results / f"pretext__resunet__{plans}"
    if init is None:  # the plan's own pretext model, asked for explicitly (folds start from scratch by default)
        init_args = ["--init", "pretext"]
        if not (pretext / "checkpoint_final.pt").is_file():
            started = time.perf_counter()
            rbmnet("train", "pretext", "-d", dataset, "-p", plans, *continue_flag(pretext), env=env)
            walls["pretext"] = round(time.perf_counter() - started, 1)
    elif init == "scratch":
        init_args = ["--init", "scratch"]
    else:
        init_args = ["--init", str(results / f"pretext__resunet__{init.split(':', 1)[1]}" / "checkpoint_final.pt")]
    folder = seg_folder(results, plans, task_tag, init)
    if not (folder / "fold_0" / "validation" / "summary.json").is_file():
        started = time.perf_counter()
        rbmnet("train", "seg", "0", "-d", dataset, "-p", plans, *init_args, *continue_flag(folder / "fold_0"),
               env=env)
        walls["seg_fold_0"] = round(time.perf_counter() - started, 1)
    summary = read_json(folder / "fold_0" / "validation" / "summary.json")
    result = {"plans": plans, "plan_args": plan_args, "init": init or "pretext", "model_id": folder.name,
              "plan": {"input_size": plan["input_size"], "features_per_stage": plan["network"]["features_per_stage"],
                       "pretext": {k: plan["pretext"][k] for k in ("epochs", "iterations_per_epoch", "batch_size",
                                                                    "learning_rate", "lr_schedule")},
                       "segmentation": {k: plan["segmentation"][k] for k in (
                           "epochs", "iterations_per_epoch", "batch_size", "learning_rate", "lr_schedule")}},
              "time_budget": plan["derivation"].get("time_budget"),
              "predicted_seconds": plan["derivation"].get("predicted_seconds"),
              "wall_seconds_this_invocation": walls, "mean": summary["mean"], "num_cases": summary["num_cases"]}
    durations = {"seg_fold_0": _read(folder / "fold_0" / "duration.json")}
    if init is None:
        durations["pretext"] = _read(pretext / "duration.json")
    result["durations"] = durations
    if timed and all(durations.values()):
        predicted = sum(d["predicted_seconds"] for d in durations.values() if d.get("predicted_seconds"))
        actual = sum(d["actual_seconds"] for d in durations.values())
        result["pretext_plus_fold_0"] = {"predicted_seconds": round(predicted, 1), "actual_seconds": round(actual, 1),
                                         "deviation": round((actual - predicted) / predicted, 4) if predicted else None,
                                         "budget_seconds": (plan["derivation"].get("time_budget") or {}).get(
                                             "budget_seconds")}
    return result


def _read(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def comparisons(results: Path, arms: dict) -> list[dict]:
    rows = []
    for name, arm_a, arm_b, metric in COMPARISONS:
        if arm_a in arms and arm_b in arms:
            summaries = [read_json(results / arms[arm]["model_id"] / "fold_0" / "validation" / "summary.json")
                         for arm in (arm_a, arm_b)]
            rows.append({"comparison": name, "a": f"{arm_a}.{metric}", "b": f"{arm_b}.{metric}",
                         **paired_difference(*summaries, metric, metric)})
    return rows


@click.command()
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-d", "--dataset", default=DEFAULT_DATASET, show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("/tmp/rbmnet_time_budget"),
              show_default=True)
@click.option("--arms", default="size192_10m,rule_30m", show_default=True,
              help=f"Comma-separated arms, in order (known: {', '.join(ARMS)}).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=RESULTS / "time_budget_cpu.json", show_default=True)
def main(raw_dir: Path, dataset: str, work: Path, arms: str, json_path: Path) -> None:
    work = work.resolve()
    env = {**work_environment(work), "RBMNET_CACHE": str(work / "cache")}
    chosen = arms.split(",")
    unknown = [a for a in chosen if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: unknown arm(s) {', '.join(unknown)} (known: {', '.join(ARMS)})")
    convert_once(raw_dir, work, dataset, env)
    results = work / "rbmnet_results" / dataset
    report = read_json(json_path) if json_path.is_file() else {}
    report.update({"dataset": dataset, "fold": 0, "work": str(work),
                   "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                   "arms": report.get("arms", {})})
    for arm in chosen:
        started = time.perf_counter()
        report["arms"][arm] = run_arm(arm, dataset, env, results, work / "rbmnet_preprocessed" / dataset)
        print(f"{arm}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        report["comparisons"] = comparisons(results, report["arms"])
        write_json(json_path, json_ready(report))
    print(json.dumps({arm: {"mean": report["arms"][arm]["mean"],
                            "pretext_plus_fold_0": report["arms"][arm].get("pretext_plus_fold_0")}
                      for arm in chosen}, indent=1))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
