"""End-of-training validation of a fold: masks at the original resolution, metrics, figure, CV summary."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rbmnet.evaluation.reports import crossval_summary, write_crossval_summary, write_segmentation_summary
from rbmnet.evaluation.segmentation_metrics import case_metrics
from rbmnet.inference.masks import probabilities_to_mask
from rbmnet.inference.probabilities import predict_arrays
from rbmnet.io.atomic import atomic_path, read_json
from rbmnet.io.images import read_image, read_label, write_png
from rbmnet.preprocessing.transforms import restore_probabilities

FIGURE_NAME = "validation_examples.png"  # beside validation/, so that folder holds only masks


def validate_fold(folder: Path, network, inputs, val_names: list[str], device, plan, meta: dict) -> dict:
    out_dir = Path(folder) / "validation"
    records = [inputs.data.record(n) for n in val_names]
    images = np.stack([inputs.data.images[r.index] for r in records])
    probabilities = predict_arrays(network, images, device, batch_size=plan.segmentation.batch_size)
    per_case, examples = [], []
    for record, probability in zip(records, probabilities):
        mask = probabilities_to_mask(restore_probabilities(probability, record.original_shape),
                                     plan.segmentation.threshold)
        write_png(out_dir / f"{record.name}.png", mask)
        reference = read_label(inputs.raw_dir / "labelsTr" / f"{record.name}{inputs.dataset_json['file_ending']}") > 0
        per_case.append({"case": record.name, **case_metrics(mask > 0, reference)})
        if len(examples) < 3:
            examples.append((record, reference, mask > 0))
    summary = write_segmentation_summary(out_dir, per_case, {
        "model_id": meta["model_id"], "fold": meta["fold"], "fraction": meta["fraction"], "seed": meta["seed"],
        "initialisation": meta["initialisation"], "architecture": meta["architecture"],
        "checkpoint": "checkpoint_final"})
    write_examples_figure(Path(folder) / FIGURE_NAME, inputs.raw_dir, examples)
    mean = summary["mean"]
    print(f"fold {meta['fold']} validation ({len(per_case)} cases, final checkpoint): "
          + "  ".join(f"{k} {mean[k]:.4f}" for k in ("dice", "jaccard", "precision", "recall")))
    return summary


def write_crossval_if_several(model_folder: Path) -> dict | None:
    summaries = {}
    for fold_dir in sorted(Path(model_folder).glob("fold_[0-9]*")):
        path = fold_dir / "validation" / "summary.json"
        if path.is_file():
            summaries[int(fold_dir.name.split("_")[1])] = read_json(path)
    if len(summaries) < 2:
        return None
    result = crossval_summary(summaries)
    write_crossval_summary(model_folder, result)
    return result


def write_examples_figure(path: Path, raw_dir: Path, examples) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not examples:
        return
    fig, axes = plt.subplots(len(examples), 3, figsize=(11, 3.0 * len(examples)), squeeze=False)
    for row, (record, reference, prediction) in enumerate(examples):
        radiograph = read_image(raw_dir / record.source)
        for col, (title, array, cmap) in enumerate((("radiograph", radiograph, "gray"),
                                                    ("ground truth", reference, "gray"),
                                                    ("prediction", prediction, "gray"))):
            axes[row, col].imshow(array, cmap=cmap)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(record.name, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
