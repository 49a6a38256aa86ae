"""The paper's label-efficiency comparison (its Table 2) on a folder of radiographs, in one command.

    .venv/bin/python benchmarks/label_efficiency.py RAW_DIR [--profile cpu|gpu] [--work DIR] [--label-noise 0,0.5]

RAW_DIR holds images/ and labels/ with matching names (the UFBA-425 layout). The script converts them
once into WORK (default /tmp/rbmnet_label_efficiency_<profile>; never the repository: radiographs are
licensed clinical data), writes the profile's plan, runs `rbmnet_benchmark` (which trains only the
cells that are missing, so an interrupted run is continued by running the same command again), and
writes benchmarks/results/label_efficiency_<profile>.json: every table cell, the paper's number for the
same cell and the difference, the wall time, and the plan that trained the cells.

Profiles:
    cpu  issue 6's reduced grid, about an hour on 2 cores: 256 x 256, half-width networks, pretext 6 x 37
         iterations (batch 8, lr 1e-3), segmentation 8 x 26 iterations (batch 4, lr 1e-3 poly), fold 0,
         fractions 0.1, 0.2, 0.8; the same iterations for every fraction.
    few_labels  issue 16's grid (docs/few_labels.md): 256 x 256, half-width Modified ResUNet, fold 0, fractions
         0.05 and 0.1, seeds 0, 1, 2; the pretext as in cpu, segmentation 10 x 25 iterations of batch 4 (1,000
         images seen) for every arm: scratch, scratch + warm-up (the encoder arms' warm-up alone), RBM full
         transfer, RBM encoder + warm-up, fine-grained masking encoder + warm-up, mean teacher from scratch
         and from the fine-grained encoder. Several hours on 2 cores: run it again to continue (on any
         machine: the report keeps and pools its units).
    smoke  64 x 128, tiny networks, one epoch, U-Net and RBM only: checks the plumbing (the tests run it).
    gpu  the planner's plan for this machine (512 x 512 on UFBA-425, the paper's 80 pretext epochs and
         lr 1e-4), five folds, fractions 0.1, 0.2, 0.3, 0.8 (0.9 needs ten folds: --ten-folds).
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import click
import pandas as pd

from rbmnet.evaluation.reports import json_ready
from rbmnet.io.atomic import read_json, write_json
from pooled_units import pooled_report
from workdir import convert_once, rbmnet, work_environment

DEFAULT_DATASET = "UFBA425"
RESULTS = Path(__file__).resolve().parent / "results"


def cpu256_plan(seg_epochs: int, seg_iterations: int) -> list[str]:
    """The CPU profiles' plan: 256 x 256, half-width networks, pretext 6 x 37 steps of 8 (lr 1e-3),
    segmentation steps of 4 at lr 1e-3 poly; only the segmentation length differs between profiles."""
    return ["--input-size", "256", "256", "--set", "network.features_per_stage=[16,32,64,128,256]",
            "--set", "pretext.epochs=6", "--set", "pretext.batch_size=8",
            "--set", "pretext.iterations_per_epoch=37", "--set", "pretext.learning_rate=0.001",
            "--set", f"segmentation.epochs={seg_epochs}", "--set", f"segmentation.iterations_per_epoch={seg_iterations}",
            "--set", "segmentation.batch_size=4", "--set", "segmentation.learning_rate=0.001",
            "--set", 'segmentation.lr_schedule="poly"']


PROFILES = {
    "cpu": {"plans": "cpu256", "folds": "0", "fractions": "0.1,0.2,0.8",
            "plan_args": cpu256_plan(seg_epochs=8, seg_iterations=26),
            "benchmark_args": ["-np", "1"]},
    "few_labels": {"plans": "few256", "folds": "0", "fractions": "0.05,0.1",
                   "plan_args": cpu256_plan(seg_epochs=10, seg_iterations=25),
                   "benchmark_args": ["-np", "1", "--archs", "resunet", "--arms",
                                      "scratch_warmup,rbm_encoder,grid_encoder,mean_teacher,mean_teacher_grid_encoder",
                                      "--seeds", "0,1,2"]},
    "smoke": {"plans": "smoke", "folds": "0", "fractions": "0.2",  # plumbing only (tests): numbers mean nothing
              "plan_args": ["--input-size", "64", "128", "--set", "network.features_per_stage=[4,8,16,32,64]",
                            "--set", "pretext.epochs=1", "--set", "pretext.batch_size=2",
                            "--set", "pretext.iterations_per_epoch=2", "--set", "segmentation.epochs=1",
                            "--set", "segmentation.iterations_per_epoch=2", "--set", "segmentation.batch_size=2"],
              "benchmark_args": ["-np", "0", "--archs", "unet"]},
    "gpu": {"plans": "plans", "folds": "0,1,2,3,4", "fractions": "0.1,0.2,0.3,0.8",
            "plan_args": ["--probe-batch-size"], "benchmark_args": ["-np", "8"]},
}
# Pokuri et al., Table 2: model -> fraction -> (Dice, Jaccard, precision, recall)
PAPER = {
    "U-Net": {0.1: (.628, .547, .613, .712), 0.2: (.673, .564, .665, .748), 0.3: (.715, .643, .709, .798),
              0.8: (.844, .753, .845, .898), 0.9: (.876, .789, .867, .876)},
    "PSPNet": {0.1: (.787, .648, .744, .835), 0.2: (.824, .700, .835, .812), 0.3: (.779, .638, .757, .802),
               0.8: (.847, .734, .832, .862), 0.9: (.787, .649, .819, .757)},
    "LinkNet": {0.1: (.600, .431, .832, .441), 0.2: (.805, .675, .840, .706), 0.3: (.865, .763, .861, .871),
                0.8: (.899, .818, .909, .892), 0.9: (.893, .807, .909, .880)},
    "Modified ResUNet": {0.1: (.765, .687, .745, .834), 0.2: (.785, .698, .779, .865),
                         0.3: (.814, .736, .807, .827), 0.8: (.867, .794, .857, .857),
                         0.9: (.907, .823, .892, .867)},
    "RBM + Modified ResUNet": {0.1: (.851, .740, .851, .870), 0.2: (.874, .778, .869, .882),
                               0.3: (.881, .786, .874, .889), 0.8: (.892, .806, .878, .907),
                               0.9: (.911, .827, .910, .912)},
}
METRICS = ("dice", "jaccard", "precision", "recall")
POOLED_METRIC = "dice"  # the paired differences are in Dice, the paper's first metric


def only_arms(benchmark_args: list[str], arms: str, profile: str) -> list[str]:
    """The profile's rbmnet_benchmark arguments restricted to `arms` ('rbm' is the RBM full-transfer row)."""
    wanted = [name.strip() for name in arms.split(",") if name.strip()]
    arguments = list(benchmark_args)
    offered = arguments[arguments.index("--arms") + 1].split(",") if "--arms" in arguments else []
    unknown = sorted(set(wanted) - set(offered) - {"rbm"})
    if unknown:
        raise click.BadParameter(f"{','.join(unknown)} not in the {profile} profile's arms "
                                 f"({','.join(['rbm', *offered])})", param_hint="--arms")
    if "--arms" in arguments:
        position = arguments.index("--arms")
        del arguments[position:position + 2]
    few_label = [name for name in wanted if name != "rbm"]
    arguments += ["--arms", ",".join(few_label)] if few_label else []
    return arguments + ([] if "rbm" in wanted else ["--no-rbm"])


