"""`rbmnet_train seg FOLD`: fine-tune for teeth segmentation on a fraction of the labels.

Recipe (paper): input = [radiograph, its Sobel image], the pretext network with a new output head,
loss 0.7 Dice + 0.3 BCE (weights in the plan), trained on a seeded fraction of the fold's training
split; validation is the fold's whole validation split, reported from the final checkpoint.
The segmentation task (plan: segmentation.task; tasks/) gives the targets, output channels, loss
and the saved predictions: tooth vs background, or each tooth with its number.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json, write_json
from rbmnet.networks import build_network
from rbmnet.paths import results_dataset_dir
from rbmnet.tasks import build_task
from rbmnet.tasks.base import SegmentationTask
from rbmnet.model.checkpoint import FINAL
from rbmnet.training.device_batches import batch_source
from rbmnet.training.distributed import all_reduce_sum, on_writer, setup_distributed, training_network
from rbmnet.training.fraction import training_subset
from rbmnet.training.initialisation import load_pretrained
from rbmnet.training.label_noise import check_share, corrupted_cases
from rbmnet.training.loop import TrainingRun, resume, train
from rbmnet.tasks.losses import dice_bce_loss
from rbmnet.model.folder import (INIT_TAGS, fold_folder_name, prepare_model_folder, prepare_run_folder,
                                          pretext_model_id, segmentation_model_id)
from rbmnet.training.optimizers import build_optimizer
from rbmnet.training.seg_validation import decide_postprocessing_if_any, validate_fold, write_crossval_if_several
from rbmnet.training.setup import StageInputs
from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS, network_input

MAX_EPOCH_VALIDATION_CASES = 32  # per-epoch pseudo Dice on a fixed subset; the final report uses all


def fold_split(preprocessed_dir: Path, fold: str, labeled: list[str]) -> tuple[list[str], list[str]]:
    if fold == "all":
        return sorted(labeled), []
    splits_path = preprocessed_dir / "splits_final.json"
    if not splits_path.is_file():
        raise RbmnetError(f"{splits_path}: missing; run rbmnet_plan_and_preprocess first")
    splits = read_json(splits_path)
    index = int(fold)
    if not 0 <= index < len(splits):
        raise RbmnetError(f"fold {fold} does not exist: {splits_path} has folds 0..{len(splits) - 1} (or 'all')")
    return splits[index]["train"], splits[index]["val"]


def resolve_initialisation(init: str | None, dataset_name: str, architecture: str, plans_name: str) -> tuple[str, Path | None]:
    """'pretext' | 'scratch' | a checkpoint path | None (pretext when one exists) -> (tag for the id, path)."""
    pretext_checkpoint = results_dataset_dir(dataset_name) / pretext_model_id(architecture, plans_name) / FINAL
    if init is None:
        init = "pretext" if pretext_checkpoint.is_file() else "scratch"
    if init == "scratch":
        return INIT_TAGS["scratch"], None
    if init == "pretext":
        if not pretext_checkpoint.is_file():
            raise RbmnetError(f"{pretext_checkpoint}: no finished pretext training for {architecture}/{plans_name}; "
                              f"run rbmnet_train pretext first or pass --init scratch")
        return INIT_TAGS["pretext"], pretext_checkpoint
    path = Path(init)
    if not path.is_file():
        raise RbmnetError(f"--init {init}: not 'pretext', 'scratch' or an existing checkpoint file")
    return f"init-{path.parent.name}", path


def seg_batch_loss(network, batch: dict, task: SegmentationTask, sums_reducer=None) -> torch.Tensor:
    """`sums_reducer`: distributed.all_reduce_sum under DDP, so the Dice is over the global batch."""
    logits = network(network_input(batch["image"]))
    return task.loss(logits.float(), batch["target"], sums_reducer=sums_reducer)


def pseudo_dice(network, images: np.ndarray, targets: np.ndarray, device, batch_size: int,
                task: SegmentationTask) -> dict:
    """Mean Dice of the task's classes present on a fixed validation subset at the preprocessed size
    (binary: the tooth Dice). A progress signal only."""
    if len(images) == 0:
        return {}
    classes = task.num_classes
    counts = np.zeros((classes, classes), dtype=np.int64)  # predicted x reference pixels
    for start in range(0, len(images), batch_size):
        image = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
        predicted = task.to_index(task.activate(network(network_input(image))))
        reference = targets[start:start + batch_size]
        counts += np.bincount(predicted.astype(np.int64).ravel() * classes + reference.astype(np.int64).ravel(),
                              minlength=classes * classes).reshape(classes, classes)
    intersection = np.diag(counts)[1:]
    total = counts.sum(axis=0)[1:] + counts.sum(axis=1)[1:]
    present = total > 0
    return {"val_pseudo_dice": float(np.mean(2 * intersection[present] / total[present])) if present.any() else 1.0}


def run_segmentation(inputs: StageInputs, fold: str, architecture: str | None = None, init: str | None = None,
                     device_name: str = "auto", num_workers: int = 2, resume_run: bool = False,
                     overwrite: bool = False, model_tag: str = "", label_noise: float = 0.0,
                     compile_network: bool = False, data_path: str = "auto") -> Path:
    plan = inputs.plan
    architecture = architecture or plan.network.architecture
    plan = replace(plan, network=replace(plan.network, architecture=architecture))
    config = plan.segmentation
    label_noise = check_share(label_noise)
    context, device = setup_distributed(device_name)  # one process, or this rank's under torchrun
    labeled = inputs.data.names("labeled")
    train_split, val_split = fold_split(inputs.preprocessed_dir, fold, labeled)
    subset = training_subset(train_split, config.fraction, len(labeled), plan.seed, fold)

    task = build_task(plan, inputs.dataset_json)
    init_tag, init_path = resolve_initialisation(init, inputs.dataset_name, architecture, plan.plans_name)
    model_id = segmentation_model_id(architecture, init_tag, config.fraction, plan.plans_name, label_noise,
                                     model_tag, task.model_id_tag)

    def make_folder() -> Path:  # rank 0 only: it may delete an old run
        model_folder = prepare_model_folder(inputs.dataset_name, model_id, plan.to_dict(), inputs.dataset_json)
        folder = model_folder / fold_folder_name(fold)
        prepare_run_folder(folder, resume_run, overwrite)
        noisy = corrupted_cases(subset, label_noise, plan.seed)
        write_json(folder / "training_cases.json", {"fold": fold, "fraction": config.fraction, "seed": plan.seed,
                                                    "label_noise": label_noise, "noisy_label_cases": noisy,
                                                    "cases": subset, "validation_cases": val_split})
        return model_folder

    model_folder = on_writer(context, make_folder)
    folder = model_folder / fold_folder_name(fold)

    torch.manual_seed(plan.seed)
    network = build_network(plan.network, task.output_channels, input_channels=NETWORK_INPUT_CHANNELS).to(device)
    if init_path is not None and not resume_run:
        loaded = load_pretrained(network, init_path, plan.to_dict()["network"]).describe()
        if context.is_writer:
            tqdm.write(loaded)
    elif context.is_writer:
        tqdm.write("initialised from scratch" if init_path is None else f"resuming; initialisation was {init_path}")

    epoch_val = val_split[:MAX_EPOCH_VALIDATION_CASES]
    val_images = np.stack([inputs.data.image(n) for n in epoch_val]).astype(np.float32) if epoch_val else np.zeros(0)
    val_targets = task.encode(np.stack([inputs.data.label(n) for n in epoch_val])) if epoch_val else np.zeros(0)
    meta = {"stage": "segmentation", "architecture": architecture, "model_id": model_id, "fold": fold,
            "output_channels": task.output_channels, "task": config.task, "fraction": config.fraction,
            "seed": plan.seed, "initialisation": str(init_path) if init_path else "scratch",
            "label_noise": label_noise, "labels": inputs.dataset_json["labels"]}
    source = batch_source(inputs.data, subset, plan, "seg", plan.seed, device, data_path, num_workers, label_noise,
                          seg_task=task)
    run = TrainingRun(
        folder=folder, network=training_network(network, context, device, compile_network),
        optimizer=build_optimizer(network, config), device=device,
        epochs=config.epochs, iterations_per_epoch=config.iterations_per_epoch,
        make_batch=source.make_batch,
        batch_loss=functools.partial(seg_batch_loss, task=task,
                                     sums_reducer=all_reduce_sum if context.enabled else None),
        validate=functools.partial(pseudo_dice, images=val_images, targets=val_targets, device=device,
                                   batch_size=config.batch_size, task=task),
        checkpoint_content={"plan": plan.to_dict(), "dataset_json": inputs.dataset_json, "meta": meta},
        learning_rate=config.learning_rate, num_workers=source.num_workers, lr_schedule=config.lr_schedule,
        curves=["train_loss", "val_pseudo_dice"], title=f"{model_id} fold {fold}",
        is_writer=context.is_writer, rank=context.rank, world_size=context.world_size)
    if context.is_writer and task.note:
        tqdm.write(f"note: {task.note}")
    if context.is_writer:
        tqdm.write(f"segmentation {model_id} fold {fold}: {len(subset)} of {len(train_split)} training cases "
                   f"(fraction {config.fraction:g} of {len(labeled)} labeled), {len(val_split)} validation cases, "
                   f"{run.epochs} epochs x {run.iterations_per_epoch} iterations, batch {config.batch_size}, "
                   f"device {device}{context.describe()}, batches on {source.choice.path} ({source.choice.reason})")
    log = resume(run) if resume_run else None
    train(run, log)
    if val_split and context.is_writer:
        validate_fold(folder, network, inputs, val_split, device, plan, meta, task)
        write_crossval_if_several(model_folder, task)
        decide_postprocessing_if_any(model_folder, inputs.raw_dir, inputs.dataset_json, task)
    return model_folder
