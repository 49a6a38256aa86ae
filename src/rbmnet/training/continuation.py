"""What must hold before a stage touches its folders: a run is continued only with the plan it started
with and never shortened; a model's folds are all trained with one plan. Read-only checks, so a refused
run leaves every file as it was."""
from __future__ import annotations

import json
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json
from rbmnet.layout import FOLD_PREFIX, MODEL_PLANS_JSON
from rbmnet.model.checkpoint import FINAL, LATEST, load_checkpoint
from rbmnet.planning.plan import LAUNCH_ONLY_KEYS, Plan
from rbmnet.planning.planner import flatten_plan

# plan keys that may change between the runs of one model: how a plan was derived, where batches are
# made, where a fold starts without --init (the model id names the start)
FREE_KEYS = ("derivation", "augmentation.data_path", *LAUNCH_ONLY_KEYS)
STAGE_SECTIONS = {"pretext": "pretext", "seg": "segmentation"}  # StageSpec.kind -> plan section


def plan_differences(old: dict, new: dict, free: tuple[str, ...] = ()) -> list[str]:
    """'key: old -> new' for each plan value that differs, keys in `free` (and below them) left out."""
    # read through Plan so that keys an older rbmnet wrote (or left out) compare as today's plan would
    before = flatten_plan(Plan.from_dict(old, "the model's plan").to_dict())
    after = flatten_plan(Plan.from_dict(new).to_dict())
    lines = []
    for key in sorted(set(before) | set(after)):
        if any(key == f or key.startswith(f + ".") for f in (*FREE_KEYS, *free)):
            continue
        if before.get(key) != after.get(key):
            lines.append(f"{key}: {json.dumps(before.get(key))} -> {json.dumps(after.get(key))}")
    return lines


def check_continuation(folder: Path, plan: dict, kind: str) -> None:
    """--continue: the checkpoint's plan must be this plan (more epochs allowed), and no shorter."""
    section = STAGE_SECTIONS[kind]
    checkpoint = load_checkpoint(folder / LATEST, mmap=True)
    differences = plan_differences(checkpoint["plan"], plan, free=(f"{section}.epochs",))
    if differences:
        raise RbmnetError(f"{folder}: the plan changed since this run started ({'; '.join(differences[:3])}"
                          f"{'; ...' if len(differences) > 3 else ''}); restore it, or pass --overwrite "
                          f"instead of --continue to train again from the start")
    trained, planned = checkpoint["epoch"], plan[section]["epochs"]
    if trained > planned:
        raise RbmnetError(f"{folder / LATEST}: {trained} epochs trained, the plan asks for {planned}; --continue "
                          f"only adds epochs (--epochs {trained} or more), or pass --overwrite to start again")


def check_model_plan(model_folder: Path, run_folder: Path, plan: dict, kind: str) -> None:
    """A fold of a model whose other folds were trained with another plan would mix two models in one
    folder (its plans.json would no longer describe them): refuse, naming what differs."""
    path = Path(model_folder) / MODEL_PLANS_JSON
    if kind != "seg" or not path.is_file():
        return
    trained = [f.name for f in Path(model_folder).glob(f"{FOLD_PREFIX}*")
               if f != Path(run_folder) and ((f / FINAL).is_file() or (f / LATEST).is_file())]
    if not trained:
        return
    differences = plan_differences(read_json(path), plan, free=("segmentation.epochs",))
    if differences:
        raise RbmnetError(f"{model_folder}: {', '.join(sorted(trained))} trained with another plan "
                          f"({'; '.join(differences[:3])}{'; ...' if len(differences) > 3 else ''}); "
                          f"use another plans name (-p) for this plan")
