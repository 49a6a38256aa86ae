"""The benchmark table (like the paper's Table 2) from the fold summaries training wrote.

Numbers come only from fold_<k>/validation/summary.json: a cell is the mean and the population
std over folds of each fold's mean metric, exactly as evaluation/reports.crossval_summary computes
them for crossval_summary.json (over the folds asked for, which may be fewer than the folder holds).
With --seeds, over the (fold, seed) units instead: `num_folds` and `folds` then count and name units.

benchmark.csv: one row per (model, fraction, label noise): the model id, the folds found, for every
metric of the task its mean and std over folds (`<metric>_mean`, `<metric>_std`), and the mean training
wall time of a fold, and the paired difference of the first metric to Modified ResUNet from scratch
(`vs_reference_mean`, `_ci_low`, `_ci_high`, `_units`; benchmarking/paired.py). benchmark.md: one Markdown table per label-noise level, rows = models, columns =
fractions, cells the task's metrics as mean±std: "Dice / Jaccard / precision / recall" for the binary
task (the paper's cell), "tooth_dice / identification_accuracy / wrong_side_rate / binary_dice" for
numbered teeth (tasks/: metric_names). The first metric is the one the noise table, the plot and the
paired-difference table show.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from rbmnet.benchmarking.arms import REFERENCE_NAME
from rbmnet.benchmarking.grid import Cell, GridSpec, cell_folder
from rbmnet.benchmarking.paired import paired_difference
from rbmnet.evaluation.reports import crossval_summary
from rbmnet.io.atomic import atomic_path, read_json, write_text
from rbmnet.layout import SUMMARY_JSON, VALIDATION_FOLDER
from rbmnet.training.progress import TrainingLog

CSV_NAME = "benchmark.csv"
MARKDOWN_NAME = "benchmark.md"
TABLE_METRICS = ("dice", "jaccard", "precision", "recall")  # the paper's cell, in its order
# the binary metrics as the paper writes them; other tasks' metrics by their summary names
METRIC_LABELS = {"dice": "Dice", "jaccard": "Jaccard", "precision": "precision", "recall": "recall"}
MISSING = "–"


def cell_summaries(spec: GridSpec, model, fraction: float, noise: float,
                   left_out: frozenset[Cell] = frozenset()) -> dict[str, tuple[dict, Path]]:
    """The finished cells' fold summaries by unit ('<fold>' or '<fold>/seed<s>'), with their folders."""
    found = {}
    for fold in spec.folds:
        for seed in spec.seeds:
            cell = spec.cell(model, fraction, fold, noise, seed)
            folder = cell_folder(spec.dataset_name, spec.plans_name, cell)
            if (folder / VALIDATION_FOLDER / SUMMARY_JSON).is_file() and cell not in left_out:
                unit = str(fold) if seed is None else f"{fold}/seed{seed}"
                found[unit] = (read_json(folder / VALIDATION_FOLDER / SUMMARY_JSON), folder)
    return found


def reference_model(spec: GridSpec):
    """The row the others are compared with: Modified ResUNet from scratch, when the grid has it."""
    return next((model for model in spec.models if model.name == REFERENCE_NAME), None)


