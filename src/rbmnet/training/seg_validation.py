"""End-of-training validation of a fold: predictions at the original resolution, the task's metrics,
a figure, the CV summary, and (teeth) the post-processing decided on every finished fold."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rbmnet.evaluation.reports import crossval_summary, write_crossval_summary
from rbmnet.io.atomic import atomic_path, read_json, write_json
from rbmnet.io.images import read_image, read_label, write_png
from rbmnet.layout import (LABELS_TR, NUMBERED_FOLDS_GLOB, POSTPROCESSING_JSON, SUMMARY_JSON, TRAINING_CASES_JSON,
                           VALIDATION_FOLDER, fold_of_folder_name)
from rbmnet.model.forward import predict_arrays
from rbmnet.preprocessing.transforms import restore_probabilities
from rbmnet.tasks.base import SegmentationTask

FIGURE_NAME = "validation_examples.png"  # beside validation/ (VALIDATION_FOLDER), so that folder holds only masks
EXAMPLE_COLOURS = "nipy_spectral"  # tooth numbers in distinct colours; a binary mask shows in one


def validate_fold(folder: Path, network, inputs, val_names: list[str], device, plan, meta: dict,
                  task: SegmentationTask) -> dict:
    out_dir = Path(folder) / VALIDATION_FOLDER
    records = [inputs.data.record(n) for n in val_names]
    per_case, examples = [], []
    # a few cases at a time: teeth probabilities have up to 33 channels at the original size
    for start in range(0, len(records), VALIDATION_CHUNK):
        chunk = records[start:start + VALIDATION_CHUNK]
        images = np.stack([inputs.data.images[r.index] for r in chunk])
        probabilities = predict_arrays(network, images, device, task, batch_size=plan.segmentation.batch_size)
        for record, probability in zip(chunk, probabilities):
            prediction = task.decode(restore_probabilities(probability, record.original_shape))
            write_png(out_dir / f"{record.name}.png", prediction)
            reference = read_label(reference_path(inputs.raw_dir, record.name, inputs.dataset_json))
            per_case.append({"case": record.name, **task.case_metrics(prediction, reference)})
            if len(examples) < 3:
                examples.append((record, reference, prediction))
    summary = task.write_summary(out_dir, per_case, {
        "model_id": meta["model_id"], "fold": meta["fold"], "fraction": meta["fraction"], "seed": meta["seed"],
        "initialisation": meta["initialisation"], "architecture": meta["architecture"],
        "checkpoint": "checkpoint_final"})
    write_examples_figure(Path(folder) / FIGURE_NAME, inputs.raw_dir, examples)
    mean = summary["mean"]
    print(f"fold {meta['fold']} validation ({len(per_case)} cases, final checkpoint): "
          + "  ".join(f"{k} {mean[k]:.4f}" for k in task.metric_names))
    return summary


VALIDATION_CHUNK = 8


def reference_path(raw_dir: Path, case: str, dataset_json: dict) -> Path:
    return Path(raw_dir) / LABELS_TR / f"{case}{dataset_json['file_ending']}"


def write_crossval_if_several(model_folder: Path, task: SegmentationTask) -> dict | None:
    summaries = finished_fold_summaries(model_folder)
    if len(summaries) < 2:
        return None
    result = crossval_summary(summaries, metrics=task.metric_names)
    write_crossval_summary(model_folder, result, metrics=task.metric_names)
    return result


def finished_fold_summaries(model_folder: Path) -> dict[int, dict]:
    summaries = {}
    for fold_dir in sorted(Path(model_folder).glob(NUMBERED_FOLDS_GLOB)):
        path = fold_dir / VALIDATION_FOLDER / SUMMARY_JSON
        if path.is_file():
            summaries[int(fold_of_folder_name(fold_dir.name))] = read_json(path)
    return summaries


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
                                                    ("ground truth", reference, EXAMPLE_COLOURS),
                                                    ("prediction", prediction, EXAMPLE_COLOURS))):
            axes[row, col].imshow(array, cmap=cmap, interpolation="nearest")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(record.name, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def decide_postprocessing_if_any(model_folder: Path, raw_dir: Path, dataset_json: dict,
                                 task: SegmentationTask) -> dict | None:
    """Compare the task's post-processing candidates on the validation predictions of every finished
    fold (cross-validation, as nnU-Net decides for binary) and write the decision into the model
    folder, where rbmnet_predict applies it. The minimum tooth size comes from the training labels."""
    if not task.postprocessing_candidates:
        return None
    from rbmnet.tasks.teeth_postprocessing import decide_postprocessing, min_tooth_size

    cases, training = [], set()
    for fold_dir in sorted(Path(model_folder).glob(NUMBERED_FOLDS_GLOB)):
        if not (fold_dir / VALIDATION_FOLDER / SUMMARY_JSON).is_file():
            continue
        record = read_json(fold_dir / TRAINING_CASES_JSON)
        training.update(record["cases"])
        for case in record["validation_cases"]:
            cases.append((read_label(fold_dir / VALIDATION_FOLDER / f"{case}.png"),
                          read_label(reference_path(raw_dir, case, dataset_json))))
    if not cases:
        return None
    params = {"min_size": min_tooth_size(read_label(reference_path(raw_dir, c, dataset_json)) for c in sorted(training))}
    decision = decide_postprocessing(cases, task.numbering, params, list(task.postprocessing_candidates))
    decision["folds"] = sorted(int(fold_of_folder_name(p.name))
                               for p in Path(model_folder).glob(NUMBERED_FOLDS_GLOB)
                               if (p / VALIDATION_FOLDER / SUMMARY_JSON).is_file())
    write_json(Path(model_folder) / POSTPROCESSING_JSON, decision)
    scores = decision["scores"]
    print(f"post-processing on {len(cases)} validation cases of folds {decision['folds']}: "
          + ", ".join(f"{name} tooth Dice {s['tooth_dice']:.4f} / ID acc {s['identification_accuracy']:.4f}"
                      for name, s in scores.items()) + f" -> {decision['chosen']}")
    return decision
