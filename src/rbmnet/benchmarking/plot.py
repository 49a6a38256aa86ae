"""dice_vs_fraction.png: Dice against the training fraction, one line per model, error bars = std over folds.

The Dice is the task's first metric: `dice` for the binary task, `tooth_dice` for numbered teeth.

With several label-noise levels there is one panel per level, sharing the Dice axis, so the drop a
model suffers from wrong masks reads across panels.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from rbmnet.io.atomic import atomic_path

PLOT_NAME = "dice_vs_fraction.png"
AXIS_LABELS = {"dice": "Dice", "tooth_dice": "tooth Dice"}


def plot_dice_vs_fraction(results: pd.DataFrame, path: Path, title: str = "", metric: str = "dice") -> Path:
    """`results` as table.collect_results returns it; cells without folds are left out. `metric`: the
    column pair <metric>_mean / <metric>_std plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted(results["label_noise"].unique())
    models = list(dict.fromkeys(results["model"]))
    colours = {model: f"C{i % 10}" for i, model in enumerate(models)}  # a model keeps its colour in every panel
    fig, axes = plt.subplots(1, len(noises), figsize=(5.5 * len(noises), 4.2), sharey=True, squeeze=False)
    for axis, noise in zip(axes[0], noises):
        at_noise = results[(results["label_noise"] == noise) & (results["num_folds"] > 0)]
        for model, rows in at_noise.groupby("model", sort=False):
            rows = rows.sort_values("fraction")
            axis.errorbar(rows["fraction"], rows[f"{metric}_mean"], yerr=rows[f"{metric}_std"], marker="o",
                          capsize=3, label=model, color=colours[model])
        axis.set_xticks(sorted(results["fraction"].unique()))
        axis.set_xlabel("training fraction")
        axis.set_title(f"label noise {noise:g}" if len(noises) > 1 or noise else "clean labels", fontsize=10)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{AXIS_LABELS.get(metric, metric)} (mean ± std over folds)")
    if axes[0][-1].get_legend_handles_labels()[0]:  # no finished cell: nothing to name
        axes[0][-1].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