def collect_results(spec: GridSpec, left_out: frozenset[Cell] = frozenset()) -> pd.DataFrame:
    """One row per (model, fraction, noise) with the metric means/stds over the (fold, seed) units that have
    a summary, and the paired difference of the primary metric to the reference row; `left_out` cells
    (trained under other settings or splits) count as missing."""
    rows = []
    reference = reference_model(spec)
    metric = spec.metrics[0]
    for noise in spec.label_noises:
        for model in spec.models:
            for fraction in spec.fractions:
                found = cell_summaries(spec, model, fraction, noise, left_out)
                summaries = {unit: summary for unit, (summary, _) in found.items()}
                seconds = [training_seconds(folder) for _, folder in found.values()]
                cell = spec.cell(model, fraction, spec.folds[0], noise, spec.seeds[0])
                row = {"model": model.name, "architecture": model.architecture, "initialisation": model.init,
                       "fraction": fraction, "label_noise": noise, "num_folds": len(summaries),
                       "folds": ";".join(sorted(summaries)),
                       "model_id": cell.model_id(spec.plans_name),
                       "train_seconds_mean": sum(seconds) / len(seconds) if seconds and None not in seconds else None}
                result = crossval_summary(summaries, spec.metrics) if summaries else None
                for name in spec.metrics:
                    row[f"{name}_mean"] = result["mean"][name] if result else None
                    row[f"{name}_std"] = result["std"][name] if result else None
                difference = None
                if reference is not None and model != reference and summaries:
                    theirs = cell_summaries(spec, reference, fraction, noise, left_out)
                    pairs = [(summaries[u], theirs[u][0]) for u in sorted(summaries) if u in theirs]
                    difference = paired_difference(pairs, metric)
                row["vs_reference_mean"] = difference["mean"] if difference else None
                row["vs_reference_ci_low"] = difference["ci95"][0] if difference else None
                row["vs_reference_ci_high"] = difference["ci95"][1] if difference else None
                row["vs_reference_units"] = difference["units"] if difference else 0
                rows.append(row)
    return pd.DataFrame(rows)


def training_seconds(fold_folder: Path) -> float | None:
    """Wall seconds of the fold's training epochs (its training log; validation at the end not included)."""
    entries = TrainingLog.read(fold_folder).entries
    return sum(entry.get("epoch_seconds", 0.0) for entry in entries) if entries else None


def _number(value: float) -> str:
    return f"{value:.3f}".removeprefix("0")  # the paper's compact ".851"


def result_row(results: pd.DataFrame, model: str, fraction: float, noise: float) -> pd.Series:
    return results[(results["model"] == model) & (results["fraction"] == fraction)
                   & (results["label_noise"] == noise)].iloc[0]


