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

from rbmnet.errors import RbmnetError
from rbmnet.layout import SPLIT_JSON, VALIDATION_FOLDER
from rbmnet.model.folder import pretext_model_id
from rbmnet.model.sobel import network_input
from rbmnet.pretexts import masking_scheme
from rbmnet.training.pretext_report import write_pretext_report
from rbmnet.training.setup import StageInputs
from rbmnet.training.loop import StageSpec, TrainingOptions, run_stage

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


def pretext_batch_loss(network: torch.nn.Module, batch: dict, fill_value: float, sums_reducer=None,
                       hidden_only: bool = False) -> torch.Tensor:
    """L1 over the whole image, or over the hidden pixels (`hidden_only`, the grid scheme's loss). A mean:
    DDP's gradient averaging makes it global, so `sums_reducer` is not needed."""
    prediction = reconstruct(network, batch["image"], batch["mask"], fill_value)
    if not hidden_only:
        return reconstruction_l1(prediction, batch["image"])
    hidden = batch["mask"].float()
    error = (prediction.float() - batch["image"].float()).abs() * hidden
    return error.sum() / hidden.sum().clamp(min=1.0)


def validation_masks(names: list[str], shape, config, seed: int, cell: int) -> np.ndarray:
    """Fixed masks per validation image, so every epoch and the report see the same task."""
    scheme = masking_scheme(config.scheme)
    return np.stack([scheme.mask(tuple(shape), config, cell, np.random.default_rng([seed, 7, i]))
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
    names = inputs.data.names("labeled") + inputs.data.names("unlabeled")
    train_names, val_names = pretext_split(names, plan.pretext.validation_fraction, plan.seed)
    model_id = pretext_model_id(plan.network.architecture, plan.plans_name, model_tag,
                                masking_scheme(plan.masking.scheme).pretext_id_tag)
    fill = plan.masking.fill_value
    val_images = np.stack([inputs.data.image(n) for n in val_names]).astype(np.float32)
    val_masks = validation_masks(val_names, plan.input_size, plan.masking, plan.seed, plan.network.total_downsampling)

    def final_report(network, model_folder: Path, folder: Path, device) -> None:
        write_pretext_report(folder / VALIDATION_FOLDER, network, val_names, val_images, val_masks, fill, device,
                             batch_size=plan.pretext.batch_size)

    spec = StageSpec(
        kind="pretext", model_id=model_id, run_folder="", config=plan.pretext,
        output_channels=RECONSTRUCTION_CHANNELS, cases=train_names,
        records={SPLIT_JSON: {"train": train_names, "val": val_names}},
        meta={"stage": "pretext", "architecture": plan.network.architecture, "model_id": model_id,
              "output_channels": RECONSTRUCTION_CHANNELS, "seed": plan.seed},
        batch_loss=functools.partial(pretext_batch_loss, fill_value=fill,
                                     hidden_only=masking_scheme(plan.masking.scheme).loss_on_hidden_pixels),
        validate=functools.partial(validation_loss, images=val_images, masks=val_masks, fill_value=fill,
                                   batch_size=plan.pretext.batch_size),
        curves=["train_loss", "val_loss", "val_loss_masked"],
        headline=f"pretext training {model_id}: {len(train_names)} images, {len(val_names)} held out",
        final_report=final_report)
    return run_stage(inputs, spec, TrainingOptions(device_name, num_workers, resume_run, overwrite, compile_network,
                                                   data_path))
