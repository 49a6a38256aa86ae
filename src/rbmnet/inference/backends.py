"""Prediction backends: what computes a fold's probabilities. Each one turns a fold of a model folder
into a FoldPredictor (model/forward.py); preprocessing, mirror TTA, fold ensembling, post-processing and
the outputs are the same whichever computes them (inference/predictor.py).

    torch  the fold's checkpoint rebuilt as a network (CPU or CUDA)
    onnx   the fold's rbmnet_export graph in ONNX Runtime (CPU)
    auto   onnx on CPU when every chosen fold has an up-to-date export, torch otherwise (and on CUDA)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rbmnet.errors import RbmnetError
from rbmnet.layout import CHECKPOINT_FINAL, fold_folder_name
from rbmnet.model.device import resolve_device
from rbmnet.model.exported import load_exported_fold, stale_reason
from rbmnet.model.forward import FoldPredictor, torch_predictor
from rbmnet.model.loading import load_fold_model
from rbmnet.model.onnx_runtime import import_onnxruntime, onnx_predictor
from rbmnet.planning.plan import Plan
from rbmnet.tasks.base import SegmentationTask

AUTO = "auto"


@dataclass
class LoadedFold:
    predict: FoldPredictor
    plan: Plan  # preprocessing (input size, normalization) comes from here
    task: SegmentationTask
    dataset_json: dict
    model_id: str


@dataclass
class Backend:
    load: Callable[[Path, str, torch.device], LoadedFold]  # (model folder, fold, device) -> the fold, ready
    unusable: Callable[[Path, list[str], torch.device], str | None]  # why it cannot run these folds, or None


def _load_torch(model_folder: Path, fold: str, device: torch.device) -> LoadedFold:
    model = load_fold_model(model_folder, fold)
    # channels_last: oneDNN's convolutions run ~25 % faster on CPU without layout reorders (measured,
    # benchmarks/predict_speed.py); on CUDA it is the layout tensor cores prefer
    network = model.network.to(device, memory_format=torch.channels_last)
    return LoadedFold(torch_predictor(network, model.task, device), model.plan, model.task, model.dataset_json,
                      model.meta.get("model_id", Path(model_folder).name))


def _torch_unusable(model_folder: Path, folds: list[str], device: torch.device) -> str | None:
    missing = [f for f in folds if not (Path(model_folder) / fold_folder_name(f) / CHECKPOINT_FINAL).is_file()]
    if missing:
        return (f"fold(s) {', '.join(missing)} have no {CHECKPOINT_FINAL} (an ONNX-only copy); "
                f"predict with --backend onnx")
    return None


def _load_onnx(model_folder: Path, fold: str, device: torch.device) -> LoadedFold:
    exported = load_exported_fold(model_folder, fold)
    predict = onnx_predictor(exported.onnx_path, exported.size_multiple, exported.plan.network.architecture)
    return LoadedFold(predict, exported.plan, exported.task, exported.dataset_json,
                      exported.record.get("model_id", Path(model_folder).name))


def _onnx_unusable(model_folder: Path, folds: list[str], device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"the onnx backend runs on the CPU, not {device}; use --device cpu or --backend torch"
    for fold in folds:
        reason = stale_reason(model_folder, fold)
        if reason is not None:
            return f"{reason}; run rbmnet_export -m {Path(model_folder)} (or predict with --backend torch)"
    try:
        import_onnxruntime()
    except RbmnetError as exc:
        return str(exc)
    return None


BACKENDS: dict[str, Backend] = {"torch": Backend(_load_torch, _torch_unusable),
                                "onnx": Backend(_load_onnx, _onnx_unusable)}
BACKEND_NAMES = (AUTO, *BACKENDS)


def choose_backend(name: str, model_folder: Path, folds: list[str], device_name: str = "auto") -> tuple[str, torch.device]:
    """The backend and device that will predict `folds`; an asked-for backend that cannot is a one-line error."""
    if name not in BACKEND_NAMES:
        raise RbmnetError(f"unknown backend '{name}' (use {', '.join(BACKEND_NAMES)})")
    if name == AUTO:
        return _auto(model_folder, folds, device_name)
    # onnx is CPU only: "auto" means the CPU for it even where CUDA exists
    device = torch.device("cpu") if name == "onnx" and device_name == "auto" else resolve_device(device_name)
    reason = BACKENDS[name].unusable(model_folder, folds, device)
    if reason is not None:
        raise RbmnetError(f"{model_folder}: --backend {name}: {reason}")
    return name, device


def _auto(model_folder: Path, folds: list[str], device_name: str) -> tuple[str, torch.device]:
    device, cpu = resolve_device(device_name), torch.device("cpu")
    onnx_reason = BACKENDS["onnx"].unusable(model_folder, folds, cpu)
    torch_reason = BACKENDS["torch"].unusable(model_folder, folds, device)
    if onnx_reason is None and (device.type == "cpu" or torch_reason is not None):
        return "onnx", cpu  # an ONNX-only copy predicts on the CPU even where CUDA exists
    if torch_reason is None:
        return "torch", device
    raise RbmnetError(f"{model_folder}: {onnx_reason}")  # neither can: say what the export lacks


def load_folds(backend: str, model_folder: Path, folds: list[str], device: torch.device) -> list[LoadedFold]:
    return [BACKENDS[backend].load(Path(model_folder), fold, device) for fold in folds]