def compare_with_paper(table: pd.DataFrame) -> list[dict]:
    cells = []
    for row in table.to_dict("records"):
        paper = PAPER.get(row["model"], {}).get(round(row["fraction"], 2))
        cell = {key: row[key] for key in ("model", "fraction", "label_noise", "num_folds", "folds", "model_id",
                                          "train_seconds_mean", "vs_reference_mean", "vs_reference_ci_low",
                                          "vs_reference_ci_high", "vs_reference_units") if key in row}
        for index, metric in enumerate(METRICS):
            ours = row[f"{metric}_mean"]
            cell[metric] = {"mean": ours, "std": row[f"{metric}_std"],
                            "paper": paper[index] if paper else None,
                            "minus_paper": round(ours - paper[index], 4) if paper and pd.notna(ours) else None}
        cells.append(cell)
    return cells


def pretext_reports(results: Path, plans: str) -> dict:
    """The reconstruction report (SSIM, FSIM, PSNR on the held-out images) of each pretext model of the plan."""
    reports = {}
    for folder in sorted(results.glob(f"pretext__*__{plans}*")):
        summary = folder / "validation" / "summary.json"
        if summary.is_file():
            reports[folder.name] = read_json(summary)["reconstruction"]["mean"]
    return reports


@click.command()
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-d", "--dataset", default=DEFAULT_DATASET, show_default=True, help="Dataset name inside WORK.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="cpu", show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Working folder (default /tmp/rbmnet_label_efficiency_<profile>).")
@click.option("--label-noise", default="0", show_default=True, help="rbmnet_benchmark --label-noise.")
@click.option("--ten-folds", is_flag=True, help="Ten folds, so that fraction 0.9 can be trained too.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Report file (default benchmarks/results/label_efficiency_<profile>.json).")
@click.option("--seeds", default=None, help="rbmnet_benchmark --seeds, instead of the profile's (e.g. one seed "
                                             "first, so that its report is written before the others train).")
