"""rbmnet_benchmark on a tiny synthetic dataset: the grid trains each cell once, resumes an interrupted
one, refuses a grid the splits cannot serve before training, keeps going past a failing cell, its
table holds exactly the numbers of the fold summaries, and teeth grids (--task teeth) keep their own
cells and metrics. (Network output shapes: test_networks.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from rbmnet.benchmarking import grid
from rbmnet.benchmarking.table import format_cell
from rbmnet.cli.benchmark import main as benchmark_cli
from rbmnet.evaluation.numbering_metrics import TEETH_METRICS
from rbmnet.io.atomic import write_json
from rbmnet.model.checkpoint import FINAL, LATEST
from training_factory import make_tiny_dataset

DATASET = "Bench"
TINY_TRAINING = ["--epochs", "1", "--batch-size", "2", "-np", "0",
                 "--set", "segmentation.iterations_per_epoch=2",
                 "--set", "network.features_per_stage=[4,8,16,32,64]",
                 "--set", "pretext.epochs=1", "--set", "pretext.iterations_per_epoch=2",
                 "--set", "pretext.batch_size=2"]
# U-Net and RBM + Modified ResUNet, clean and fully noisy masks, two folds: 8 cells and a pretext model
GRID = ["-d", DATASET, "--archs", "unet", "--fractions", "0.5", "--folds", "0,1", "--label-noise", "0,1",
        *TINY_TRAINING]


def run_benchmark(*args: str):
    return CliRunner().invoke(benchmark_cli, list(args), catch_exceptions=False)


def final_checkpoints(results: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(results.rglob(FINAL))}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The tiny dataset and a first benchmark run; the environment stays pointed at it for the module."""
    root = tmp_path_factory.mktemp("bench")
    env = make_tiny_dataset(root, DATASET, num_labeled=12, num_unlabeled=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only adds OpenMP overhead (x5 on a busy machine)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            first = run_benchmark(*GRID)
            yield root, first
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def results(bench) -> Path:
    return bench[0] / "results" / DATASET


def test_first_run_trains_pretext_and_every_cell(bench, results):
    _, first = bench
    assert first.exit_code == 0, first.output
    assert "8 trained, 0 resumed, 0 skipped" in first.output
    assert (results / "pretext__resunet__plans" / FINAL).is_file()
    for model_id in ("seg__unet__scratch__frac0.5__plans", "seg__resunet__rbm__frac0.5__plans",
                     "seg__unet__scratch__frac0.5__plans__noise1", "seg__resunet__rbm__frac0.5__plans__noise1"):
        for fold in (0, 1):
            assert (results / model_id / f"fold_{fold}" / "validation" / "summary.json").is_file(), model_id
    out = results / "benchmark"
    assert {p.name for p in out.iterdir()} >= {"benchmark.md", "benchmark.csv", "dice_vs_fraction.png"}
    markdown = (out / "benchmark.md").read_text()
    assert markdown in first.output  # printed at the end
    assert "| U-Net |" in markdown and "| RBM + Modified ResUNet |" in markdown and "| PSPNet |" not in markdown
    assert "### Label noise 0 (" in markdown and "### Label noise 1 (" in markdown


def test_second_run_retrains_nothing(bench, results):
    before = final_checkpoints(results)
    assert len(before) == 9  # 8 cells and the pretext model
    again = run_benchmark(*GRID)
    assert again.exit_code == 0, again.output
    assert "0 trained, 0 resumed, 8 skipped" in again.output
    assert again.output.count("skipped U-Net") == 4 and "already trained" in again.output
    assert "pretext: " not in again.output  # not even looked at: no RBM cell needed it
    assert final_checkpoints(results) == before


def test_table_only_trains_nothing_and_writes_the_same_table(bench, results, tmp_path):
    result = run_benchmark(*GRID, "--table-only", "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "[1/" not in result.output and "cells:" not in result.output  # no cell looked at
    assert (tmp_path / "benchmark.md").read_text() == (results / "benchmark" / "benchmark.md").read_text()


def test_interrupted_cell_is_resumed_and_the_others_untouched(bench, results):
    fold = results / "seg__resunet__rbm__frac0.5__plans" / "fold_1"
    summary_before = json.loads((fold / "validation" / "summary.json").read_text())
    (fold / FINAL).unlink()  # as if killed after its last epoch's checkpoint_latest
    (fold / "validation" / "summary.json").unlink()
    others = final_checkpoints(results)
    result = run_benchmark(*GRID)
    assert result.exit_code == 0, result.output
    assert "0 trained, 1 resumed, 7 skipped" in result.output
    assert "resuming RBM + Modified ResUNet, fraction 0.5, fold 1" in result.output
    assert (fold / FINAL).is_file() and (fold / LATEST).is_file()
    summary_after = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary_after["mean"] == summary_before["mean"]  # the same weights, validated again
    assert {p: t for p, t in final_checkpoints(results).items() if p != fold / FINAL} == others


def test_table_numbers_equal_the_fold_summaries(bench, results):
    table = pd.read_csv(results / "benchmark" / "benchmark.csv")
    assert len(table) == 4  # (U-Net, RBM) x noise (0, 1) at one fraction
    assert set(zip(table["model"], table["label_noise"])) == {
        ("U-Net", 0.0), ("U-Net", 1.0), ("RBM + Modified ResUNet", 0.0), ("RBM + Modified ResUNet", 1.0)}
    markdown = (results / "benchmark" / "benchmark.md").read_text()
    for _, row in table.iterrows():
        model = results / row["model_id"]
        assert row["num_folds"] == 2 and row["folds"] == "0;1"
        logs = [(model / f"fold_{k}" / "training_log.jsonl").read_text().splitlines() for k in (0, 1)]
        assert row["train_seconds_mean"] == pytest.approx(
            np.mean([sum(json.loads(line)["epoch_seconds"] for line in log) for log in logs]), abs=1e-9)
        fold_means = [json.loads((model / f"fold_{k}" / "validation" / "summary.json").read_text())["mean"]
                      for k in (0, 1)]
        crossval = json.loads((model / "crossval_summary.json").read_text())
        for metric in ("dice", "jaccard", "precision", "recall"):
            values = [means[metric] for means in fold_means]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row[f"{metric}_std"] == pytest.approx(np.std(values), abs=1e-12)
            assert row[f"{metric}_mean"] == pytest.approx(crossval["mean"][metric], abs=1e-12)
            assert row[f"{metric}_std"] == pytest.approx(crossval["std"][metric], abs=1e-12)
        assert f"{format_cell(row, 2)} |" in markdown
        assert f"{row['dice_mean']:.3f}".removeprefix("0") in format_cell(row, 2)
    noise_section = markdown[markdown.index("### Dice by label noise"):]
    assert "| model | 0.5 @ noise 0 | 0.5 @ noise 1 |" in noise_section
    for model, rows in table.groupby("model"):
        dice = [f"{d:.3f}".removeprefix("0") for d in rows.sort_values("label_noise")["dice_mean"]]
        assert f"| {model} | {dice[0]} | {dice[1]} |" in noise_section


def test_noisy_cells_trained_on_corrupted_masks_are_evaluated_on_clean_ones(bench, results):
    root, _ = bench
    fold = results / "seg__unet__scratch__frac0.5__plans__noise1" / "fold_0"
    cases = json.loads((fold / "training_cases.json").read_text())
    assert cases["label_noise"] == 1.0 and cases["noisy_label_cases"] == cases["cases"]
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert {row["case"] for row in summary["per_case"]} == set(cases["validation_cases"])
    for row in summary["per_case"]:  # the references are the raw (clean) label files
        raw = np.array(Image.open(root / "raw" / DATASET / "labelsTr" / f"{row['case']}.png"))
        assert row["tp"] + row["fn"] == int((raw > 0).sum())
    clean = json.loads((results / "seg__unet__scratch__frac0.5__plans" / "fold_0" / "training_cases.json").read_text())
    assert clean["label_noise"] == 0.0 and clean["noisy_label_cases"] == [] and clean["cases"] == cases["cases"]
    # same seed, cases and batches: only the corrupted targets can make the training losses differ
    losses = [[json.loads(line)["train_loss"] for line in (folder / "training_log.jsonl").read_text().splitlines()]
              for folder in (fold, results / "seg__unet__scratch__frac0.5__plans" / "fold_0")]
    assert losses[0] != losses[1]


def test_fraction_the_splits_cannot_serve_fails_before_any_training(bench, results):
    result = run_benchmark("-d", DATASET, "--archs", "linknet", "--no-rbm", "--fractions", "0.5,0.9",
                           "--folds", "0", *TINY_TRAINING)
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert "0.9" in message and "--num-folds 10 --overwrite-splits" in message and "nothing was trained" in message
    assert not list(results.glob("seg__linknet__*"))
    missing_fold = run_benchmark("-d", DATASET, "--archs", "linknet", "--no-rbm", "--fractions", "0.5",
                                 "--folds", "7", *TINY_TRAINING)
    assert missing_fold.exit_code == 2 and "fold 7 does not exist" in missing_fold.output


def test_bad_options_are_one_line_errors(bench):
    for args, expected in ((["--archs", "vgg"], "unknown architecture(s) vgg"),
                           (["--fractions", "0.5,abc"], "--fractions expects"),
                           (["--fractions", "1.5"], "(0, 1]"),
                           (["--label-noise", "2"], "label noise")):
        result = run_benchmark("-d", DATASET, *args, "--folds", "0", *TINY_TRAINING)
        assert result.exit_code == 2 and expected in result.output, result.output


def test_a_failing_cell_is_reported_and_the_others_kept(bench, results, monkeypatch, tmp_path):
    """Cells are faked (no training): linknet writes known fold means and its plan, one pspnet cell raises."""
    dice = {(0.25, 0): 0.8, (0.25, 1): 0.6, (0.5, 0): 0.9, (0.5, 1): 0.7}

    def fake_run_cell(cell, inputs, state, spec):
        if cell.model.architecture == "pspnet" and cell.fraction == 0.25 and cell.fold == 1:
            raise RuntimeError("CUDA out of memory\nsecond line")
        folder = grid.cell_folder(spec.dataset_name, spec.plans_name, cell)
        folder.mkdir(parents=True)
        torch.save({"plan": grid.cell_plan(cell, inputs)}, folder / FINAL)  # what the table's check reads
        value = dice[(cell.fraction, cell.fold)]
        write_json(folder / "validation" / "summary.json",
                   {"mean": {"dice": value, "jaccard": value / 2, "precision": 1.0, "recall": value}})

    monkeypatch.setattr(grid, "run_cell", fake_run_cell)
    output = tmp_path / "table"
    result = run_benchmark("-d", DATASET, "--archs", "pspnet,linknet", "--no-rbm", "--fractions", "0.25,0.5",
                           "--folds", "0,1", "--output", str(output), *TINY_TRAINING)
    assert result.exit_code == 1
    assert "7 trained, 0 resumed, 0 skipped (already trained), 1 failed" in result.output
    assert "1 of 8 cells failed" in result.output
    assert "failed: PSPNet, fraction 0.25, fold 1: RuntimeError: CUDA out of memory" in result.output
    markdown = (output / "benchmark.md").read_text()
    assert "| PSPNet | .800 / .400 / 1.000 / .800 (n=1) | .800±.100 / .400±.050 / 1.000±.000 / .800±.100 |" in markdown
    assert "| LinkNet | .700±.100 / .350±.050 / 1.000±.000 / .700±.100 |" in markdown
    assert markdown.index("| PSPNet |") < markdown.index("| LinkNet |")  # the paper's row order
    table = pd.read_csv(output / "benchmark.csv")
    assert list(table["num_folds"]) == [1, 2, 2, 2]
    assert (output / "dice_vs_fraction.png").stat().st_size > 0


def test_teeth_grid_reports_the_teeth_metrics_and_never_shares_cells_with_binary(bench, results, tmp_path):
    """--task teeth on the FDI-numbered synthetic set: its own model ids, the task's metrics in the table;
    a binary grid of the same cells afterwards trains its own cells and leaves the teeth ones alone."""
    grid_args = ["-d", DATASET, "--archs", "unet", "--no-rbm", "--fractions", "0.25", "--folds", "0",
                 *TINY_TRAINING]
    teeth_out, binary_out = tmp_path / "teeth", tmp_path / "binary"
    teeth = run_benchmark(*grid_args, "--task", "teeth", "--output", str(teeth_out))
    assert teeth.exit_code == 0, teeth.output
    assert "1 trained, 0 resumed, 0 skipped" in teeth.output
    teeth_id = "seg__unet__scratch__frac0.25__plans__teeth-classes"  # the default head
    fold = results / teeth_id / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    table = pd.read_csv(teeth_out / "benchmark.csv")
    assert list(table["model_id"]) == [teeth_id]
    row = table.iloc[0]
    for metric in TEETH_METRICS:
        assert 0.0 <= row[f"{metric}_mean"] <= 1.0
        assert row[f"{metric}_mean"] == pytest.approx(summary["mean"][metric], abs=1e-12)
        assert row[f"{metric}_std"] == 0.0  # one fold
    assert not any(column.startswith(("dice_", "jaccard_")) for column in table.columns)
    markdown = (teeth_out / "benchmark.md").read_text()
    assert "(plan plans, task teeth (teeth-classes))" in markdown
    assert "tooth_dice / identification_accuracy / wrong_side_rate / binary_dice on each fold's" in markdown
    assert f"| U-Net | {format_cell(row, 1, TEETH_METRICS)} |" in markdown
    assert (teeth_out / "dice_vs_fraction.png").stat().st_size > 0

    teeth_checkpoint = (fold / FINAL).stat().st_mtime_ns
    binary = run_benchmark(*grid_args, "--task", "binary", "--output", str(binary_out))
    assert binary.exit_code == 0, binary.output
    assert "1 trained, 0 resumed, 0 skipped" in binary.output  # the teeth cell is not taken for it
    binary_table = pd.read_csv(binary_out / "benchmark.csv")
    assert list(binary_table["model_id"]) == ["seg__unet__scratch__frac0.25__plans"]
    assert "dice_mean" in binary_table.columns and "tooth_dice_mean" not in binary_table.columns
    assert "task teeth" not in (binary_out / "benchmark.md").read_text()
    assert (fold / FINAL).stat().st_mtime_ns == teeth_checkpoint

    again = run_benchmark(*grid_args, "--task", "teeth", "--output", str(teeth_out))
    assert again.exit_code == 0, again.output
    assert "0 trained, 0 resumed, 1 skipped" in again.output  # its own finished cell, reused


def test_numbering_head_needs_the_teeth_task(bench):
    result = run_benchmark("-d", DATASET, "--archs", "unet", "--no-rbm", "--fractions", "0.25", "--folds", "0",
                           "--numbering-head", "classes", *TINY_TRAINING)
    assert result.exit_code == 2
    assert "--numbering-head applies to the teeth task" in result.output and "[1/" not in result.output
