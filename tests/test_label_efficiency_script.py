"""benchmarks/label_efficiency.py end to end on a tiny UFBA-like folder (its smoke profile): it converts,
plans, runs the grid, and its JSON holds the benchmark table's numbers beside the paper's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raw_factory import radiograph, tooth_label, write_png

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "label_efficiency.py"


def run_script(raw: Path, work: Path, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(raw), "--profile", "smoke", "--work", str(work),
                           "--json", str(report)], capture_output=True, text=True, timeout=300)


def test_smoke_profile_writes_the_table_and_the_paper_comparison(tmp_path):
    raw = tmp_path / "ufba_like"
    for index in range(15):
        label = tooth_label((64, 128), index)
        write_png(raw / "images" / f"cate1-{index:05d}.png", radiograph((64, 128), index, label))
        write_png(raw / "labels" / f"cate1-{index:05d}.png", label)
    work, report = tmp_path / "work", tmp_path / "report.json"
    first = run_script(raw, work, report)
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
    again = run_script(raw, work, report)  # converted once, nothing retrained
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 trained, 0 resumed, 2 skipped" in again.stdout
    assert "rbmnet.cli.convert" not in again.stderr
