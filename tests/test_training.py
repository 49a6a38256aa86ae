"""Training stages end to end on a tiny synthetic dataset: learning, resume, fractions, transfer, reports."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rbmnet.cli.train import main as train_cli
from rbmnet.errors import RbmnetError
from rbmnet.training.fraction import training_subset

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    result = CliRunner().invoke(train_cli, list(args), catch_exceptions=False)
    return result


# --- the training fraction -------------------------------------------------------------------------

def test_fraction_subset_is_seeded_nested_and_inside_the_split():
    split = [f"case{i:03d}" for i in range(80)]
    small = training_subset(split, 0.1, 100, seed=1, fold=0)
    large = training_subset(split, 0.3, 100, seed=1, fold=0)
    assert len(small) == 10 and len(large) == 30
    assert set(small) <= set(large) <= set(split)
    assert small == training_subset(split, 0.1, 100, seed=1, fold=0)
    assert small != training_subset(split, 0.1, 100, seed=2, fold=0)


def test_impossible_fraction_says_what_to_do():
    with pytest.raises(RbmnetError, match="more folds"):
        training_subset([f"c{i}" for i in range(80)], 0.9, 100, seed=1, fold=0)


# --- pretext ------------------------------------------------------------------------------------

def test_pretext_learns_to_reconstruct(tiny_env):
    result = run_cli("pretext", "-d", "Tiny", "--epochs", "10", "-np", "0", "--overwrite",
                     "--set", "pretext.iterations_per_epoch=6")
    assert result.exit_code == 0, result.output
    folder = tiny_env / "results" / "Tiny" / "pretext__resunet__plans"
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    reconstruction, masked_input = summary["reconstruction"]["mean"], summary["masked_input"]["mean"]
    # Inside the blocks the masked input holds only the fill value: a model that learned anything
    # about radiographs must beat it there by a wide margin. (Over the whole image a short training
    # cannot: the unmasked part of the input is the noisy target itself, the reconstruction is smooth.)
    assert reconstruction["ssim_masked"] > masked_input["ssim_masked"] + 0.08
    assert reconstruction["psnr_masked"] > masked_input["psnr_masked"] + 5
    assert reconstruction["psnr"] > masked_input["psnr"] + 3
    log = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
    assert len(log) == 10 and min(e["val_loss"] for e in log[-3:]) < 0.5 * log[0]["val_loss"]
    assert (folder / "progress.png").stat().st_size > 0
    assert (folder / "validation" / "reconstructions.png").stat().st_size > 0
    checkpoint = torch.load(folder / "checkpoint_final.pt", weights_only=True)
    assert checkpoint["epoch"] == 10 and checkpoint["meta"]["stage"] == "pretext"


def _train_command(*args):
    return [sys.executable, "-c", "from rbmnet.cli.train import main; main()", *args]


def test_sigkill_then_continue_matches_an_uninterrupted_run(tiny_env, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["pretext", "-d", "Tiny", "--epochs", "5", "-np", "0", "--overwrite"]
    # reference: uninterrupted, under another plans name so the folders differ
    subprocess.run(_train_command(*args, "--seed", "5"), env=env, check=True, capture_output=True, cwd=tmp_path)
    reference = torch.load(tiny_env / "results/Tiny/pretext__resunet__plans__seed5/checkpoint_final.pt",
                           weights_only=True)
    # interrupted: SIGKILL once two epochs are logged, then resume
    run = subprocess.Popen(_train_command(*args, "--seed", "5", "--set", "pretext.validation_fraction=0.1"),
                           env={**env, "RBMNET_RESULTS": str(tmp_path / "killed")}, cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "killed" / "Tiny" / "pretext__resunet__plans__seed5"
    deadline = time.time() + 300
    while time.time() < deadline:  # checkpoints are renamed into place, so reading one mid-run is safe
        latest = folder / "checkpoint_latest.pt"
        if latest.exists() and torch.load(latest, weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    latest = torch.load(folder / "checkpoint_latest.pt", weights_only=True)
    assert 2 <= latest["epoch"] < 5 and not (folder / "checkpoint_final.pt").exists(), "the kill must land mid-run"
    resumed = subprocess.run(_train_command("pretext", "-d", "Tiny", "--epochs", "5", "-np", "0", "--seed", "5",
                                            "--continue", "--set", "pretext.validation_fraction=0.1"),
                             env={**env, "RBMNET_RESULTS": str(tmp_path / "killed")}, cwd=tmp_path,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = torch.load(folder / "checkpoint_final.pt", weights_only=True)
    assert len(final["log"]) == 5
    for name, tensor in reference["network"].items():
        assert torch.allclose(tensor.float(), final["network"][name].float(), atol=1e-5), name
    reference_state = reference["optimizer"]["state"]
    for key, state in final["optimizer"]["state"].items():
        assert int(state["step"]) == int(reference_state[key]["step"])
        assert torch.allclose(state["exp_avg"], reference_state[key]["exp_avg"], atol=1e-6)


def test_existing_run_needs_continue_or_overwrite(tiny_env):
    assert run_cli("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite").exit_code == 0
    result = CliRunner().invoke(train_cli, ["pretext", "-d", "Tiny", "--epochs", "1", "-np", "0"])
    assert result.exit_code == 2
    assert "--continue" in result.output and "--overwrite" in result.output


# --- segmentation --------------------------------------------------------------------------------

def test_segmentation_from_pretext_reports_consistent_metrics(tiny_env):
    pretext = run_cli("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite")
    assert pretext.exit_code == 0, pretext.output
    assert "folds start from scratch unless asked: rbmnet_train seg FOLD --init pretext" in pretext.output
    result = run_cli("seg", "0", "-d", "Tiny", "-np", "0", "--fraction", "0.4", "--overwrite", "--init", "pretext")
    assert result.exit_code == 0, result.output
    assert "loaded" in result.output and "skipped 2" in result.output and "output head" in result.output
    model = tiny_env / "results" / "Tiny" / "seg__resunet__rbm__frac0.4__plans"
    fold = model / "fold_0"
    cases = json.loads((fold / "training_cases.json").read_text())
    splits = json.loads((tiny_env / "pre" / "Tiny" / "splits_final.json").read_text())
    assert set(cases["cases"]) <= set(splits[0]["train"]) and len(cases["cases"]) == 6  # round(0.4 * 15)
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    per_case = summary["per_case"]
    assert {c["case"] for c in per_case} == set(splits[0]["val"])
    assert summary["mean"]["dice"] == pytest.approx(np.mean([c["dice"] for c in per_case]))
    assert summary["median"]["recall"] == pytest.approx(np.median([c["recall"] for c in per_case]))
    from PIL import Image

    for case in per_case:  # masks come back at the original resolution of the raw image
        mask = Image.open(fold / "validation" / f"{case['case']}.png")
        raw = Image.open(tiny_env / "raw" / "Tiny" / "imagesTr" / f"{case['case']}.png")
        assert mask.size == raw.size
    assert (fold / "validation" / "summary.csv").is_file()
    assert (fold / "validation_examples.png").is_file()  # the figure stays out of the mask folder
    assert {p.stem for p in (fold / "validation").glob("*.png")} == set(splits[0]["val"])
    assert summary["fraction"] == 0.4 and summary["model_id"] == model.name


def test_scratch_and_pretext_models_do_not_share_a_folder(tiny_env):
    result = run_cli("seg", "1", "-d", "Tiny", "-np", "0", "--init", "scratch", "--epochs", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "initialised from scratch" in result.output
    assert (tiny_env / "results" / "Tiny" / "seg__resunet__scratch__frac0.2__plans" / "fold_1").is_dir()


def test_two_folds_give_a_crossvalidation_summary(tiny_env):
    for fold in ("0", "1"):
        assert run_cli("seg", fold, "-d", "Tiny", "-np", "0", "--init", "scratch", "--epochs", "1",
                       "--fraction", "0.4", "--overwrite").exit_code == 0
    model = tiny_env / "results" / "Tiny" / "seg__resunet__scratch__frac0.4__plans"
    crossval = json.loads((model / "crossval_summary.json").read_text())
    fold_dice = [json.loads((model / f"fold_{k}" / "validation" / "summary.json").read_text())["mean"]["dice"]
                 for k in (0, 1)]
    assert crossval["mean"]["dice"] == pytest.approx(np.mean(fold_dice))
    assert (model / "crossval_summary.csv").is_file()


def test_segmentation_errors_are_one_line(tiny_env):
    runner = CliRunner()
    result = runner.invoke(train_cli, ["seg", "0", "-d", "Tiny", "--fraction", "0.95", "-np", "0", "--init", "scratch"])
    assert result.exit_code == 2 and "more folds" in result.output and "Traceback" not in result.output
    result = runner.invoke(train_cli, ["seg", "7", "-d", "Tiny", "-np", "0", "--init", "scratch"])
    assert result.exit_code == 2 and "fold 7 does not exist" in result.output
    result = runner.invoke(train_cli, ["seg", "0", "-d", "Nope"])
    assert result.exit_code == 2 and "unknown dataset 'Nope'" in result.output


def test_pretrained_weights_with_another_plan_are_refused(tiny_env, tmp_path):
    from rbmnet.networks import build_network
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
    from rbmnet.planning.plan import NetworkConfig, Plan
    from rbmnet.model.checkpoint import save_checkpoint
    from rbmnet.training.initialisation import load_pretrained

    other = Plan(dataset_name="Tiny", network=NetworkConfig(features_per_stage=[4, 8, 16, 32, 64]))
    network = build_network(other.network, 1, input_channels=NETWORK_INPUT_CHANNELS)
    optimizer = torch.optim.Adam(network.parameters())
    path = tmp_path / "other.pt"
    save_checkpoint(path, network, optimizer, 1, [], other.to_dict(), {}, {})
    target = build_network(NetworkConfig(features_per_stage=[8, 16, 32, 64, 128]), 1,
                           input_channels=NETWORK_INPUT_CHANNELS)
    with pytest.raises(RbmnetError, match="features_per_stage"):
        load_pretrained(target, path, {**other.to_dict()["network"], "features_per_stage": [8, 16, 32, 64, 128]})
    # another head size: loads everything but the head
    same = build_network(other.network, 3, input_channels=NETWORK_INPUT_CHANNELS)
    report = load_pretrained(same, path, other.to_dict()["network"])
    assert report.loaded == len([k for k in network.state_dict() if not k.startswith("head.")])
    assert set(report.skipped) == {k for k in network.state_dict() if k.startswith("head.")}
    for name, tensor in network.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(tensor, same.state_dict()[name])
    old = other.to_dict()  # a pretext checkpoint written while network.input_channels was a plan key
    old["network"]["input_channels"] = 2
    save_checkpoint(path, network, optimizer, 1, [], old, {}, {})
    with pytest.warns(UserWarning, match="network.input_channels is no longer used"):
        assert load_pretrained(same, path, other.to_dict()["network"]).loaded == report.loaded
