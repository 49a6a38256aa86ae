"""The benchmark scripts end to end on a tiny UFBA-like folder (their smoke profiles): label_efficiency.py
converts, plans, runs the grid, and its JSON holds the benchmark table's numbers beside the paper's;
numbered_teeth.py trains its arms and reports each one's fold summary, and a second call retrains nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raw_factory import radiograph, tooth_label, write_png

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, raw: Path, work: Path, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / name), str(raw), "--profile", "smoke", "--work", str(work),
                           "--json", str(report)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def raw(tmp_path) -> Path:
    """15 radiographs with FDI-numbered label maps, as images/ and labels/."""
    folder = tmp_path / "ufba_like"
    for index in range(15):
        label = tooth_label((64, 128), index)
        write_png(folder / "images" / f"cate1-{index:05d}.png", radiograph((64, 128), index, label))
        write_png(folder / "labels" / f"cate1-{index:05d}.png", label)
    return folder


def test_smoke_profile_writes_the_table_and_the_paper_comparison(raw, tmp_path):
    work, report = tmp_path / "work", tmp_path / "report.json"
    first = run_script("label_efficiency.py", raw, work, report)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads(report.read_text())
    table = pd.read_csv(work / "rbmnet_results" / "UFBA425" / "benchmark" / "benchmark.csv")
    assert [c["model"] for c in result["cells"]] == list(table["model"]) == ["U-Net", "RBM + Modified ResUNet"]
    for cell, (_, row) in zip(result["cells"], table.iterrows()):
        assert cell["fraction"] == 0.2 and cell["folds"] == "0"
        for index, metric in enumerate(("dice", "jaccard", "precision", "recall")):
            assert cell[metric]["mean"] == pytest.approx(row[f"{metric}_mean"], abs=1e-12)
            paper = {"U-Net": (.673, .564, .665, .748), "RBM + Modified ResUNet": (.874, .778, .869, .882)}
            assert cell[metric]["paper"] == paper[cell["model"]][index]
            assert cell[metric]["minus_paper"] == pytest.approx(row[f"{metric}_mean"] - paper[cell["model"]][index],
                                                                abs=1e-4)
    assert result["plan"]["input_size"] == [64, 128] and "| U-Net |" in result["table_markdown"]
    # one unit per finished cell, kept for later runs; no scratch Modified ResUNet here, so no differences
    assert [(u["model"], u["fold"], u["seed"]) for u in result["units"]] == [
        ("RBM + Modified ResUNet", 0, None), ("U-Net", 0, None)]
    assert [u["dice"] for u in result["units"]] == pytest.approx(list(table["dice_mean"])[::-1])
    assert all(row["vs_reference_mean"] is None for row in result["pooled"])
    again = run_script("label_efficiency.py", raw, work, report)  # converted once, nothing retrained
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 trained, 0 resumed, 2 skipped" in again.stdout
    assert "rbmnet.cli.convert" not in again.stderr


def test_numbered_teeth_smoke_profile_reports_every_arm(raw, tmp_path):
    work, report = tmp_path / "work", tmp_path / "report.json"
    first = run_script("numbered_teeth.py", raw, work, report)
    assert first.returncode == 0, first.stderr[-2000:]
    arms = json.loads(report.read_text())["arms"]
    assert set(arms) == {"factorized_0.2", "classes_0.2", "binary_0.2"}
    assert arms["classes_0.2"]["model_id"].endswith("__teeth-classes")
    results = work / "rbmnet_results" / "UFBA425"
    for name in ("factorized_0.2", "classes_0.2"):
        summary = json.loads((results / arms[name]["model_id"] / "fold_0" / "validation" / "summary.json").read_text())
        assert arms[name]["mean"] == summary["mean"] and set(summary["mean"]) >= {"tooth_dice", "identification_accuracy"}
        assert arms[name]["postprocessing"]["chosen"] in arms[name]["postprocessing"]["scores"]
    assert set(arms["binary_0.2"]["mean"]) == {"dice", "jaccard", "precision", "recall"}
    again = run_script("numbered_teeth.py", raw, work, report)  # every arm finished: nothing retrained
    assert again.returncode == 0, again.stderr[-2000:]
    assert "rbmnet.cli.train" not in again.stderr and "rbmnet.cli.convert" not in again.stderr


def test_arms_option_keeps_scratch_and_drops_the_rest_of_the_profile():
    sys.path.insert(0, str(BENCHMARKS))
    import click
    from label_efficiency import PROFILES, only_arms

    profile = PROFILES["few_labels"]["benchmark_args"]
    assert only_arms(profile, "grid_encoder", "few_labels") == [
        "-np", "1", "--archs", "resunet", "--seeds", "0,1,2", "--arms", "grid_encoder", "--no-rbm"]
    assert only_arms(profile, "rbm", "few_labels") == ["-np", "1", "--archs", "resunet", "--seeds", "0,1,2"]
    with pytest.raises(click.BadParameter, match="dino not in the few_labels profile's arms"):
        only_arms(profile, "dino,rbm", "few_labels")
