"""`rbmnet_export -o DIR`: a self-contained copy of an exported model, which `rbmnet_predict -m DIR` uses
without the results root (and without checkpoints: the ONNX graphs are the model).

DIR holds plans.json, dataset.json, postprocessing.json when the model has one, and fold_<k>/model.onnx
with fold_<k>/model.json for every exported fold. It is filled as a hidden staging folder beside DIR and
renamed into place at the end, so an interrupted copy never looks complete.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json
from rbmnet.layout import DATASET_JSON, MODEL_PLANS_JSON, ONNX_JSON, ONNX_MODEL, POSTPROCESSING_JSON, fold_folder_name
from rbmnet.export.model_export import FoldExport


def check_copy_target(target: Path) -> Path:
    """Refuse a target that holds something, before any export work is done."""
    target = Path(target).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RbmnetError(f"{target}: exists and is not an empty folder; choose another -o or remove it first")
    return target


def write_portable_copy(model_folder: Path, exports: list[FoldExport], target: Path) -> Path:
    target = check_copy_target(target)
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        # the plan and dataset.json the folds were trained with (their checkpoints' copies)
        write_json(staging / MODEL_PLANS_JSON, exports[0].record["plan"])
        write_json(staging / DATASET_JSON, exports[0].record["dataset_json"])
        if (Path(model_folder) / POSTPROCESSING_JSON).is_file():
            shutil.copy2(Path(model_folder) / POSTPROCESSING_JSON, staging / POSTPROCESSING_JSON)
        for export in exports:
            fold_folder = staging / fold_folder_name(export.fold)
            fold_folder.mkdir()
            shutil.copy2(export.onnx_path, fold_folder / ONNX_MODEL)
            shutil.copy2(export.json_path, fold_folder / ONNX_JSON)
        if target.is_dir():
            target.rmdir()  # empty (checked): the staging folder takes its place
        os.replace(staging, target)
    except OSError as exc:
        raise RbmnetError(f"{target}: could not write the copy ({exc.strerror or exc})") from None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