@click.option("--fractions", default=None, help="Some of the profile's fractions only (e.g. the smallest first, "
                                                 "across all seeds); the report covers these fractions only, so "
                                                 "write the whole one with --table-only without --fractions.")
@click.option("--arms", default=None, metavar="NAME[,NAME...]",
              help="Some of the profile's arms only (rbmnet_benchmark --arms names, and 'rbm' for RBM full "
                   "transfer; scratch always trains, as every paired difference needs it), e.g. the most "
                   "promising arm across all seeds first.")
@click.option("--table-only", is_flag=True, help="Train nothing: the report of the cells finished so far.")
def main(raw_dir: Path, dataset: str, profile: str, work: Path | None, label_noise: str, ten_folds: bool,
         json_path: Path | None, seeds: str | None, fractions: str | None, arms: str | None,
         table_only: bool) -> None:
    settings = dict(PROFILES[profile])
    if arms is not None:
        settings["benchmark_args"] = only_arms(settings["benchmark_args"], arms, profile)
    if fractions is not None:
        unknown = set(fractions.split(",")) - set(settings["fractions"].split(","))
        if unknown:
            raise click.BadParameter(f"{','.join(sorted(unknown))} not in the {profile} profile's fractions "
                                     f"({settings['fractions']})", param_hint="--fractions")
        settings["fractions"] = fractions
    if seeds is not None:
        arguments = list(settings["benchmark_args"])
        if "--seeds" in arguments:
            arguments[arguments.index("--seeds") + 1] = seeds
        else:
            arguments += ["--seeds", seeds]
        settings["benchmark_args"] = arguments
    if table_only:
        settings["benchmark_args"] = [*settings["benchmark_args"], "--table-only"]
    # the paper's table is tooth vs background, whatever numbering the labels carry
    binary = ["--set", 'segmentation.task="binary"']
    work = (work or Path(f"/tmp/rbmnet_label_efficiency_{profile}")).resolve()
    env = work_environment(work)
    started = time.perf_counter()
    if not table_only:
        convert_once(raw_dir, work, dataset, env)
    folds, fractions = settings["folds"], settings["fractions"]
    split_args = []
    if ten_folds:
        split_args, fractions = ["--num-folds", "10"], fractions + ",0.9"
    if not table_only:
        rbmnet("plan_and_preprocess", "-d", dataset, "-p", settings["plans"], *settings["plan_args"], *binary,
               *split_args, env=env)
    rbmnet("benchmark", "-d", dataset, "-p", settings["plans"], "--folds", folds, "--fractions", fractions,
           "--label-noise", label_noise, *settings["benchmark_args"], env=env)
    output = work / "rbmnet_results" / dataset / "benchmark"
    plan = read_json(work / "rbmnet_preprocessed" / dataset / f"{settings['plans']}.json")
    import torch

    report = {
        "profile": profile, "dataset": dataset, "work": str(work),
        "machine": {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor()
                    or "cpu", "torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_seconds_this_call": round(time.perf_counter() - started, 1),
        "folds": folds, "fractions": fractions, "label_noise": label_noise,
        "benchmark_args": settings["benchmark_args"],
        "plan": {key: plan[key] for key in ("input_size", "network", "pretext", "segmentation", "seed")},
        "cells": compare_with_paper(pd.read_csv(output / "benchmark.csv", dtype={"folds": str})),
        "pretext_models": pretext_reports(work / "rbmnet_results" / dataset, settings["plans"]),
        "table_markdown": (output / "benchmark.md").read_text(),
        "plot": str(output / "dice_vs_fraction.png"),
    }
    path = json_path or RESULTS / f"label_efficiency_{profile}.json"
    report.update(pooled_report(path, report, work / "rbmnet_results" / dataset, POOLED_METRIC))
    write_json(path, json_ready(report))  # missing cells: null, not NaN
    print(report["table_markdown"])
    print(report["pooled_markdown"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
