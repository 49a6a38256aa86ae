"""The benchmark grid: which (model, fraction, fold, label noise) cells to train, and training the missing ones.

A cell is one `rbmnet_train seg FOLD --arch A --init I --fraction F --label-noise P`: it lives in the model
folder that command writes (training/model_folder.py), so cells trained by hand count, and the table
reads the same fold summaries `rbmnet_train` writes. Every cell of a grid trains the one segmentation task
the plan names (segmentation.task, numbering_head; --task sets them), and the task is part of the model id,
so binary and teeth cells never stand in for each other. A cell is
    finished     checkpoint_final and validation/summary.json present: skipped;
    interrupted  checkpoint_latest present: resumed (--continue), which also re-does a missing validation;
    stale        finished, but on other cases than the current splits give (splits re-made): reported as a
                 failure, never silently mixed into the table nor deleted;
    changed      finished or interrupted, but under other settings than this run asks for (the plan its
                 checkpoint holds differs, e.g. other --epochs), or an RBM cell initialised from an older
                 pretext model than the one there now: retrained with --retrain-changed, else reported as
                 a failure naming the differences, so numbers of different recipes never share a table;
    new          trained from the start.
Everything that can be checked before training (folds exist, fractions fit the folds) is checked first,
so a grid that cannot run fails before hours of training, not in the middle.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import click

from rbmnet.benchmarking.arms import (BASELINES, MODEL_ORDER, RBM_ARCHITECTURE, RBM_MODEL,  # noqa: F401 (re-exported)
                                      ModelSpec, resolve_arm, select_models)
from rbmnet.benchmarking.recipe import (PRETEXT_SECTIONS, RBM_SECTIONS, SEGMENTATION_SECTIONS, checkpoint_changes,
                                        describe_changes)
from rbmnet.errors import RbmnetError
from rbmnet.evaluation.segmentation_metrics import METRICS
from rbmnet.io.atomic import read_json
from rbmnet.paths import results_dataset_dir
from rbmnet.model.checkpoint import FINAL, LATEST
from rbmnet.training.label_noise import check_share
from rbmnet.layout import SPLITS_JSON, SUMMARY_JSON, TRAINING_CASES_JSON, VALIDATION_FOLDER, fold_folder_name
from rbmnet.model.folder import pretext_model_id, seed_tag, segmentation_model_id
from rbmnet.tasks import build_task
from rbmnet.training.setup import StageInputs, cli_overrides, load_stage_inputs

@dataclass(frozen=True)
class Cell:
    model: ModelSpec
    fraction: float
    fold: int
    label_noise: float
    task_tag: str = ""  # the task's part of the model id ('' binary, '__teeth-<head>'): tasks never share a cell
    seed: int | None = None  # None: the plan's seed (no seed in the model id), as rbmnet_train without --seed

    def model_id(self, plans_name: str) -> str:
        return segmentation_model_id(self.model.architecture, self.model.init_tag, self.fraction, plans_name,
                                     self.label_noise, seed_tag(self.seed), self.task_tag,
                                     self.model.fine_tuning_tag)

    def describe(self) -> str:
        noise = f", label noise {self.label_noise:g}" if self.label_noise else ""
        seed = f", seed {self.seed}" if self.seed is not None else ""
        return f"{self.model.name}, fraction {self.fraction:g}, fold {self.fold}{noise}{seed}"


@dataclass
class GridSpec:
    dataset_name: str
    plans_name: str
    models: list[ModelSpec]
    fractions: list[float]
    folds: list[int]
    label_noises: list[float] = field(default_factory=lambda: [0.0])
    overrides: dict = field(default_factory=dict)  # segmentation plan overrides (--epochs, --set ...)
    pretext_overrides: dict = field(default_factory=dict)
    device: str = "auto"
    num_workers: int = 2
    retrain_changed: bool = False  # retrain cells (and the pretext model) trained under other settings
    # the segmentation task of every cell (with_task fills these from the plan with the overrides)
    task: str = "binary"
    task_tag: str = ""
    metrics: tuple[str, ...] = METRICS  # what the fold summaries give and the table shows, in order
    seeds: list[int | None] = field(default_factory=lambda: [None])  # training seeds (--seeds); None: the plan's

    def cell(self, model: ModelSpec, fraction: float, fold: int, label_noise: float, seed: int | None = None) -> Cell:
        return Cell(model, fraction, fold, label_noise, self.task_tag, seed)

    def cells(self) -> list[Cell]:
        # fold-major, then seed: after the first (fold, seed) every model and fraction has a number
        return [self.cell(model, fraction, fold, noise, seed) for fold in self.folds for seed in self.seeds
                for noise in self.label_noises for fraction in self.fractions for model in self.models]


@dataclass
class GridOutcome:
    trained: list[Cell] = field(default_factory=list)
    resumed: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell | str, str]] = field(default_factory=list)  # (cell or "pretext", one-line reason)
    retrained: list[Cell] = field(default_factory=list)  # changed cells trained again (also in `trained`)


@dataclass(frozen=True)
class CellState:
    name: str  # finished, interrupted, stale, changed or new (module docstring)
    reason: str = ""  # why a cell is stale or changed


def cell_folder(dataset_name: str, plans_name: str, cell: Cell) -> Path:
    return results_dataset_dir(dataset_name) / cell.model_id(plans_name) / fold_folder_name(cell.fold)


def cell_state(folder: Path, expected_validation: list[str] | None = None, current_plan: dict | None = None,
               pretext_final: Path | None = None, sections: tuple[str, ...] = SEGMENTATION_SECTIONS) -> CellState:
    """The cell's state (module docstring). `current_plan`: the plan this run would train the cell with
    (None: settings are not compared); `pretext_final`: the pretext checkpoint an RBM cell starts from."""
    final, latest = folder / FINAL, folder / LATEST
    finished = final.is_file() and (folder / VALIDATION_FOLDER / SUMMARY_JSON).is_file()
    checkpoint = final if finished else latest if latest.is_file() else None
    if checkpoint is None:
        return CellState("new")
    if current_plan is not None:
        changes = checkpoint_changes(checkpoint, current_plan, sections)
        if pretext_final is not None and pretext_final.is_file() and \
                pretext_final.stat().st_mtime_ns > checkpoint.stat().st_mtime_ns:
            changes.append(f"the pretext model {pretext_final.parent.name} was trained again after this cell")
        if changes:
            return CellState("changed", describe_changes(changes))
    recorded = folder / TRAINING_CASES_JSON
    if finished and expected_validation is not None and recorded.is_file():
        if sorted(read_json(recorded).get("validation_cases", [])) != sorted(expected_validation):
            return CellState("stale", "trained on other validation cases than the splits now give "
                                      "(splits re-made?)")
    return CellState("finished" if finished else "interrupted")


def cell_plan(cell: Cell, inputs: StageInputs) -> dict:
    """The plan rbmnet_train seg writes into the cell's checkpoint (its architecture replaces the plan's)."""
    plan = inputs.plan.to_dict()
    plan["network"] = {**plan["network"], "architecture": cell.model.architecture}
    return plan


InputsKey = tuple  # (model, fraction, seed): what decides a cell's plan


def inputs_key(cell: Cell) -> InputsKey:
    return cell.model, cell.fraction, cell.seed


def cell_overrides(spec: GridSpec, model: ModelSpec, fraction: float, seed: int | None) -> dict:
    seeded = {"seed": seed} if seed is not None else {}
    return {**spec.overrides, **model.override_dict, "segmentation.fraction": fraction, **seeded}


def stage_inputs_per_cell(spec: GridSpec) -> dict[InputsKey, StageInputs]:
    """The plan with the user's overrides, the arm's, the cell's fraction and seed, loaded once per
    (model, fraction, seed); label noise and fold do not change the plan."""
    return {key: load_stage_inputs(spec.dataset_name, spec.plans_name, cell_overrides(spec, *key))
            for key in dict.fromkeys(inputs_key(cell) for cell in spec.cells())}


def check_grid(spec: GridSpec, inputs: dict[float, StageInputs]) -> None:
    """Fail with one line listing every fold/fraction the splits cannot serve, and what to do."""
    from rbmnet.training.fraction import training_subset
    from rbmnet.training.segmentation import fold_split

    for noise in spec.label_noises:
        check_share(noise)
    problems, too_large = [], []
    first = next(iter(inputs.values()))
    by_fraction = {key[1]: value for key, value in inputs.items()}
    splits_path = first.preprocessed_dir / SPLITS_JSON
    labeled = first.data.names("labeled")
    for fold in spec.folds:
        try:
            train_split, _ = fold_split(first.preprocessed_dir, str(fold), labeled)
        except RbmnetError as exc:
            problems.append(str(exc))
            continue
        for fraction in spec.fractions:
            try:
                training_subset(train_split, fraction, len(labeled), by_fraction[fraction].plan.seed, fold)
            except RbmnetError:
                too_large.append((fraction, fold, len(train_split)))
    if too_large:
        needs = ", ".join(f"fraction {f:g} needs {max(1, round(f * len(labeled)))}"
                          for f in sorted({f for f, _, _ in too_large}))
        smallest_split = min(n for _, _, n in too_large)
        problems.append(
            f"{needs} training cases (of {len(labeled)} labeled), but the folds of {splits_path} train on "
            f"{smallest_split}; re-split with "
            f"'rbmnet_plan_and_preprocess -d {spec.dataset_name} --num-folds 10 --overwrite-splits' "
            f"(10 folds allow fractions up to 0.9) or leave them out of --fractions")
    if problems:
        raise RbmnetError("the benchmark grid cannot run, nothing was trained: " + "; ".join(problems))


def pretext_folder(spec: GridSpec, model: ModelSpec) -> Path:
    """The pretext model a (resolved) arm starts from: the one its masking scheme trains."""
    return results_dataset_dir(spec.dataset_name) / pretext_model_id(RBM_ARCHITECTURE, spec.plans_name,
                                                                     masking_tag=model.pretext_id_tag)


def ensure_pretext(spec: GridSpec, outcome: GridOutcome, model: ModelSpec, echo=click.echo) -> bool:
    """Train the pretext model `model` starts from once (resume it when interrupted); reuse it when
    finished under the settings asked for. Returns whether a pretext model fit to start its cells exists."""
    from rbmnet.training.pretext import run_pretext

    try:
        folder = pretext_folder(spec, model)
        inputs = load_stage_inputs(spec.dataset_name, spec.plans_name,
                                   {**spec.pretext_overrides, **model.pretext_overrides,
                                    "network.architecture": RBM_ARCHITECTURE})
        checkpoint = next((folder / name for name in (FINAL, LATEST) if (folder / name).is_file()), None)
        changes = checkpoint_changes(checkpoint, inputs.plan.to_dict(), PRETEXT_SECTIONS) if checkpoint else []
        if changes and not spec.retrain_changed:
            raise RbmnetError(f"{folder} was trained under other settings ({describe_changes(changes)}); "
                              f"pass --retrain-changed to train it (and its RBM cells) again, or use another plan (-p)")
        if checkpoint is not None and checkpoint.name == FINAL and not changes:
            echo(f"pretext: finished model found, reused ({folder})")
            return True
        resume_run = checkpoint is not None and not changes
        what = "retraining (settings changed)" if changes else "resuming" if resume_run else "training"
        echo(f"pretext: {what} {folder.name}")
        run_pretext(inputs, spec.device, spec.num_workers, resume_run=resume_run, overwrite=bool(changes))
        return True
    except Exception as exc:  # the baselines do not need it: report, go on
        outcome.failed.append(("pretext", one_line(exc)))
        echo(f"FAILED pretext: {one_line(exc)}", err=True)
        return False


def run_cell(cell: Cell, inputs: StageInputs, state: str, spec: GridSpec) -> None:
    from rbmnet.training.segmentation import run_segmentation

    run_segmentation(inputs, str(cell.fold), cell.model.architecture, cell.model.init, spec.device,
                     spec.num_workers, resume_run=state == "interrupted", overwrite=state == "changed",
                     model_tag=seed_tag(cell.seed), label_noise=cell.label_noise)


def grid_states(spec: GridSpec, inputs: dict[float, StageInputs]) -> dict[Cell, CellState]:
    from rbmnet.training.segmentation import fold_split

    first = next(iter(inputs.values()))
    labeled = first.data.names("labeled")
    validation = {fold: fold_split(first.preprocessed_dir, str(fold), labeled)[1] for fold in spec.folds}
    pretext_finals = {model: pretext_folder(spec, model) / FINAL for model in spec.models if model.init == "pretext"}
    states = {}
    for cell in spec.cells():
        rbm = cell.model.init == "pretext"
        states[cell] = cell_state(cell_folder(spec.dataset_name, spec.plans_name, cell), validation[cell.fold],
                                  cell_plan(cell, inputs[inputs_key(cell)]),
                                  pretext_finals.get(cell.model), RBM_SECTIONS if rbm else SEGMENTATION_SECTIONS)
    return states


def run_grid(spec: GridSpec, inputs: dict[float, StageInputs], echo=click.echo) -> GridOutcome:
    """Check the grid, train the pretext model if needed, then every cell that is not finished.
    `inputs`: stage_inputs_per_fraction(spec)."""
    check_grid(spec, inputs)
    outcome = GridOutcome()
    cells = spec.cells()
    states = grid_states(spec, inputs)
    pretext_ready = {}  # by pretext folder: arms with one masking scheme share one pretext model
    for model in spec.models:
        if model.init == "pretext" and any(c.model == model and states[c].name != "finished" for c in cells):
            folder = pretext_folder(spec, model)
            if folder not in pretext_ready:
                pretext_ready[folder] = ensure_pretext(spec, outcome, model, echo)
    for number, cell in enumerate(cells, start=1):
        position = f"[{number}/{len(cells)}]"
        folder = cell_folder(spec.dataset_name, spec.plans_name, cell)
        state = states[cell]
        if state.name == "finished":
            echo(f"{position} skipped {cell.describe()}: already trained ({folder})")
            outcome.skipped.append(cell)
            continue
        reason = None
        if state.name == "stale":
            reason = f"{folder} was {state.reason}; delete that folder to retrain it"
        elif state.name == "changed" and not spec.retrain_changed:
            reason = (f"{folder} was trained under other settings ({state.reason}); pass --retrain-changed "
                      f"to train it again, or use another plan (-p)")
        elif cell.model.init == "pretext" and not pretext_ready.get(pretext_folder(spec, cell.model), True):
            reason = "no pretext model to start from (see the pretext failure)"
        if reason:
            echo(f"{position} FAILED {cell.describe()}: {reason}", err=True)
            outcome.failed.append((cell, reason))
            continue
        what = {"interrupted": "resuming", "changed": f"retraining (settings changed: {state.reason})"}
        echo(f"{position} {what.get(state.name, 'training')} {cell.describe()}")
        try:
            run_cell(cell, inputs[inputs_key(cell)], state.name, spec)
        except Exception as exc:  # one failing cell must not lose the others: report it, go on
            echo(f"{position} FAILED {cell.describe()}: {one_line(exc)}", err=True)
            outcome.failed.append((cell, one_line(exc)))
            continue
        (outcome.resumed if state.name == "interrupted" else outcome.trained).append(cell)
        if state.name == "changed":
            outcome.retrained.append(cell)
    return outcome


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return message if isinstance(exc, RbmnetError) else f"{type(exc).__name__}: {message}"


def segmentation_overrides(epochs: int | None, lr: float | None, batch_size: int | None, extra: dict,
                           task: str | None = None, numbering_head: str | None = None) -> dict:
    """The named flags are shorthands for segmentation plan keys, as in rbmnet_train seg; --task and
    --numbering-head set segmentation.task / segmentation.numbering_head (None: the plan's)."""
    overrides = cli_overrides(epochs, lr, batch_size, None, "segmentation", extra)
    for key, value in (("segmentation.task", task), ("segmentation.numbering_head", numbering_head)):
        if value is not None:
            overrides[key] = value
    return overrides


def with_task(spec: GridSpec, inputs: dict[InputsKey, StageInputs]) -> GridSpec:
    """The spec with the task every cell trains (the plan's segmentation.task and numbering_head with the
    overrides): its model-id tag and metrics. An unknown task, or a dataset the task cannot serve, fails
    here, before any training. `inputs`: stage_inputs_per_cell(spec)."""
    first = next(iter(inputs.values()))
    task = build_task(first.plan, first.dataset_json)
    return replace(spec, task=task.name, task_tag=task.model_id_tag, metrics=tuple(task.metric_names))


def with_resolved_arms(spec: GridSpec) -> GridSpec:
    """The spec with every arm resolved against the grid's plan (the user's overrides): its overrides
    and model-id tags. Before stage_inputs_per_cell, which loads each arm's plan."""
    plan = load_stage_inputs(spec.dataset_name, spec.plans_name, spec.overrides).plan
    return replace(spec, models=[resolve_arm(model, plan) for model in spec.models])
