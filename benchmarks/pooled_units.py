"""A seeded benchmark grid's numbers per unit, kept in its report, and pooled over every unit measured so far.

A unit is one cell (arm, fraction, fold, seed) beside the reference cell of the same fold and seed
(Modified ResUNet from scratch). The repository keeps aggregate numbers only, the radiographs being
licensed: per unit, the cell's mean metric, the mean per-case difference to the reference and its
standard error. A later run, on this machine or a new one, adds or replaces the units it finished
and keeps the others, so that a grid longer than one sitting goes on where it stopped.

The pooled interval is benchmarking/paired.py's two-level bootstrap (units, then cases) with its inner
level, the case bootstrap of a unit's mean, taken as its normal approximation (the unit's mean and
standard error): the per-case values stay on the machine that trained the cell.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np

from rbmnet.benchmarking.arms import MODEL_ORDER, REFERENCE_NAME
from rbmnet.benchmarking.paired import BOOTSTRAP_SAMPLES, CONFIDENCE, unit_differences
from rbmnet.benchmarking.recipe import RBM_SECTIONS, recipe_changes
from rbmnet.evaluation.reports import json_ready
from rbmnet.benchmarking.table import training_seconds
from rbmnet.io.atomic import read_json
from rbmnet.layout import SUMMARY_JSON, VALIDATION_FOLDER, fold_folder_name
from rbmnet.model.folder import seed_tag

SEED_SUFFIX = re.compile(r"__seed\d+$")
Z95 = 1.959964  # a 95 % normal interval is mean +- Z95 standard errors


def parse_unit(unit: str) -> tuple[int, int | None]:
    """'0/seed1' -> (0, 1); '0' -> (0, None)."""
    fold, _, seed = unit.partition("/seed")
    return int(fold), int(seed) if seed else None


def unit_key(unit: dict) -> tuple:
    return unit["model"], unit["fraction"], unit["fold"], unit["seed"]


def fold_dir(results: Path, base_id: str, fold: int, seed: int | None) -> Path:
    return results / f"{base_id}{seed_tag(seed)}" / fold_folder_name(fold)


def local_units(results: Path, cells: list[dict], metric: str) -> list[dict]:
    """Every finished unit of the report's cells (benchmark.csv rows: model, fraction, model_id, folds)
    found under `results`, with its paired difference to the reference cell of the same fold and seed."""
    base = {(c["model"], c["fraction"]): SEED_SUFFIX.sub("", c["model_id"]) for c in cells}
    units = []
    for cell in cells:
        for unit in filter(None, str(cell.get("folds") or "").split(";")):
            fold, seed = parse_unit(unit)
            folder = fold_dir(results, base[cell["model"], cell["fraction"]], fold, seed)
            summary_path = folder / VALIDATION_FOLDER / SUMMARY_JSON
            if not summary_path.is_file():
                continue
            summary = read_json(summary_path)
            record = {"model": cell["model"], "fraction": cell["fraction"], "fold": fold, "seed": seed,
                      "model_id": folder.parent.name, metric: summary["mean"][metric],
                      "train_seconds": training_seconds(folder),
                      "measured": datetime.datetime.fromtimestamp(summary_path.stat().st_mtime,
                                                                  datetime.timezone.utc).date().isoformat(),
                      "vs_reference": None}
            reference = base.get((REFERENCE_NAME, cell["fraction"]))
            reference_summary = (fold_dir(results, reference, fold, seed) / VALIDATION_FOLDER / SUMMARY_JSON
                                 if reference else None)
            if cell["model"] != REFERENCE_NAME and reference_summary is not None and reference_summary.is_file():
                record["vs_reference"] = case_difference(summary, read_json(reference_summary), metric)
            units.append(record)
    return units


def case_difference(arm: dict, reference: dict, metric: str) -> dict | None:
    """Mean per-case difference (arm - reference) over the cases both summaries hold, and its standard error."""
    differences = next(iter(unit_differences([(arm, reference)], metric)), np.array([]))
    if len(differences) < 2:
        return None
    return {"mean": float(differences.mean()), "se": float(differences.std(ddof=1) / np.sqrt(len(differences))),
            "cases": len(differences)}


def units_from_cells(cells: list[dict], metric: str) -> list[dict]:
    """Units of a report written before units were kept: only its one-unit cells can be carried; the
    standard error is read back from their 95 % case-bootstrap interval."""
    units = []
    for cell in cells:
        folds = str(cell.get("folds") or "")
        if not folds or ";" in folds:
            continue
        fold, seed = parse_unit(folds)
        difference = None
        if cell.get("vs_reference_units") == 1:
            difference = {"mean": cell["vs_reference_mean"],
                          "se": (cell["vs_reference_ci_high"] - cell["vs_reference_ci_low"]) / (2 * Z95),
                          "cases": None, "se_from": "the earlier report's 95 % case-bootstrap interval"}
        units.append({"model": cell["model"], "fraction": cell["fraction"], "fold": fold, "seed": seed,
                      "model_id": cell["model_id"], metric: cell[metric]["mean"],
                      "train_seconds": cell.get("train_seconds_mean"), "measured": None,
                      "vs_reference": difference})
    return units


def merge_units(earlier: list[dict], found: list[dict]) -> list[dict]:
    """The units found now, and the earlier ones not found now (trained on another machine or before)."""
    merged = {unit_key(u): u for u in earlier}
    merged.update({unit_key(u): u for u in found})
    return sorted(merged.values(), key=lambda u: (u["fraction"], u["model"], u["fold"], u["seed"] or 0))


def pooled_interval(differences: list[dict], seed: int = 0) -> tuple[float, float]:
    """Two-level bootstrap over units, each drawn unit's mean from its normal approximation."""
    means = np.array([d["mean"] for d in differences])
    errors = np.array([d["se"] for d in differences])
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(means), size=(BOOTSTRAP_SAMPLES, len(means)))
    samples = (means[drawn] + errors[drawn] * rng.standard_normal(drawn.shape)).mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def pooled(units: list[dict], metric: str) -> list[dict]:
    """Per (model, fraction): units, mean metric, mean paired difference to the reference and its interval."""
    rows = []
    for model, fraction in dict.fromkeys((u["model"], u["fraction"]) for u in units):
        group = [u for u in units if u["model"] == model and u["fraction"] == fraction]
        differences = [u["vs_reference"] for u in group if u["vs_reference"]]
        seconds = [u["train_seconds"] for u in group if u["train_seconds"] is not None]
        row = {"model": model, "fraction": fraction, "units": len(group),
               "seeds": sorted(u["seed"] for u in group if u["seed"] is not None),
               metric: float(np.mean([u[metric] for u in group])),
               "train_seconds_mean": float(np.mean(seconds)) if seconds else None,
               "vs_reference_mean": None, "vs_reference_ci95": None, "vs_reference_units": len(differences)}
        if differences:
            row["vs_reference_mean"] = float(np.mean([d["mean"] for d in differences]))
            row["vs_reference_ci95"] = list(pooled_interval(differences))
        rows.append(row)
    return rows


