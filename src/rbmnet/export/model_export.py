"""rbmnet_export: each trained fold of a model as a verified ONNX graph beside its checkpoint
(`fold_<k>/model.onnx`) with `fold_<k>/model.json` (read back by model/exported.py). See docs/export.md.

Every fold is exported and verified into a hidden temporary file first; only when all of them passed
are they renamed into place, so a refused export leaves the model folder as it was.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rbmnet import __version__
from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import atomic_path, read_json, write_json
from rbmnet.layout import CHECKPOINT_FINAL, FOLD_PREFIX, POSTPROCESSING_JSON
from rbmnet.model.exported import (EXPORT_FORMAT, EXPORT_FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, export_paths,
                                   file_sha256)
from rbmnet.model.folder import trained_folds
from rbmnet.model.forward import ProbabilityNetwork
from rbmnet.model.loading import FoldModel, load_fold_model
from rbmnet.model.onnx_runtime import onnx_predictor
from rbmnet.export.onnx_graph import OPSET, export_graph
from rbmnet.export.verification import TOLERANCE, max_difference, sample_shapes


@dataclass
class FoldExport:
    fold: str
    onnx_path: Path
    json_path: Path
    max_difference: float
    seconds: float
    record: dict


def export_model(model_folder: Path, folds: list[str] | None = None,
                 log: Callable[[str], None] = lambda line: None) -> list[FoldExport]:
    """Export `folds` (default: every trained fold) of a segmentation model folder; `log` gets a line per fold."""
    model_folder = Path(model_folder)
    folds = folds_to_export(model_folder, folds)
    exports: list[FoldExport] = []
    # each graph goes to a temporary file that is renamed into place when the block ends without error
    with contextlib.ExitStack() as graphs:
        for fold in folds:
            onnx_path, _ = export_paths(model_folder, fold)
            exports.append(_stage_fold(model_folder, fold, folds, graphs.enter_context(atomic_path(onnx_path))))
            log(f"fold {fold}: verified in {exports[-1].seconds:.0f} s, max |onnx - torch| = "
                f"{exports[-1].max_difference:.2g} (tolerance {TOLERANCE:g})")
        for export in exports:  # a fold without model.json is not exported: an old one must not describe a new graph
            export.json_path.unlink(missing_ok=True)
    for export in exports:
        write_json(export.json_path, export.record)
    return exports


def folds_to_export(model_folder: Path, folds: list[str] | None) -> list[str]:
    """The folds asked for (default: all trained ones); one-line errors say what to train or pass."""
    if not model_folder.is_dir():
        raise RbmnetError(f"{model_folder}: model folder does not exist")
    trained = trained_folds(model_folder)
    if not trained and model_folder.name.startswith(FOLD_PREFIX):
        raise RbmnetError(f"{model_folder}: is one fold of a model; pass its parent folder and "
                          f"-f {model_folder.name.removeprefix(FOLD_PREFIX)}")
    if not trained:
        raise RbmnetError(f"{model_folder}: nothing to export, no trained segmentation fold "
                          f"({FOLD_PREFIX}*/{CHECKPOINT_FINAL}); train one first: "
                          f"rbmnet_train seg 0 -d {model_folder.parent.name}")
    missing = [fold for fold in folds or () if fold not in trained]
    if missing:
        raise RbmnetError(f"{model_folder}: fold(s) {', '.join(missing)} not trained (trained: {', '.join(trained)})")
    return list(dict.fromkeys(folds)) if folds else trained


def _stage_fold(model_folder: Path, fold: str, folds: list[str], tmp: Path) -> FoldExport:
    """Export and verify one fold into `tmp`, a temporary file beside its final place."""
    start = time.perf_counter()
    loaded = load_fold_model(model_folder, fold)
    model = ProbabilityNetwork(loaded.network, loaded.task).eval()
    size_multiple = int(getattr(loaded.network, "total_downsampling", 1))
    architecture = loaded.meta.get("architecture") or loaded.plan.network.architecture
    onnx_path, json_path = export_paths(model_folder, fold)
    try:
        export_graph(model, loaded.plan.input_size, tmp)
    except RbmnetError as exc:
        raise RbmnetError(f"{loaded.path}: {exc}; nothing exported") from None
    predict = onnx_predictor(tmp, size_multiple, architecture, name=onnx_path)
    shapes = sample_shapes(loaded.plan.input_size, size_multiple)
    try:
        difference = max_difference(model, predict, shapes)
    except RbmnetError as exc:  # the graph (or the network) cannot take one of the sample sizes
        raise RbmnetError(f"{exc}; nothing exported") from None
    if not difference <= TOLERANCE:
        raise RbmnetError(f"{onnx_path}: ONNX Runtime and PyTorch differ by up to {difference:.3g} on sample "
                          f"images (tolerance {TOLERANCE:g}); nothing exported")
    record = export_record(model_folder, loaded, fold, folds, size_multiple, difference, shapes)
    return FoldExport(fold, onnx_path, json_path, difference, time.perf_counter() - start, record)


def export_record(model_folder: Path, loaded: FoldModel, fold: str, folds: list[str], size_multiple: int,
                  difference: float, shapes) -> dict:
    """model.json: what prediction needs outside the graph, then the plan and dataset.json for rbmnet."""
    task, plan = loaded.task, loaded.plan
    decision_path = model_folder / POSTPROCESSING_JSON
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
        "rbmnet_version": __version__, "torch_version": torch.__version__, "onnx_opset": OPSET,
        "dataset": loaded.dataset_json.get("name"), "model_id": loaded.meta.get("model_id", model_folder.name),
        "fold": fold, "folds": folds, "checkpoint_sha256": file_sha256(loaded.path),
        "input": {"name": INPUT_NAME, "shape": ["batch", 1, "height", "width"], "dtype": "float32",
                  "size_multiple": size_multiple,
                  "content": "the radiograph normalized as `normalization` says and resized to `input_size`"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", task.output_channels, "height", "width"],
                   "dtype": "float32", "content": "the task's probabilities (activation inside the graph)"},
        "input_size": list(plan.input_size),
        "normalization": dataclasses.asdict(plan.normalization),
        "task": {"name": task.name, "numbering_head": getattr(task, "head", None),
                 "threshold": plan.segmentation.threshold, "num_classes": task.num_classes,
                 # label value saved for each class index the task decodes
                 "index_labels": task.index_to_labels(np.arange(task.num_classes, dtype=np.uint8)).tolist(),
                 # mirror TTA: channel c of the image's output = channel order[c] of the mirrored image's output
                 "channel_flip_order": task.channel_flip_order},
        "labels": loaded.dataset_json.get("labels"),
        "tooth_numbering": loaded.dataset_json.get("tooth_numbering"),
        "postprocessing": read_json(decision_path) if decision_path.is_file() else {"chosen": "none"},
        "verification": {"tolerance": TOLERANCE, "max_abs_difference": difference,
                         "shapes": [list(shape) for shape in shapes]},
        "plan": plan.to_dict(),
        "dataset_json": loaded.dataset_json,
    }
