"""A seeded grid's report keeps its numbers per unit, adds the units a later run (on any machine) finishes,
keeps the others, and pools them all: per arm the mean paired difference to scratch with a 95 % interval
over units and cases (benchmarks/pooled_units.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pooled_units import local_units, merge_units, pooled, pooled_report, units_from_cells  # noqa: E402

SCRATCH, GRID = "Modified ResUNet", "fine-grained masking, encoder + warm-up"
CASES = [f"case{i}" for i in range(20)]


def write_summary(results: Path, model_id: str, dice: np.ndarray) -> None:
    folder = results / model_id / "fold_0" / "validation"
    folder.mkdir(parents=True)
    per_case = [{"case": case, "dice": float(value)} for case, value in zip(CASES, dice)]
    (folder / "summary.json").write_text(json.dumps({"mean": {"dice": float(dice.mean())}, "per_case": per_case}))


@pytest.fixture
def grid(tmp_path):
    """Seeds 0 and 1 of scratch and of an arm that is better on every case by 0.01 (+-0.002)."""
    rng = np.random.default_rng(0)
    results = tmp_path / "results"
    for seed in (0, 1):
        scratch = rng.uniform(0.8, 0.9, len(CASES))
        write_summary(results, f"seg__resunet__scratch__frac0.05__p__seed{seed}", scratch)
        write_summary(results, f"seg__resunet__grid__frac0.05__p__enc__warm2__seed{seed}",
                      scratch + 0.01 + rng.uniform(-0.002, 0.002, len(CASES)))
    cells = [{"model": SCRATCH, "fraction": 0.05, "model_id": "seg__resunet__scratch__frac0.05__p__seed0",
              "folds": "0/seed0;0/seed1"},
             {"model": GRID, "fraction": 0.05, "model_id": "seg__resunet__grid__frac0.05__p__enc__warm2__seed0",
              "folds": "0/seed0;0/seed1"}]
    return results, cells


def test_each_unit_is_paired_with_the_scratch_cell_of_its_seed(grid):
    results, cells = grid
    units = local_units(results, cells, "dice")
    assert [(u["model"], u["seed"]) for u in units] == [(SCRATCH, 0), (SCRATCH, 1), (GRID, 0), (GRID, 1)]
    assert all(u["vs_reference"] is None for u in units[:2])
    for unit in units[2:]:
        arm = json.loads((results / unit["model_id"] / "fold_0" / "validation" / "summary.json").read_text())
        scratch_id = f"seg__resunet__scratch__frac0.05__p__seed{unit['seed']}"
        scratch = json.loads((results / scratch_id / "fold_0" / "validation" / "summary.json").read_text())
        differences = np.array([a["dice"] - s["dice"] for a, s in zip(arm["per_case"], scratch["per_case"])])
        assert unit["vs_reference"]["mean"] == pytest.approx(differences.mean())
        assert unit["vs_reference"]["se"] == pytest.approx(differences.std(ddof=1) / np.sqrt(len(CASES)))
        assert unit["vs_reference"]["cases"] == len(CASES) and unit["dice"] == pytest.approx(arm["mean"]["dice"])


def test_a_later_run_adds_and_replaces_units_and_keeps_the_others(grid):
    results, cells = grid
    found = local_units(results, cells, "dice")
    stale = {**found[2], "dice": 0.1, "vs_reference": {"mean": -0.5, "se": 0.01, "cases": 20}}
    elsewhere = {**found[2], "seed": 2, "model_id": "...__seed2", "vs_reference": {"mean": 0.012, "se": 0.001,
                                                                                   "cases": 20}}
    units = merge_units([stale, elsewhere], found)
    arm = [u for u in units if u["model"] == GRID]
    assert [u["seed"] for u in arm] == [0, 1, 2] and arm[0] == found[2]  # seed 0 replaced, seed 2 kept
    row = next(r for r in pooled(units, "dice") if r["model"] == GRID)
    assert row["units"] == row["vs_reference_units"] == 3 and row["seeds"] == [0, 1, 2]
    assert row["vs_reference_mean"] == pytest.approx(np.mean([u["vs_reference"]["mean"] for u in arm]))
    low, high = row["vs_reference_ci95"]
    assert 0 < low < row["vs_reference_mean"] < high < 0.02  # a steady +0.01 excludes 0
    # the interval widens with the spread between units, not only with the cases
    spread = merge_units([{**elsewhere, "vs_reference": {"mean": -0.03, "se": 0.001, "cases": 20}}], found)
    wide = next(r for r in pooled(spread, "dice") if r["model"] == GRID)["vs_reference_ci95"]
    assert wide[0] < 0 < wide[1]


def test_a_report_from_before_units_carries_its_one_unit_cells():
    cells = [{"model": GRID, "fraction": 0.05, "folds": "0/seed0", "model_id": "m__seed0", "dice": {"mean": 0.86},
              "train_seconds_mean": 500.0, "vs_reference_mean": 0.005, "vs_reference_ci_low": -0.004,
              "vs_reference_ci_high": 0.016, "vs_reference_units": 1},
             {"model": SCRATCH, "fraction": 0.1, "folds": None, "model_id": "s", "dice": {"mean": None}}]
    units = units_from_cells(cells, "dice")
    assert len(units) == 1 and units[0]["seed"] == 0 and units[0]["dice"] == 0.86
    assert units[0]["vs_reference"]["se"] == pytest.approx(0.020 / (2 * 1.959964))


def test_units_of_another_plan_are_not_carried(grid, tmp_path):
    results, cells = grid
    path = tmp_path / "report.json"
    report = {"profile": "few_labels", "plan": {"seed": 1}, "cells": cells}
    first = pooled_report(path, report, results, "dice")
    path.write_text(json.dumps({**report, **first}))
    elsewhere = {**first["units"][-1], "seed": 7}
    path.write_text(json.dumps({**report, **first, "units": first["units"] + [elsewhere]}))
    assert len(pooled_report(path, report, results, "dice")["units"]) == 5
    assert len(pooled_report(path, {**report, "plan": {"seed": 2}}, results, "dice")["units"]) == 4
    # a key added to rbmnet since, at its default, or a launch-only key, is the same plan
    newer = {"seed": 1, "segmentation": {"semi_supervised": "off", "initialisation": "pretext"}}
    assert len(pooled_report(path, {**report, "plan": newer}, results, "dice")["units"]) == 5