def pooled_markdown(rows: list[dict], metric: str) -> str:
    lines = [f"| model | fraction | seeds | {metric} | vs {REFERENCE_NAME} from scratch [95 %] | training s |",
             "|---|---|---|---|---|---|"]
    order = {name: index for index, name in enumerate(MODEL_ORDER)}  # the benchmark table's row order
    for row in sorted(rows, key=lambda r: (r["fraction"], order.get(r["model"], len(order)))):
        difference = "" if row["vs_reference_mean"] is None else (
            f"{row['vs_reference_mean']:+.3f} [{row['vs_reference_ci95'][0]:+.3f}, {row['vs_reference_ci95'][1]:+.3f}]")
        seconds = "" if row["train_seconds_mean"] is None else f"{row['train_seconds_mean']:.0f}"
        lines.append(f"| {row['model']} | {row['fraction']:g} | {','.join(map(str, row['seeds']))} | "
                     f"{row[metric]:.3f} | {difference} | {seconds} |")
    return "\n".join(lines) + "\n"


def pooled_report(path: Path, report: dict, results: Path, metric: str) -> dict:
    """The units finished here merged with those the report at `path` already holds (from earlier runs or
    other machines, when they trained the same plan: the same result-deciding values, a key that one of
    the plans lacks counting as its default), and their pooled table."""
    earlier = read_json(path) if path.is_file() else {}
    carried = []
    same_plan = "plan" in earlier and not recipe_changes(earlier["plan"], json_ready(report["plan"]), RBM_SECTIONS)
    if earlier.get("profile") == report["profile"] and same_plan:
        carried = earlier.get("units") or units_from_cells(earlier.get("cells", []), metric)
    elif earlier:
        print(f"note: {path} was written for another profile or plan: its units are not carried over")
    units = merge_units(carried, local_units(results, json_ready(report["cells"]), metric))
    rows = pooled(units, metric)
    return {"units": units, "pooled": rows, "pooled_markdown": pooled_markdown(rows, metric)}
