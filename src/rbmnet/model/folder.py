"""Where a trained model lives, what its folder is called and what it holds (docs/model_folder.md).

The model id names architecture, initialisation, training fraction and plan, so that pretrained vs
scratch models and different fractions never overwrite each other:
    pretext__resunet__plans
    seg__resunet__rbm__frac0.2__plans          (fold folders fold_0 .. fold_4, or fold_all)
    seg__resunet__scratch__frac0.2__plans__teeth-classes   (numbered teeth, classes head)
    pretext__resunet__plans__grid              (fine-grained masking; Random Block Masking has no suffix)
    seg__resunet__grid__frac0.05__plans__enc__warm2__seed1   (its encoder, a warm-up, seed 1)
A fine-tuning recipe other than the default (encoder-only transfer, a lower rate for transferred
layers, a warm-up, semi-supervision) is named too, so arms of a comparison never share a folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json, write_json
from rbmnet.layout import (DATASET_JSON, FOLD_PREFIX, MODEL_PLANS_JSON, ONNX_JSON, ONNX_MODEL, POSTPROCESSING_JSON,
                           fold_of_folder_name)
from rbmnet.paths import results_dataset_dir
from rbmnet.model.checkpoint import FINAL, LATEST


# the initialisation part of a segmentation model id, by `rbmnet_train seg --init` value
INIT_TAGS = {"pretext": "rbm", "scratch": "scratch"}


def pretext_model_id(architecture: str, plans_name: str, seed_tag: str = "", masking_tag: str = "") -> str:
    """`masking_tag` from the masking scheme (pretexts/): '' for Random Block Masking."""
    return f"pretext__{architecture}__{plans_name}{masking_tag}{seed_tag}"


def segmentation_model_id(architecture: str, init_tag: str, fraction: float, plans_name: str,
                          label_noise: float = 0.0, seed_tag: str = "", task_tag: str = "",
                          recipe_tag: str = "") -> str:
    """`task_tag` from the task (tasks/): '' for binary, '__teeth-<head>' for numbered teeth;
    `recipe_tag` from fine_tuning_tag."""
    noise = f"__noise{label_noise:g}" if label_noise else ""
    return f"seg__{architecture}__{init_tag}__frac{fraction:g}__{plans_name}{task_tag}{recipe_tag}{noise}{seed_tag}"


def fine_tuning_tag(config, transferred: bool) -> str:
    """The model id's part for a segmentation recipe other than the default; `config` is the plan's
    segmentation section, `transferred` whether the run starts from other weights (the transfer keys
    mean nothing from scratch)."""
    parts = []
    if transferred and config.transfer != "full":
        parts.append(f"__{config.transfer[:3]}")
    if transferred and config.transferred_lr_factor != 1:
        parts.append(f"__tlr{config.transferred_lr_factor:g}")
    if config.warmup_epochs:
        parts.append(f"__warm{config.warmup_epochs}")
    if config.semi_supervised != "off":
        parts.append("__" + config.semi_supervised.replace("_", "-"))
    return "".join(parts)


def seed_tag(seed: int | None) -> str:
    """The model id's seed part: only for a seed given explicitly (--seed, --seeds); None: the plan's."""
    return "" if seed is None else f"__seed{seed}"


def prepare_model_folder(dataset_name: str, model_id: str, plan: dict, dataset_json: dict) -> Path:
    folder = results_dataset_dir(dataset_name) / model_id
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MODEL_PLANS_JSON, plan)
    write_json(folder / DATASET_JSON, dataset_json)
    return folder


def check_run_folder(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to silently restart or clobber a run: a checkpoint means --continue or --overwrite.
    Only looks: whatever --overwrite discards is discarded by `clear_run_folder`, once every check passed."""
    has_checkpoint = (folder / LATEST).exists() or (folder / FINAL).exists()
    if resume and not (folder / LATEST).exists():
        raise RbmnetError(f"{folder}: nothing to continue (no {LATEST})")
    if has_checkpoint and not resume and not overwrite:
        raise RbmnetError(f"{folder}: already has a checkpoint; pass --continue to resume it "
                          f"or --overwrite to train again from the start")


def clear_run_folder(folder: Path, keep: tuple[str, ...] = ()) -> None:
    """Empty a run folder for a fresh start, keeping the names in `keep` (the run's lock)."""
    for path in Path(folder).iterdir() if Path(folder).is_dir() else ():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def postprocessing_name(model_folder: Path) -> str:
    """The post-processing the model decided on ('none' when it has no decision)."""
    path = Path(model_folder) / POSTPROCESSING_JSON
    return read_json(path).get("chosen", "none") if path.is_file() else "none"


def load_postprocessing(model_folder: Path):
    """The model's post-processing as a function label map -> label map, or None (none decided)."""
    path = Path(model_folder) / POSTPROCESSING_JSON
    if not path.is_file():
        return None
    from rbmnet.tasks.teeth_postprocessing import apply_postprocessing

    decision = read_json(path)
    if decision.get("chosen", "none") == "none":
        return None
    return lambda label_map: apply_postprocessing(label_map, decision)


def trained_folds(model_folder: Path) -> list[str]:
    """Fold names ('0', '1', ..., 'all') whose final checkpoint exists, numbered folds in numeric order."""
    names = [fold_of_folder_name(p.parent.name) for p in Path(model_folder).glob(f"{FOLD_PREFIX}*/{FINAL}")]
    return sorted(names, key=_fold_order)


def exported_folds(model_folder: Path) -> list[str]:
    """Fold names with a complete ONNX export (rbmnet_export writes the graph first, its JSON last)."""
    names = [fold_of_folder_name(p.parent.name) for p in Path(model_folder).glob(f"{FOLD_PREFIX}*/{ONNX_JSON}")
             if (p.parent / ONNX_MODEL).is_file()]
    return sorted(names, key=_fold_order)


def predictable_folds(model_folder: Path) -> list[str]:
    """Folds prediction can use: trained or exported (a copy made by `rbmnet_export -o` holds only exports)."""
    return sorted(set(trained_folds(model_folder)) | set(exported_folds(model_folder)), key=_fold_order)


def _fold_order(name: str) -> tuple:
    return not name.isdigit(), int(name) if name.isdigit() else 0, name


def default_folds(model_folder: Path) -> list[str]:
    """Every predictable numbered fold (the cross-validation ensemble); 'all' only when nothing else exists."""
    folds = predictable_folds(model_folder)
    numbered = [f for f in folds if f.isdigit()]
    return numbered or folds
