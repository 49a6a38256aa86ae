"""A trained segmentation fold read back: its checkpoint (weights_only), the plan copy it holds, the
task rebuilt from that plan and dataset.json, and the network rebuilt and loaded. Prediction (and any
other backend or export) reads models only through here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rbmnet.errors import RbmnetError
from rbmnet.layout import fold_folder_name
from rbmnet.model.checkpoint import FINAL, load_checkpoint
from rbmnet.model.network import build_model_network
from rbmnet.planning.plan import Plan
from rbmnet.tasks import build_task
from rbmnet.tasks.base import SegmentationTask


@dataclass
class FoldModel:
    network: torch.nn.Module  # in eval mode, on the CPU
    plan: Plan
    task: SegmentationTask
    meta: dict
    dataset_json: dict
    path: Path


def load_fold_model(model_folder: Path, fold: str) -> FoldModel:
    """The fold's final checkpoint as a ready network; one-line errors name the file."""
    path = Path(model_folder) / fold_folder_name(fold) / FINAL
    checkpoint = load_checkpoint(path)
    meta = checkpoint.get("meta") or {}
    if meta.get("stage") != "segmentation":
        raise RbmnetError(f"{path}: a {meta.get('stage', 'unknown')} checkpoint, not a segmentation model")
    plan = Plan.from_dict(checkpoint["plan"], source=f"{path} plan")
    dataset_json = checkpoint.get("dataset_json") or {}
    task = build_task(plan, dataset_json)
    if meta.get("output_channels", task.output_channels) != task.output_channels:
        raise RbmnetError(f"{path}: {meta.get('output_channels')} output channels, but its task "
                          f"{task.name} needs {task.output_channels}")
    network = build_model_network(plan.network, task.output_channels, meta.get("architecture"))
    try:
        network.load_state_dict(checkpoint["network"])
    except RuntimeError as exc:
        raise RbmnetError(f"{path}: weights do not fit the plan's network ({str(exc).splitlines()[0]})") from None
    return FoldModel(network.eval(), plan, task, meta, dataset_json, path)
