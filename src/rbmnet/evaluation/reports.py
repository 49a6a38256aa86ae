"""Metric reports on disk (see docs/model_folder.md): summary.json/.csv per fold, the cross-validation
summary across folds, and plain-text tables for the terminal.

JSON holds numbers or null: a NaN (a metric with nothing to measure) is written as null, because
NaN is not JSON. All files are written atomically. Standard deviations are population (ddof=0).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from rbmnet.evaluation.segmentation_metrics import COUNTS, EMPTY_RULE, METRICS, summarize
from rbmnet.io.atomic import atomic_path, write_json
from rbmnet.layout import CROSSVAL_CSV, CROSSVAL_JSON, SUMMARY_CSV, SUMMARY_JSON
STATISTICS = ("mean", "median", "std")
FOLD_SHARED_KEYS = ("model_id", "fraction", "seed")
INTEGER_COLUMNS = {*COUNTS, "label", "downsample_factor"}


def write_segmentation_summary(folder: str | Path, per_case: list[dict], extra: dict | None = None) -> dict:
    """Write summary.json and summary.csv for one set of cases; return the summary.

    per_case rows hold "case", the counts and the metrics of segmentation_metrics.case_metrics, and
    optionally "label" (per-label evaluation). With labels, the top-level statistics pool all
    (case, label) rows and "per_label" holds each label's own statistics. `extra` adds keys such as
    fraction, seed, model_id, fold.
    """
    folder = Path(folder)
    summary = dict(extra or {})
    summary["empty_rule"] = EMPTY_RULE
    summary.update(summarize(per_case))
    labels = sorted({row["label"] for row in per_case if "label" in row})
    if labels:
        summary["num_cases"] = len({row["case"] for row in per_case})  # cases, not (case, label) rows
        summary["per_label"] = {str(label): summarize([row for row in per_case if row.get("label") == label])
                                for label in labels}
    summary["per_case"] = per_case
    write_json(folder / SUMMARY_JSON, json_ready(summary))
    key_columns = ["case", "label"] if labels else ["case"]
    write_csv(folder / SUMMARY_CSV, _rows_with_statistics(per_case, summary, key_columns),
               key_columns + list(METRICS) + list(COUNTS))
    return summary


def crossval_summary(fold_summaries: dict[int, dict], metrics=METRICS) -> dict:
    """Mean and population std over folds of each fold's mean metric; the folds and their means listed.

    Keys that every fold's summary shares with one value (model_id, fraction, seed) are carried over.
    """
    if not fold_summaries:
        raise ValueError("crossval_summary needs at least one fold")
    folds = sorted(fold_summaries)
    fold_means = {str(fold): {m: float(fold_summaries[fold]["mean"][m]) for m in metrics} for fold in folds}
    result = {key: fold_summaries[folds[0]][key] for key in FOLD_SHARED_KEYS
              if len({repr(summary.get(key)) for summary in fold_summaries.values()}) == 1
              and key in fold_summaries[folds[0]]}
    result.update({"folds": folds, "num_folds": len(folds), "mean": {}, "std": {}})
    for metric in metrics:
        values = np.array([fold_means[str(fold)][metric] for fold in folds])
        result["mean"][metric] = float(np.mean(values))
        result["std"][metric] = float(np.std(values, ddof=0))
    result["fold_means"] = fold_means
    result["num_cases"] = {str(fold): fold_summaries[fold].get("num_cases") for fold in folds}
    return result


def write_crossval_summary(folder: str | Path, fold_summaries: dict, extra: dict | None = None,
                           metrics=METRICS) -> dict:
    """Write crossval_summary.json and .csv (one row per fold, then mean and std rows); return it.

    fold_summaries is {fold: that fold's summary}, or a result of crossval_summary already computed.
    """
    folder = Path(folder)
    result = dict(extra or {})
    computed = "fold_means" in fold_summaries and "folds" in fold_summaries
    result.update(fold_summaries if computed else crossval_summary(fold_summaries, metrics))
    write_json(folder / CROSSVAL_JSON, json_ready(result))
    rows = [{"fold": fold, **means} for fold, means in result["fold_means"].items()]
    rows += [{"fold": statistic, **result[statistic]} for statistic in ("mean", "std")]
    write_csv(folder / CROSSVAL_CSV, rows, ["fold", *metrics])
    return result


def format_table(rows: list[dict], columns: list[str], float_digits: int = 4) -> str:
    """Plain-text table with aligned columns (missing values blank)."""
    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.{float_digits}f}")


def statistics_rows(summary: dict, metrics=METRICS) -> list[dict]:
    """The mean/median/std lines of a summary as table rows (first column "statistic")."""
    return [{"statistic": statistic, **{m: summary[statistic][m] for m in metrics}}
            for statistic in STATISTICS if statistic in summary]


def json_ready(obj):
    """Replace non-finite floats by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(key): json_ready(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(value) for value in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _rows_with_statistics(per_case: list[dict], summary: dict, key_columns: list[str]) -> list[dict]:
    rows = list(per_case)
    for statistic in STATISTICS:
        rows.append({key_columns[0]: statistic, **summary[statistic]})
    rows.append({key_columns[0]: "sum", **summary["aggregate"]})
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """rows as a CSV with these columns, written atomically; count columns as integers."""
    frame = pd.DataFrame(rows, columns=columns)
    for column in INTEGER_COLUMNS & set(columns):
        # nullable integers: counts stay "16", not "16.0", beside the blank cells of statistic rows
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
