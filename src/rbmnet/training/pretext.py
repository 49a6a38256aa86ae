"""`rbmnet_train pretext`: reconstruct the whole radiograph from its block-masked copy + Sobel edges.

Recipe (paper): input = [masked radiograph, Sobel of the unmasked radiograph], target = radiograph,
L1 loss, Adam 1e-4, epochs from the plan. Every image of the dataset is used (labeled and
unlabeled, never imagesTs); a seeded share is held out for validation and the report.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json
from rbmnet.networks import build_network
from rbmnet.training.device_batches import batch_source
from rbmnet.training.distributed import on_writer, setup_distributed, training_network
from rbmnet.training.loop import TrainingRun, resume, train
from rbmnet.training.masking import block_mask
from rbmnet.model.folder import prepare_model_folder, prepare_run_folder, pretext_model_id
from rbmnet.training.optimizers import build_optimizer
from rbmnet.training.pretext_report import write_pretext_report
from rbmnet.training.setup import StageInputs
from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS, network_input

RECONSTRUCTION_CHANNELS = 1


def pretext_split(names: list[str], validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded hold-out of a share of the images; at least one each way when there are two or more."""
    names = sorted(names)
    if len(names) < 2:
        raise RbmnetError(f"pretext training needs at least 2 images, the dataset has {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    num_val = min(len(names) - 1, max(1, round(validation_fraction * len(names))))
    val = sorted(names[i] for i in order[:num_val])
    return sorted(set(names) - set(val)), val


def reconstruction_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over every pixel: the paper's target is the whole radiograph."""
    return F.l1_loss(prediction.float(), target.float())


def masked_input(image: torch.Tensor, mask: torch.Tensor, fill_value: float) -> torch.Tensor:
    """The network input of the pretext task: masked radiograph and Sobel of the unmasked one."""
    masked = torch.where(mask, torch.full_like(image, fill_value), image)
    return network_input(masked, edges_of=image)


def reconstruct(network: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor, fill_value: float) -> torch.Tensor:
    return torch.sigmoid(network(masked_input(image, mask, fill_value)).float())


def pretext_batch_loss(network: torch.nn.Module, batch: dict, fill_value: float) -> torch.Tensor:
    return reconstruction_l1(reconstruct(network, batch["image"], batch["mask"], fill_value), batch["image"])


def validation_masks(names: list[str], shape, config, seed: int) -> np.ndarray:
    """Fixed masks per validation image, so every epoch and the report see the same task."""
    return np.stack([block_mask(tuple(shape), config, np.random.default_rng([seed, 7, i]))
                     for i in range(len(names))])


def validation_loss(network, images: np.ndarray, masks: np.ndarray, fill_value: float,
                    device: torch.device, batch_size: int) -> dict:
    total, masked_total, masked_count = 0.0, 0.0, 0.0
    for start in range(0, len(images), batch_size):
        image = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
        mask = torch.from_numpy(masks[start:start + batch_size])[:, None].to(device)
        error = (reconstruct(network, image, mask, fill_value) - image).abs()
        total += error.mean(dim=(1, 2, 3)).sum().item()
        masked_total += error[mask].sum().item()
        masked_count += mask.sum().item()
    return {"val_loss": total / len(images), "val_loss_masked": masked_total / max(masked_count, 1.0)}


def run_pretext(inputs: StageInputs, device_name: str = "auto", num_workers: int = 2, resume_run: bool = False,
                overwrite: bool = False, model_tag: str = "", compile_network: bool = False,
                data_path: str = "auto") -> Path:
    plan = inputs.plan
    context, device = setup_distributed(device_name)  # one process, or this rank's under torchrun
    architecture = plan.network.architecture
    names = inputs.data.names("labeled") + inputs.data.names("unlabeled")
    train_names, val_names = pretext_split(names, plan.pretext.validation_fraction, plan.seed)

    model_id = pretext_model_id(architecture, plan.plans_name, model_tag)

    def make_folder() -> Path:  # rank 0 only: it may delete an old run
        folder = prepare_model_folder(inputs.dataset_name, model_id, plan.to_dict(), inputs.dataset_json)
        prepare_run_folder(folder, resume_run, overwrite)
        write_json(folder / "split.json", {"train": train_names, "val": val_names})
        return folder

    folder = on_writer(context, make_folder)

    torch.manual_seed(plan.seed)
    network = build_network(plan.network, RECONSTRUCTION_CHANNELS, input_channels=NETWORK_INPUT_CHANNELS).to(device)
    optimizer = build_optimizer(network, plan.pretext)
    fill = plan.masking.fill_value
    val_images = np.stack([inputs.data.image(n) for n in val_names]).astype(np.float32)
    val_masks = validation_masks(val_names, plan.input_size, plan.masking, plan.seed)

    source = batch_source(inputs.data, train_names, plan, "pretext", plan.seed, device, data_path, num_workers)
    run = TrainingRun(
        folder=folder, network=training_network(network, context, device, compile_network), optimizer=optimizer,
        device=device, epochs=plan.pretext.epochs, iterations_per_epoch=plan.pretext.iterations_per_epoch,
        make_batch=source.make_batch,
        batch_loss=functools.partial(pretext_batch_loss, fill_value=fill),
        validate=functools.partial(validation_loss, images=val_images, masks=val_masks, fill_value=fill,
                                   device=device, batch_size=plan.pretext.batch_size),
        checkpoint_content={"plan": plan.to_dict(), "dataset_json": inputs.dataset_json,
                            "meta": {"stage": "pretext", "architecture": architecture, "model_id": model_id,
                                     "output_channels": RECONSTRUCTION_CHANNELS, "seed": plan.seed}},
        learning_rate=plan.pretext.learning_rate, num_workers=source.num_workers,
        lr_schedule=plan.pretext.lr_schedule, curves=["train_loss", "val_loss", "val_loss_masked"],
        title=f"pretext {model_id}", is_writer=context.is_writer, rank=context.rank, world_size=context.world_size)
    if context.is_writer:
        tqdm.write(f"pretext training {model_id}: {len(train_names)} images, {len(val_names)} held out, "
                   f"{run.epochs} epochs x {run.iterations_per_epoch} iterations, batch {plan.pretext.batch_size}, "
                   f"device {device}{context.describe()}, batches on {source.choice.path} "
                   f"({source.choice.reason})")
    log = resume(run) if resume_run else None
    train(run, log)
    if context.is_writer:
        write_pretext_report(folder / "validation", network, val_names, val_images, val_masks, fill, device,
                             batch_size=plan.pretext.batch_size)
    return folder
