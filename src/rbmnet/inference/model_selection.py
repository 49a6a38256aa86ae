"""Which trained model predicts: the model folder (a path, an id, or the newest) and its folds.

A model folder (see docs/model_folder.md) holds plans.json, dataset.json and fold_<k>/checkpoint_final.pt;
a fold counts as trained only once its final checkpoint exists (checkpoint_latest is mid-training).
A folder written by `rbmnet_export -o` holds fold_<k>/model.onnx (+ model.json) instead of checkpoints.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json
from rbmnet.paths import existing_datasets, results_dataset_dir, results_root
from rbmnet.layout import DATASET_JSON, DEFAULT_PLANS_NAME, FOLD_PREFIX, MODEL_PLANS_JSON, fold_of_folder_name
from rbmnet.model.folder import default_folds, predictable_folds
from rbmnet.model.checkpoint import FINAL

SEGMENTATION_PREFIX = "seg__"


@dataclass
class ModelChoice:
    folder: Path
    folds: list[str]
    how: str  # why this model: "given" or "newest segmentation model of <name>"


def select_folds(model_folder: Path, folds: list[str] | None) -> list[str]:
    model_folder = Path(model_folder)
    if not model_folder.is_dir():
        raise RbmnetError(f"{model_folder}: model folder does not exist")
    available = predictable_folds(model_folder)  # a final checkpoint or an ONNX export
    if not available and (model_folder / FINAL).is_file() and model_folder.name.startswith(FOLD_PREFIX):
        raise RbmnetError(f"{model_folder}: is one fold of a model; pass its parent folder and "
                          f"-f {fold_of_folder_name(model_folder.name)}")
    if not available and (model_folder / FINAL).is_file():  # a pretext model: it reconstructs, it does not segment
        raise RbmnetError(f"{model_folder}: is a pretext model, not a segmentation model; train one from it with "
                          f"rbmnet_train seg FOLD -d {model_folder.parent.name}{_plans_flag(model_folder)} "
                          f"--init pretext, then predict with that")
    if not available:
        raise RbmnetError(f"{model_folder}: no trained fold (no {FOLD_PREFIX}*/{FINAL}); finish rbmnet_train seg first")
    if not folds:
        return default_folds(model_folder)
    missing = [f for f in folds if f not in available]
    if missing:
        raise RbmnetError(f"{model_folder}: fold(s) {', '.join(missing)} not trained "
                          f"(trained: {', '.join(available)})")
    return list(dict.fromkeys(folds))  # keep the order given, drop repeats


def _plans_flag(model_folder: Path) -> str:
    """' -p NAME' when the model was trained with a plan other than the default one."""
    path = model_folder / MODEL_PLANS_JSON
    name = read_json(path).get("plans_name", DEFAULT_PLANS_NAME) if path.is_file() else DEFAULT_PLANS_NAME
    return "" if name == DEFAULT_PLANS_NAME else f" -p {name}"


def newest_segmentation_model(dataset_dir: Path) -> Path:
    """The segmentation model folder whose newest final checkpoint is the most recent."""
    newest: tuple[float, Path] | None = None
    for folder in dataset_dir.glob(f"{SEGMENTATION_PREFIX}*"):
        times = [p.stat().st_mtime for p in folder.glob(f"{FOLD_PREFIX}*/{FINAL}")]
        if times and (newest is None or max(times) > newest[0]):
            newest = (max(times), folder)
    if newest is None:
        raise RbmnetError(f"{dataset_dir}: no trained segmentation model; run rbmnet_train seg first")
    return newest[1]


def model_dataset_name(model_folder: Path) -> str | None:
    path = Path(model_folder) / DATASET_JSON
    if not path.is_file():
        return None
    try:
        return read_json(path).get("name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise RbmnetError(f"{path}: not a valid dataset.json") from None


def choose_model(dataset: str | None, model: str | None, folds: list[str] | None = None) -> ModelChoice:
    """Resolve --model (a folder path or a model id under rbmnet_results/<dataset>/) and -f.

    Without --model: the newest segmentation model of the dataset. A model trained on another
    dataset than -d names is refused: its labels and preprocessing belong to other images.
    """
    if model is not None and Path(model).expanduser().is_dir():
        folder, how = Path(model).expanduser().absolute(), "given"
    else:
        dataset = _results_dataset(dataset)
        dataset_dir = results_dataset_dir(dataset)
        if model is None:
            folder, how = newest_segmentation_model(dataset_dir), f"newest segmentation model of {dataset}"
        else:
            folder, how = dataset_dir / model, "given"
            if not folder.is_dir():
                raise RbmnetError(f"--model {model}: neither a folder nor a model id in {dataset_dir} "
                                  f"(models: {', '.join(_model_ids(dataset_dir)) or 'none'})")
    trained_on = model_dataset_name(folder)
    if dataset is not None and trained_on is not None and trained_on != dataset:
        raise RbmnetError(f"{folder}: model was trained on dataset '{trained_on}', not '{dataset}'")
    return ModelChoice(folder=folder, folds=select_folds(folder, folds), how=how)


def _results_dataset(name: str | None) -> str:
    """-d, or the only dataset that has trained models; names the results root when it cannot tell."""
    root = results_root()
    names = existing_datasets(root)
    if name is None and len(names) == 1:
        return names[0]
    if name is None or name not in names:
        listing = ", ".join(names) or "none"
        what = "choose one with -d" if name is None else f"no trained models for dataset '{name}'"
        raise RbmnetError(f"{what} in {root} (datasets with models: {listing})")
    return name


def _model_ids(dataset_dir: Path) -> list[str]:
    return sorted(p.name for p in dataset_dir.iterdir() if p.is_dir()) if dataset_dir.is_dir() else []
