"""A fold's ONNX export read back: `fold_<k>/model.onnx` and `fold_<k>/model.json` (docs/export.md).

The graph maps normalized images (B,1,H,W) to probabilities (B,C,H,W); model.json holds what
prediction needs outside it (input size, normalization, task, labels, flip order, post-processing)
and, for rbmnet itself, the plan and dataset.json the task is rebuilt from. It also records the
SHA-256 of the checkpoint it was made from: a fold trained further since then has a stale export.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json
from rbmnet.layout import CHECKPOINT_FINAL, ONNX_JSON, ONNX_MODEL, fold_folder_name
from rbmnet.planning.plan import Plan
from rbmnet.tasks import build_task
from rbmnet.tasks.base import SegmentationTask

EXPORT_FORMAT = "rbmnet-onnx-export"
EXPORT_FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"


@dataclass
class ExportedFold:
    onnx_path: Path
    plan: Plan
    task: SegmentationTask
    dataset_json: dict
    record: dict  # model.json as read

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (the network's total downsampling)."""
        return int(self.record["input"]["size_multiple"])


def export_paths(model_folder: Path, fold: str) -> tuple[Path, Path]:
    """(model.onnx, model.json) of a fold."""
    folder = Path(model_folder) / fold_folder_name(fold)
    return folder / ONNX_MODEL, folder / ONNX_JSON


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stale_reason(model_folder: Path, fold: str) -> str | None:
    """Why a fold's export cannot stand in for its checkpoint (missing, or made from another
    checkpoint), or None when it can. A folder without checkpoints (a copy) is judged by its files."""
    onnx_path, json_path = export_paths(model_folder, fold)
    if not (onnx_path.is_file() and json_path.is_file()):
        return f"fold {fold} has no ONNX export"
    checkpoint = onnx_path.parent / CHECKPOINT_FINAL
    if checkpoint.is_file() and _read_record(json_path).get("checkpoint_sha256") != file_sha256(checkpoint):
        return f"fold {fold}'s ONNX export was made from an earlier {CHECKPOINT_FINAL}"
    return None


def load_exported_fold(model_folder: Path, fold: str) -> ExportedFold:
    """The fold's export with the plan and task it was made with; one-line errors name the file."""
    onnx_path, json_path = export_paths(model_folder, fold)
    record = _read_record(json_path)
    plan = Plan.from_dict(record["plan"], source=f"{json_path} plan")
    task = build_task(plan, record["dataset_json"])
    if record["task"]["channel_flip_order"] != task.channel_flip_order:
        raise RbmnetError(f"{json_path}: its task's flip order differs from this rbmnet's "
                          f"(made by rbmnet {record.get('rbmnet_version')}); export the model again")
    return ExportedFold(onnx_path, plan, task, record["dataset_json"], record)


def _read_record(json_path: Path) -> dict:
    try:
        record = read_json(json_path)
    except FileNotFoundError:
        raise RbmnetError(f"{json_path}: missing; run rbmnet_export for this model") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RbmnetError(f"{json_path}: not valid JSON; run rbmnet_export again") from None
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        raise RbmnetError(f"{json_path}: not an rbmnet ONNX export description (format {EXPORT_FORMAT})")
    if record.get("format_version") != EXPORT_FORMAT_VERSION:
        raise RbmnetError(f"{json_path}: export format version {record.get('format_version')}, this rbmnet "
                          f"reads {EXPORT_FORMAT_VERSION}; run rbmnet_export again")
    return record
