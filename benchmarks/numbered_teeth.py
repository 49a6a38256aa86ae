"""Numbered teeth on a folder of radiographs with FDI label maps, in one command: the head comparison,
the flip ablation, binary vs the teeth model's union, scratch vs pretext weights.

    .venv/bin/python benchmarks/numbered_teeth.py RAW_DIR [--profile cpu|smoke] [--work DIR] [--arms a,b]

RAW_DIR holds images/ and labels/ (the UFBA-425 layout). Everything derived from the radiographs stays
in WORK (default /tmp/rbmnet_numbered_teeth_<profile>), never in the repository. Each arm is one
`rbmnet_train seg` run on fold 0 with the same plan budget and seed; an arm whose fold summary exists is
read, not retrained, and an interrupted arm is continued (`--continue`), so running the same command
again finishes the grid. benchmarks/results/numbered_teeth_<profile>.json is rewritten after every arm.

Arms (fold 0, same steps, batch, learning rate and seed; only the named thing differs):
    factorized_0.2      teeth, factorized head, laterality-correct flips, 20 % of the labels, scratch
    classes_0.2         the same with the classes head (one softmax channel per tooth)
    naive_flips_0.2     the winning head (classes), left-right flips that keep the numbers (as nnU-Net does)
    no_lr_flips_0.2     the winning head, no left-right flips at all
    binary_0.2          the binary task (tooth vs background), for its Dice against the teeth union
    classes_0.8         all of fold 0's training split (0.8 of the labels: 1.0 needs fold 'all')
    rbm_classes_0.2     from the Random Block Masking pretext weights (pretext trained first)
    rbm_classes_0.8
    factorized_0.2_long, classes_0.2_long   the head comparison at twice the steps (1200)
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import click

from rbmnet.evaluation.reports import json_ready
from rbmnet.io.atomic import read_json, write_json
from workdir import convert_once, rbmnet, work_environment

DEFAULT_DATASET = "UFBA425"
RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = {
    # 256 x 256, half-width ResUNet, 600 segmentation steps of batch 4 (20 x 30), lr 1e-3 poly
    "cpu": ["--input-size", "256", "256", "--set", "network.features_per_stage=[16,32,64,128,256]",
            "--set", "pretext.epochs=6", "--set", "pretext.batch_size=8", "--set", "pretext.iterations_per_epoch=37",
            "--set", "pretext.learning_rate=0.001",
            "--set", "segmentation.epochs=20", "--set", "segmentation.iterations_per_epoch=30",
            "--set", "segmentation.batch_size=4", "--set", "segmentation.learning_rate=0.001",
            "--set", 'segmentation.lr_schedule="poly"'],
    # plumbing only (the tests run it): numbers mean nothing
    "smoke": ["--input-size", "64", "128", "--set", "network.features_per_stage=[4,8,16,32,64]",
              "--set", "pretext.epochs=1", "--set", "pretext.batch_size=2", "--set", "pretext.iterations_per_epoch=2",
              "--set", "segmentation.epochs=1", "--set", "segmentation.iterations_per_epoch=2",
              "--set", "segmentation.batch_size=2"],
}
# plan variants: the flip ablation changes augmentation keys, so its models get their own plans name
PLAN_VARIANTS = {"base": [], "naive": ["--set", "augmentation.laterality_swap=false"],
                 "nolr": ["--set", "augmentation.mirror=false"],
                 "long": ["--set", "segmentation.epochs=40"]}  # twice the steps: the heads at a larger budget
# the head the comparison chose (classes_0.2 beat factorized_0.2 on UFBA-425 fold 0; docs/tasks.md)
# trains every other arm, as the flip ablation must use the winning head
HEAD = ["--task", "teeth", "--numbering-head", "classes"]
ARMS = {  # name -> (plan variant, rbmnet_train seg arguments)
    "factorized_0.2": ("base", ["--task", "teeth", "--numbering-head", "factorized", "--fraction", "0.2"]),
    "classes_0.2": ("base", [*HEAD, "--fraction", "0.2"]),
    "naive_flips_0.2": ("naive", [*HEAD, "--fraction", "0.2"]),
    "no_lr_flips_0.2": ("nolr", [*HEAD, "--fraction", "0.2"]),
    "binary_0.2": ("base", ["--task", "binary", "--fraction", "0.2"]),
    "classes_0.8": ("base", [*HEAD, "--fraction", "0.8"]),
    "rbm_classes_0.2": ("base", [*HEAD, "--fraction", "0.2", "--init", "pretext"]),
    "rbm_classes_0.8": ("base", [*HEAD, "--fraction", "0.8", "--init", "pretext"]),
    "factorized_0.2_long": ("long", ["--task", "teeth", "--numbering-head", "factorized", "--fraction", "0.2"]),
    "classes_0.2_long": ("long", [*HEAD, "--fraction", "0.2"]),
}
SMOKE_ARMS = "factorized_0.2,classes_0.2,binary_0.2"
# paired comparisons on the same validation cases: (name, arm a, arm b, metric of a, metric of b)
NUMBERING_METRICS = ("tooth_dice", "identification_accuracy")


def numbering_comparisons(name: str, arm_a: str, arm_b: str, metrics=NUMBERING_METRICS) -> list[tuple]:
    """(name, arm a, arm b, metric of a, metric of b) rows, one per numbering metric."""
    return [(name, arm_a, arm_b, metric, metric) for metric in metrics]


COMPARISONS = [
    *numbering_comparisons("classes minus factorized head", "classes_0.2", "factorized_0.2"),
    *numbering_comparisons("laterality-correct minus naive flips", "classes_0.2", "naive_flips_0.2"),
    *numbering_comparisons("laterality-correct minus no left-right flips", "classes_0.2", "no_lr_flips_0.2"),
    ("teeth union minus binary model", "classes_0.2", "binary_0.2", "binary_dice", "dice"),
    *numbering_comparisons("all of the fold's labels minus 20 %", "classes_0.8", "classes_0.2"),
    *numbering_comparisons("pretext minus scratch", "rbm_classes_0.2", "classes_0.2"),
    *numbering_comparisons("classes minus factorized head, 1200 steps", "classes_0.2_long", "factorized_0.2_long"),
    *numbering_comparisons("factorized head, 1200 minus 600 steps", "factorized_0.2_long", "factorized_0.2"),
    *numbering_comparisons("classes head, 1200 minus 600 steps", "classes_0.2_long", "classes_0.2"),
    *numbering_comparisons("classes at 600 minus factorized at 1200 steps", "classes_0.2", "factorized_0.2_long",
                           metrics=("tooth_dice",)),
    *numbering_comparisons("pretext minus scratch, all of the fold's labels", "rbm_classes_0.8", "classes_0.8"),
]
BOOTSTRAP_SAMPLES = 2000


def plans_name(profile: str, variant: str) -> str:
    return f"{profile}_teeth" if variant == "base" else f"{profile}_teeth_{variant}"


def arm_folder(results: Path, plans: str, arguments: list[str]) -> Path | None:
    """The model folder `rbmnet_train seg` wrote for these arguments (found by its plans name and id parts)."""
    task = arguments[arguments.index("--task") + 1]
    fraction = arguments[arguments.index("--fraction") + 1]
    init = "rbm" if "--init" in arguments else "scratch"
    head = arguments[arguments.index("--numbering-head") + 1] if "--numbering-head" in arguments else None
    tail = f"__teeth-{head}" if task == "teeth" else ""
    folder = results / f"seg__resunet__{init}__frac{float(fraction):g}__{plans}{tail}"
    return folder


def paired_difference(a: dict, b: dict, key_a: str, key_b: str, seed: int = 0) -> dict:
    """Mean per-case difference a - b over the cases both summaries hold, with a 95 % percentile
    bootstrap interval over cases (the cases are the same validation split, so the pairing is exact)."""
    import numpy as np

    values_a = {row["case"]: row[key_a] for row in a["per_case"]}
    values_b = {row["case"]: row[key_b] for row in b["per_case"]}
    cases = sorted(set(values_a) & set(values_b))
    differences = np.array([values_a[c] - values_b[c] for c in cases], dtype=float)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(cases), size=(BOOTSTRAP_SAMPLES, len(cases)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"cases": len(cases), "mean_difference": round(float(differences.mean()), 4),
            "ci95": [round(float(low), 4), round(float(high), 4)],
            "a_better_cases": int((differences > 0).sum()), "b_better_cases": int((differences < 0).sum())}


def comparisons(results_dir: Path, arms: dict) -> list[dict]:
    rows = []
    for name, arm_a, arm_b, key_a, key_b in COMPARISONS:
        if arm_a in arms and arm_b in arms:
            summaries = [read_json(results_dir / arms[arm]["model_id"] / "fold_0" / "validation" / "summary.json")
                         for arm in (arm_a, arm_b)]
            rows.append({"comparison": name, "a": f"{arm_a}.{key_a}", "b": f"{arm_b}.{key_b}",
                         **paired_difference(*summaries, key_a, key_b)})
    return rows


def arm_result(folder: Path) -> dict:
    summary = read_json(folder / "fold_0" / "validation" / "summary.json")
    log = [line for line in (folder / "fold_0" / "training_log.jsonl").read_text().splitlines() if line.strip()]
    result = {"model_id": folder.name, "num_cases": summary["num_cases"], "mean": summary["mean"],
              "std": summary.get("std"), "epochs": len(log)}
    for key in ("pooled_identification_accuracy", "sums"):
        if key in summary:
            result[key] = summary[key]
    post = folder / "postprocessing.json"
    if post.is_file():
        result["postprocessing"] = {k: v for k, v in read_json(post).items() if k in ("chosen", "scores", "params")}
    import json

    entries = [json.loads(line) for line in log]
    result["train_seconds"] = round(sum(e.get("epoch_seconds", 0.0) for e in entries), 1)
    return result


@click.command()
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-d", "--dataset", default=DEFAULT_DATASET, show_default=True)
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="cpu", show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Working folder (default /tmp/rbmnet_numbered_teeth_<profile>).")
@click.option("--arms", default=None, help=f"Comma-separated arms (default: all; smoke: {SMOKE_ARMS}).")
@click.option("-np", "--num-workers", type=int, default=1, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(raw_dir: Path, dataset: str, profile: str, work: Path | None, arms: str | None, num_workers: int,
         json_path: Path | None) -> None:
    work = (work or Path(f"/tmp/rbmnet_numbered_teeth_{profile}")).resolve()
    env = work_environment(work)
    chosen = (arms or (SMOKE_ARMS if profile == "smoke" else ",".join(ARMS))).split(",")
    unknown = [a for a in chosen if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: unknown arm(s) {', '.join(unknown)} (known: {', '.join(ARMS)})")
    path = json_path or RESULTS / f"numbered_teeth_{profile}.json"
    convert_once(raw_dir, work, dataset, env)
    for variant in dict.fromkeys(ARMS[a][0] for a in chosen):
        rbmnet("plan_and_preprocess", "-d", dataset, "-p", plans_name(profile, variant), *PROFILES[profile],
               *PLAN_VARIANTS[variant], env=env)
    results_dir = work / "rbmnet_results" / dataset
    report = read_json(path) if path.is_file() else {}
    report.update({"profile": profile, "dataset": dataset, "work": str(work), "fold": 0,
                   "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                   "plan_args": PROFILES[profile], "arms": report.get("arms", {})})
    for arm in chosen:
        variant, arguments = ARMS[arm]
        plans = plans_name(profile, variant)
        folder = arm_folder(results_dir, plans, arguments)
        if not (folder / "fold_0" / "validation" / "summary.json").is_file():
            if "--init" in arguments and not (results_dir / f"pretext__resunet__{plans}" / "checkpoint_final.pt").is_file():
                resume = ["--continue"] if (results_dir / f"pretext__resunet__{plans}" / "checkpoint_latest.pt").is_file() else []
                rbmnet("train", "pretext", "-d", dataset, "-p", plans, "-np", str(num_workers), *resume, env=env)
            resume = ["--continue"] if (folder / "fold_0" / "checkpoint_latest.pt").is_file() else []
            started = time.perf_counter()
            init = [] if "--init" in arguments else ["--init", "scratch"]
            rbmnet("train", "seg", "0", "-d", dataset, "-p", plans, "-np", str(num_workers), *init, *arguments,
                   *resume, env=env)
            print(f"{arm}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        report["arms"][arm] = {"plans": plans, "arguments": arguments, **arm_result(folder)}
        report["comparisons"] = comparisons(results_dir, report["arms"])
        write_json(path, json_ready(report))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
