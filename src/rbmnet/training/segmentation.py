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

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json
from rbmnet.model.checkpoint import FINAL
from rbmnet.layout import LABELS_TR, SPLITS_JSON, TRAINING_CASES_JSON, fold_folder_name
from rbmnet.model.folder import INIT_TAGS, fine_tuning_tag, pretext_model_id, segmentation_model_id
from rbmnet.model.sobel import network_input
from rbmnet.paths import results_dataset_dir
from rbmnet.pretexts import masking_scheme
from rbmnet.semisupervised import semi_supervised_method
from rbmnet.tasks import build_task
from rbmnet.tasks.base import SegmentationTask
from rbmnet.training.fraction import training_subset
from rbmnet.training.initialisation import load_pretrained, transferred_tensors
from rbmnet.training.label_noise import check_share, corrupted_cases
from rbmnet.training.seg_validation import decide_postprocessing_if_any, validate_fold, write_crossval_if_several
from rbmnet.training.setup import StageInputs
from rbmnet.training.loop import StageSpec, TrainingOptions, run_stage

MAX_EPOCH_VALIDATION_CASES = 32  # per-epoch pseudo Dice on a fixed subset; the final report uses all


def fold_split(preprocessed_dir: Path, fold: str, labeled: list[str]) -> tuple[list[str], list[str]]:
    if fold == "all":
        return sorted(labeled), []
    splits_path = preprocessed_dir / SPLITS_JSON
    if not splits_path.is_file():
        raise RbmnetError(f"{splits_path}: missing; run rbmnet_plan_and_preprocess first")
    splits = read_json(splits_path)
    index = int(fold)
    if not 0 <= index < len(splits):
        raise RbmnetError(f"fold {fold} does not exist: {splits_path} has folds 0..{len(splits) - 1} (or 'all')")
    return splits[index]["train"], splits[index]["val"]


def pretext_final(dataset_name: str, architecture: str, plans_name: str, masking_name: str) -> Path:
    """The final checkpoint of the pretext model that the plan's masking scheme trains."""
    tag = masking_scheme(masking_name).pretext_id_tag
    return results_dataset_dir(dataset_name) / pretext_model_id(architecture, plans_name, masking_tag=tag) / FINAL


def resolve_initialisation(init: str | None, dataset_name: str, architecture: str, plans_name: str,
                           masking_name: str = "random_blocks", planned: str = "scratch") -> tuple[str, Path | None]:
    """--init 'pretext' | 'scratch' | a checkpoint path, or None: the plan's segmentation.initialisation
    (`planned`), where 'pretext' falls back to scratch while no pretext model is trained
    -> (tag for the id, path). The pretext model is the one the plan's masking scheme trains."""
    scheme = masking_scheme(masking_name)
    pretext_checkpoint = pretext_final(dataset_name, architecture, plans_name, masking_name)
    if init is None:
        init = "pretext" if planned == "pretext" and pretext_checkpoint.is_file() else "scratch"
    if init == "scratch":
        return INIT_TAGS["scratch"], None
    if init == "pretext":
        if not pretext_checkpoint.is_file():
            raise RbmnetError(f"{pretext_checkpoint}: no finished pretext training for {architecture}/{plans_name}; "
                              f"run rbmnet_train pretext first or pass --init scratch")
        return scheme.init_tag, pretext_checkpoint
    path = Path(init)
    if not path.is_file():
        raise RbmnetError(f"--init {init}: not 'pretext', 'scratch' or an existing checkpoint file")
    return f"init-{path.parent.name}", path


def unused_pretext_hint(init: str | None, dataset_name: str, architecture: str, plans_name: str,
                        masking_name: str) -> str:
    """When the plan's default (scratch) leaves a trained pretext model unused, say how to use it."""
    checkpoint = pretext_final(dataset_name, architecture, plans_name, masking_name)
    if init is not None or not checkpoint.is_file():
        return ""
    return (f" (the plan's segmentation.initialisation; the pretext model {checkpoint.parent.name} is not "
            f"used: --init pretext starts from it)")


def check_label_values(inputs: StageInputs, cases: list[str], task: SegmentationTask) -> None:
    """Every label map holds only values the task knows (dataset.json labels); the error names the file."""
    for case in cases:
        task.encode(inputs.data.label(case), str(inputs.raw_dir / LABELS_TR / f"{case}{inputs.dataset_json['file_ending']}"))


def semi_supervised_cases(inputs: StageInputs, train_split: list[str], subset: list[str], method: str) -> list[str]:
    """The cases whose images alone train under semi-supervision: the fold's training cases outside the
    labeled subset (their labels stay unread) and the dataset's unlabeled images; never validation or
    test cases. [] when semi-supervision is off."""
    if semi_supervised_method(method) is None:
        return []
    held_back = sorted(set(train_split) - set(subset))
    unlabeled = held_back + inputs.data.names("unlabeled")
    if not unlabeled:
        raise RbmnetError(f"segmentation.semi_supervised {method}: no images to use without labels (the dataset "
                          f"has no unlabeled images and the fraction {inputs.plan.segmentation.fraction:g} "
                          f"uses every training case of the fold); add unlabeled images or lower the fraction")
    return unlabeled