def format_cell(row: pd.Series, folds_asked: int, metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    if row["num_folds"] == 0:
        return MISSING
    parts = []
    for metric in metrics:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        parts.append(_number(mean) + (f"±{_number(std)}" if row["num_folds"] > 1 else ""))
    text = " / ".join(parts)
    return text if row["num_folds"] == folds_asked else f"{text} (n={row['num_folds']})"


def metrics_label(spec: GridSpec) -> str:
    """How the Markdown names the metrics of a cell, in order."""
    return " / ".join(METRIC_LABELS.get(metric, metric) for metric in spec.metrics)


def primary_metric(spec: GridSpec) -> str:
    """The metric the noise table and the plot show: Dice (binary), tooth Dice (numbered teeth)."""
    return spec.metrics[0]


def task_suffix(spec: GridSpec) -> str:
    """', task teeth (teeth-factorized)' for titles; '' for the binary task (titles as before tasks existed)."""
    return "" if spec.task == "binary" else f", task {spec.task} ({spec.task_tag.removeprefix('__')})"


def markdown_table(results: pd.DataFrame, spec: GridSpec, num_left_out: int = 0) -> str:
    folds = ", ".join(str(f) for f in spec.folds)
    if spec.seeds != [None]:
        folds += " x seeds " + ", ".join(str(s) for s in spec.seeds)
    lines = [f"## Benchmark: {spec.dataset_name} (plan {spec.plans_name}{task_suffix(spec)})", "",
             f"{metrics_label(spec)} on each fold's validation cases; "
             + (f"mean±std over folds {folds} (population std of the fold means; with seeds, of the "
                f"(fold, seed) means)."
                if len(spec.folds) * len(spec.seeds) > 1 else f"fold {folds} only (no std).")
             + " Columns: training fraction. (n=k): only k folds finished."
             + (f" {num_left_out} trained cell(s) left out: trained under other settings or splits than this "
                f"run's (rbmnet_benchmark --retrain-changed trains them again)." if num_left_out else ""), ""]
    header = "| model | " + " | ".join(f"{f:g}" for f in spec.fractions) + " |"
    rule = "|---|" + "---|" * len(spec.fractions)
    sections = len(spec.label_noises) > 1 or any(spec.label_noises)
    for noise in spec.label_noises:
        if sections:
            what = "clean training masks" if noise == 0 else f"masks of {noise:.0%} of the training cases corrupted"
            lines += [f"### Label noise {noise:g} ({what})", ""]
        lines += [header, rule]
        for model in spec.models:
            cells = []
            for fraction in spec.fractions:
                cells.append(format_cell(result_row(results, model.name, fraction, noise),
                                         len(spec.folds) * len(spec.seeds), spec.metrics))
            lines.append(f"| {model.name} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(spec.label_noises) > 1:
        lines += noise_table(results, spec)
    lines += paired_table(results, spec)
    return "\n".join(lines)


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + _number(abs(value))


def paired_table(results: pd.DataFrame, spec: GridSpec) -> list[str]:
    """Each row's paired difference to the reference row, primary metric, with its 95 % interval."""
    if reference_model(spec) is None or len(spec.models) < 2:
        return []
    metric = primary_metric(spec)
    name = METRIC_LABELS.get(metric, metric)
    lines = [f"### {name}: paired difference to {REFERENCE_NAME} from scratch", "",
             f"Mean over (fold, seed) units of the per-case difference on the same validation cases, "
             f"[95 % interval: two-level bootstrap, units then cases] (u=units).", ""]
    columns = [(fraction, noise) for noise in spec.label_noises for fraction in spec.fractions]
    lines += ["| model | " + " | ".join(f"{f:g}" + (f" @ noise {p:g}" if len(spec.label_noises) > 1 else "")
                                       for f, p in columns) + " |", "|---|" + "---|" * len(columns)]
    for model in spec.models:
        if model.name == REFERENCE_NAME:
            continue
        cells = []
        for fraction, noise in columns:
            row = result_row(results, model.name, fraction, noise)
            if not row["vs_reference_units"]:
                cells.append(MISSING)
                continue
            cells.append(f"{_signed(row['vs_reference_mean'])} [{_signed(row['vs_reference_ci_low'])}, "
                         f"{_signed(row['vs_reference_ci_high'])}] (u={int(row['vs_reference_units'])})")
        lines.append(f"| {model.name} | " + " | ".join(cells) + " |")
    return lines + [""]


def noise_table(results: pd.DataFrame, spec: GridSpec) -> list[str]:
    """The primary metric only, one column per (fraction, noise level): how much each model loses to wrong masks."""
    columns = [(fraction, noise) for fraction in spec.fractions for noise in spec.label_noises]
    metric = primary_metric(spec)
    name = METRIC_LABELS.get(metric, metric)
    lines = [f"### {name} by label noise", "",
             f"Mean {name} (as above) with the share of corrupted training masks as columns; "
             "the evaluation masks are always clean.", "",
             "| model | " + " | ".join(f"{f:g} @ noise {p:g}" for f, p in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for model in spec.models:
        cells = []
        for fraction, noise in columns:
            row = result_row(results, model.name, fraction, noise)
            cells.append(MISSING if row["num_folds"] == 0 else _number(row[f"{metric}_mean"]))
        lines.append(f"| {model.name} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_tables(results: pd.DataFrame, spec: GridSpec, output_dir: Path,
                 num_left_out: int = 0) -> tuple[Path, Path, str]:
    """Write benchmark.csv and benchmark.md; return their paths and the Markdown text."""
    output_dir = Path(output_dir)
    csv_path, markdown_path = output_dir / CSV_NAME, output_dir / MARKDOWN_NAME
    with atomic_path(csv_path) as tmp:
        results.to_csv(tmp, index=False)
    markdown = markdown_table(results, spec, num_left_out)
    write_text(markdown_path, markdown)
    return csv_path, markdown_path, markdown
