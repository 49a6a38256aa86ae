"""A finished benchmark cell is reused only under the settings that trained it: other settings are reported
(and kept out of the table) or, with --retrain-changed, trained again; the same for the pretext model."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rbmnet.benchmarking.recipe import (PRETEXT_SECTIONS, RBM_SECTIONS, SEGMENTATION_SECTIONS, checkpoint_changes,
                                        describe_changes, recipe_changes)
from rbmnet.cli.benchmark import main as benchmark_cli
from rbmnet.model.checkpoint import FINAL
from training_factory import make_tiny_dataset, pointed_at

DATASET = "Recipe"
TINY = ["--epochs", "1", "--batch-size", "2", "-np", "0",
        "--set", "segmentation.iterations_per_epoch=2", "--set", "network.features_per_stage=[4,8,16,32,64]",
        "--set", "pretext.epochs=1", "--set", "pretext.iterations_per_epoch=2", "--set", "pretext.batch_size=2"]
GRID = ["-d", DATASET, "--archs", "unet", "--fractions", "0.5", "--folds", "0", *TINY]  # U-Net and RBM cells
UNET = "seg__unet__scratch__frac0.5__plans"
RBM = "seg__resunet__rbm__frac0.5__plans"
PRETEXT = "pretext__resunet__plans"


def run_benchmark(*args: str):
    return CliRunner().invoke(benchmark_cli, list(args), catch_exceptions=False)


def mtimes(results: Path) -> dict[str, int]:
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in sorted(results.rglob(FINAL))}


def epochs_logged(fold: Path) -> int:
    return len((fold / "training_log.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    with pointed_at(make_tiny_dataset(root, DATASET, num_labeled=10, num_unlabeled=2)):
        first = run_benchmark(*GRID)
        assert first.exit_code == 0, first.output
        assert "2 trained, 0 resumed, 0 skipped" in first.output
        yield root / "results" / DATASET


def test_recipe_changes_ignore_runtime_keys_and_list_vs_tuple():
    plan = {"input_size": [64, 128], "seed": 1, "network": {"architecture": "unet", "features_per_stage": [4, 8]},
            "segmentation": {"epochs": 1, "learning_rate": 0.01}, "pretext": {"epochs": 3},
            "augmentation": {"mirror": True, "num_workers": 2, "data_path": "auto"}, "derivation": {"x": 1}}
    same = json.loads(json.dumps(plan))
    same.update(input_size=(64, 128), derivation={"x": 2})
    same["augmentation"].update(num_workers=8, data_path="device")
    assert recipe_changes(plan, same, SEGMENTATION_SECTIONS) == []
    other = json.loads(json.dumps(plan))
    other["segmentation"]["epochs"] = 5
    other["pretext"]["epochs"] = 9
    other["augmentation"]["mirror"] = False
    assert recipe_changes(plan, other, SEGMENTATION_SECTIONS) == [
        "augmentation.mirror: True -> False", "segmentation.epochs: 1 -> 5"]
    assert recipe_changes(plan, other, PRETEXT_SECTIONS) == [
        "augmentation.mirror: True -> False", "pretext.epochs: 3 -> 9"]
    assert describe_changes([f"k{i}" for i in range(6)]) == "k0; k1; k2; k3; and 2 more"


def test_a_key_added_since_a_checkpoint_counts_as_its_default():
    """A cell trained before segmentation.semi_supervised existed was trained without it: not changed."""
    plan = {"segmentation": {"epochs": 1, "semi_supervised": "off", "warmup_epochs": 0},
            "masking": {"scheme": "random_blocks"}}
    older = {"segmentation": {"epochs": 1}}
    assert recipe_changes(older, plan, RBM_SECTIONS) == []
    plan["segmentation"]["semi_supervised"] = "mean_teacher"
    assert recipe_changes(older, plan, RBM_SECTIONS) == ["segmentation.semi_supervised: 'off' -> 'mean_teacher'"]


def test_where_a_fold_starts_by_default_never_strands_a_trained_model(tmp_path):
    """segmentation.initialisation only says where a fold starts without --init (the model id names the
    start taken): a cell, another fold of a model, or a continued run trained when the default was
    'pretext' still fit a plan that says 'scratch'; a key that changes the model still counts."""
    from rbmnet.training.continuation import check_model_plan, plan_differences

    then = {"dataset_name": "D", "segmentation": {"epochs": 1, "initialisation": "pretext"}}
    now = {"dataset_name": "D", "segmentation": {"epochs": 1, "initialisation": "scratch"}}
    assert recipe_changes(then, now, RBM_SECTIONS) == []
    assert plan_differences(then, now) == []
    model = tmp_path / "seg__resunet__rbm__frac0.2__plans"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / FINAL).write_bytes(b"")
    (model / "plans.json").write_text(json.dumps(then))
    check_model_plan(model, model / "fold_1", now, "seg")  # no error: fold 1 may join fold 0
    changed = {"dataset_name": "D", "segmentation": {"epochs": 1, "initialisation": "scratch", "transfer": "encoder"}}
    assert plan_differences(then, changed) == ['segmentation.transfer: "full" -> "encoder"']


def test_unreadable_checkpoint_counts_as_changed(tmp_path):
    empty = tmp_path / FINAL
    empty.write_bytes(b"")
    changes = checkpoint_changes(empty, {}, SEGMENTATION_SECTIONS)
    assert len(changes) == 1 and str(empty) in changes[0] and "cannot load checkpoint" in changes[0]


def test_other_epochs_are_reported_and_kept_out_of_the_table(results):
    before = mtimes(results)
    result = run_benchmark(*GRID, "--epochs", "2")  # the last --epochs wins
    assert result.exit_code == 1
    assert "segmentation.epochs: 1 -> 2" in result.output and "--retrain-changed" in result.output
    assert "0 trained, 0 resumed, 0 skipped (already trained), 2 failed" in result.output
    assert "pretext: finished model found, reused" in result.output  # its own settings did not change
    assert mtimes(results) == before  # nothing retrained, nothing deleted
    markdown = (results / "benchmark" / "benchmark.md").read_text()
    assert "| U-Net | – |" in markdown and "| RBM + Modified ResUNet | – |" in markdown
    assert "2 trained cell(s) left out" in markdown
    same = run_benchmark(*GRID)  # the settings that trained them: reused and tabled again
    assert same.exit_code == 0 and "0 trained, 0 resumed, 2 skipped" in same.output
    assert "left out" not in (results / "benchmark" / "benchmark.md").read_text()


def test_retrain_changed_trains_only_the_changed_cells(results):
    before = mtimes(results)
    result = run_benchmark(*GRID, "--no-rbm", "--epochs", "2", "--retrain-changed")
    assert result.exit_code == 0, result.output
    assert "1 trained (1 of them retrained: settings changed)" in result.output
    assert "retraining (settings changed: segmentation.epochs: 1 -> 2) U-Net" in result.output
    after = mtimes(results)
    assert after[f"{UNET}/fold_0/{FINAL}"] > before[f"{UNET}/fold_0/{FINAL}"]
    assert {k: v for k, v in after.items() if not k.startswith(UNET)} == \
        {k: v for k, v in before.items() if not k.startswith(UNET)}
    assert epochs_logged(results / UNET / "fold_0") == 2
    again = run_benchmark(*GRID, "--no-rbm", "--epochs", "2")
    assert again.exit_code == 0 and "1 skipped" in again.output


def test_changed_pretext_settings_block_rbm_cells_until_retrained(results):
    pretext_before = (results / PRETEXT / FINAL).stat().st_mtime_ns
    rbm_final = (results / RBM / "fold_0" / FINAL).stat().st_mtime_ns
    rbm_only = [*GRID, "--set", "pretext.epochs=2"]
    refused = run_benchmark(*rbm_only)
    assert refused.exit_code == 1
    assert "FAILED pretext:" in refused.output and "pretext.epochs: 1 -> 2" in refused.output
    assert (results / PRETEXT / FINAL).stat().st_mtime_ns == pretext_before
    assert (results / RBM / "fold_0" / FINAL).stat().st_mtime_ns == rbm_final  # not trained from the old model
    retrained = run_benchmark(*rbm_only, "--retrain-changed")
    assert retrained.exit_code == 0, retrained.output
    assert f"pretext: retraining (settings changed) {PRETEXT}" in retrained.output
    assert "2 trained (2 of them retrained: settings changed)" in retrained.output  # RBM, and U-Net back to 1 epoch
    assert (results / PRETEXT / FINAL).stat().st_mtime_ns > pretext_before
    assert epochs_logged(results / PRETEXT) == 2
    assert (results / RBM / "fold_0" / FINAL).stat().st_mtime_ns > rbm_final
    again = run_benchmark(*rbm_only)
    assert again.exit_code == 0 and "2 skipped" in again.output


def test_rbm_cell_older_than_its_pretext_model_is_changed(results):
    pretext = results / PRETEXT / FINAL
    later = (results / RBM / "fold_0" / FINAL).stat().st_mtime_ns + 10**9
    os.utime(pretext, ns=(later, later))  # as if the pretext model was trained again by hand
    result = run_benchmark(*GRID, "--set", "pretext.epochs=2", "--table-only")
    assert result.exit_code == 0
    assert "1 trained cell(s) left out" in result.output
    assert "| RBM + Modified ResUNet | – |" in result.output and "| U-Net | – |" not in result.output