def build_semi_supervision(network, config, task: SegmentationTask):
    """The plan's semi-supervised method around the initialised network; its ramp-up in optimizer steps."""
    method = semi_supervised_method(config.semi_supervised)
    total_steps = config.epochs * config.iterations_per_epoch
    return method(network, task, weight=config.consistency_weight,
                  rampup_steps=round(config.consistency_rampup * total_steps), decay=config.ema_decay,
                  make_input=network_input)


def seg_batch_loss(network, batch: dict, task: SegmentationTask, sums_reducer=None, semi=None) -> torch.Tensor:
    """`sums_reducer`: distributed.all_reduce_sum under DDP, so the Dice is over the global batch.
    `semi`: the semi-supervised method (semisupervised/), whose view of the batch's unlabeled images goes
    through the network in the same forward pass (one forward per backward, as DDP wants)."""
    images = batch["image"]
    if semi is None:
        return task.loss(network(network_input(images)).float(), batch["target"], sums_reducer=sums_reducer)
    unlabeled = batch["unlabeled_image"]
    logits = network(network_input(torch.cat([images, semi.student_view(unlabeled)])))
    supervised = task.loss(logits[:len(images)].float(), batch["target"], sums_reducer=sums_reducer)
    return supervised + semi.consistency(logits[len(images):], unlabeled)


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
    inputs = replace(inputs, plan=plan)
    config = plan.segmentation
    label_noise = check_share(label_noise)
    labeled = inputs.data.names("labeled")
    train_split, val_split = fold_split(inputs.preprocessed_dir, fold, labeled)
    subset = training_subset(train_split, config.fraction, len(labeled), plan.seed, fold)

    task = build_task(plan, inputs.dataset_json)
    init_tag, init_path = resolve_initialisation(init, inputs.dataset_name, architecture, plan.plans_name,
                                                 plan.masking.scheme, config.initialisation)
    model_id = segmentation_model_id(architecture, init_tag, config.fraction, plan.plans_name, label_noise,
                                     model_tag, task.model_id_tag, fine_tuning_tag(config, init_path is not None))
    check_label_values(inputs, subset + val_split, task)  # before anything is written
    unlabeled = semi_supervised_cases(inputs, train_split, subset, config.semi_supervised)

    epoch_val = val_split[:MAX_EPOCH_VALIDATION_CASES]
    val_images = np.stack([inputs.data.image(n) for n in epoch_val]).astype(np.float32) if epoch_val else np.zeros(0)
    val_targets = task.encode(np.stack([inputs.data.label(n) for n in epoch_val])) if epoch_val else np.zeros(0)
    meta = {"stage": "segmentation", "architecture": architecture, "model_id": model_id, "fold": fold,
            "output_channels": task.output_channels, "task": config.task, "fraction": config.fraction,
            "seed": plan.seed, "initialisation": str(init_path) if init_path else "scratch",
            "label_noise": label_noise, "labels": inputs.dataset_json["labels"]}

    def initialise(network) -> str:
        if init_path is None:
            return "initialised from scratch" + unused_pretext_hint(init, inputs.dataset_name, architecture,
                                                                    plan.plans_name, plan.masking.scheme)
        return load_pretrained(network, init_path, plan.to_dict()["network"], config.transfer).describe()

    def transferred_parameters(network) -> set[str]:
        if init_path is None:
            return set()
        return transferred_tensors((name for name, _ in network.named_parameters()), config.transfer, architecture)

    def final_report(network, model_folder: Path, folder: Path, device) -> None:
        if not val_split:
            return
        validate_fold(folder, network, inputs, val_split, device, plan, meta, task)
        write_crossval_if_several(model_folder, task)
        decide_postprocessing_if_any(model_folder, inputs.raw_dir, inputs.dataset_json, task)

    spec = StageSpec(
        kind="seg", model_id=model_id, run_folder=fold_folder_name(fold), config=config,
        output_channels=task.output_channels, cases=subset,
        records={TRAINING_CASES_JSON: {"fold": fold, "fraction": config.fraction, "seed": plan.seed,
                                         "label_noise": label_noise, "unlabeled_cases": unlabeled,
                                         "noisy_label_cases": corrupted_cases(subset, label_noise, plan.seed),
                                         "cases": subset, "validation_cases": val_split}},
        meta=meta, batch_loss=functools.partial(seg_batch_loss, task=task),
        validate=functools.partial(pseudo_dice, images=val_images, targets=val_targets,
                                   batch_size=config.batch_size, task=task),
        curves=["train_loss", "val_pseudo_dice"],
        headline=(f"segmentation {model_id} fold {fold}: {len(subset)} of {len(train_split)} training cases "
                  f"(fraction {config.fraction:g} of {len(labeled)} labeled), {len(val_split)} validation cases"),
        final_report=final_report, initialise=initialise, seg_task=task, label_noise=label_noise,
        transferred_parameters=transferred_parameters, transferred_lr_factor=config.transferred_lr_factor,
        notes=[task.note] if task.note else [],
        semi_supervision=functools.partial(build_semi_supervision, config=config, task=task) if unlabeled else None,
        unlabeled_cases=unlabeled)
    return run_stage(inputs, spec, TrainingOptions(device_name, num_workers, resume_run, overwrite, compile_network,
                                                   data_path))
