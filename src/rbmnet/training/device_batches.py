"""The GPU-resident data path: the preprocessed dataset lives on the device, batches are made there.

A whole preprocessed dataset is small next to a GPU (325 images of 512x512 in float16: 170 MB), so
instead of worker processes decoding, augmenting and copying every batch, the arrays are copied to
the device once and each batch is an index, an affine warp and a few elementwise operations there
(device_augmentation.py).

`DeviceBatches(...)(epoch, iteration)` returns what `batches.make_batch` returns (same keys, shapes,
dtypes and value ranges) but as tensors already on the device. It draws the same cases
(`batches.draw_cases`) and the same kinds of augmentation with the plan's numbers; the random numbers
differ from the CPU path's, so the two paths give different (equally distributed) batches.

Resume stays exact: every random number of batch (epoch, iteration) comes from generators seeded by
(seed, epoch, iteration), nothing carries over from one batch to the next. Under DDP rank r asks for
iteration step * world_size + r (loop.py), so ranks draw different batches. Making a batch does not
wait for the GPU (the masks' one small blocking copy aside), so it overlaps the previous step.

`batch_source` picks this path or the worker path (batches.py) for a stage: `choose_data_path`.
Elastic deformation is not done here; a plan that asks for it uses the worker path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from rbmnet.errors import RbmnetError
from rbmnet.planning.plan import DATA_PATHS, Plan
from rbmnet.planning.planner import DEVICE_DATA_SHARE, resident_data_bytes
from rbmnet.preprocessing.store import PreprocessedDataset
from rbmnet.tasks.base import SegmentationTask
from rbmnet.training import batches
from rbmnet.training.device_augmentation import draw_from_declaration, intensity, to_device, warp
from rbmnet.training.label_noise import training_labels
from rbmnet.pretexts import masking_scheme

_DEVICE_STREAM = 3  # keeps these generators apart from the CPU path's [seed, epoch, iteration]


def batch_generators(seed: int, epoch: int, iteration: int,
                     device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """A CPU generator for the few per-sample numbers and one on the device for the per-pixel noise."""
    first, second = np.random.default_rng([seed, epoch, iteration, _DEVICE_STREAM]).integers(0, 2**62, size=2)
    numbers = torch.Generator().manual_seed(int(first))
    pixels = torch.Generator(device=device).manual_seed(int(second))
    return numbers, pixels


class DeviceBatches:
    """(epoch, iteration) -> batch dict of tensors on `device`, from a dataset copied there once."""

    def __init__(self, source: PreprocessedDataset, case_names: list[str], plan: Plan, task: str, seed: int,
                 device: torch.device, augment: bool = True, label_noise: float = 0.0,
                 seg_task: SegmentationTask | None = None):
        self.case_names = list(case_names)
        self.plan, self.task, self.seed, self.device, self.augment = plan, task, seed, torch.device(device), augment
        self.batch_size = batches.batch_size_for(plan, task)
        self.row = {name: i for i, name in enumerate(self.case_names)}
        # float16 as stored: half the memory; batches are converted to float32 after indexing
        images = np.stack([np.asarray(source.images[source.record(n).index]) for n in self.case_names])
        self.images = torch.from_numpy(images.astype(np.float16, copy=False)).to(self.device)
        self.targets, self.label_flip = None, None
        if task == "seg":
            if seg_task is None:
                raise ValueError("segmentation batches need the segmentation task (seg_task)")
            # label noise is decided once per case (label_noise.py), so it can be applied here, once
            labels = training_labels(source, self.case_names, self.case_names, label_noise, seed)
            self.targets = torch.from_numpy(seg_task.encode(labels)).to(self.device)
            flip = seg_task.flip_lookup
            self.label_flip = None if flip is None else torch.from_numpy(flip.astype(np.int64)).to(self.device)
        # the declaration the worker path executes too (mirror only where the task has a left-right lookup)
        self.declaration = batches.augmentation_declaration(plan, task, seg_task)

    def __call__(self, epoch: int, iteration: int) -> dict:
        names = batches.draw_cases(self.case_names, self.batch_size, self.seed, epoch, iteration)
        rows = to_device(torch.tensor([self.row[n] for n in names]), self.images)
        image = self.images.index_select(0, rows)[:, None].float()
        target = self.targets.index_select(0, rows)[:, None].float() if self.targets is not None else None
        numbers, pixels = batch_generators(self.seed, epoch, iteration, self.device)
        if self.augment:
            draw = draw_from_declaration(len(names), self.declaration, numbers)
            image, target = warp(image, target, draw, self.label_flip)
            image = intensity(image, draw, pixels)
        if self.task == "pretext":
            height, width = image.shape[2:]
            mask = masking_scheme(self.plan.masking.scheme).masks_torch(
                len(names), height, width, self.plan.masking, self.plan.network.total_downsampling, numbers,
                self.device)
            return {"image": image, "mask": mask, "case": names}
        return {"image": image, "target": target, "case": names}


@dataclass
class DataPathChoice:
    path: str  # "device" or "workers"
    reason: str

    def describe(self, num_workers: int) -> str:
        """Where batches are made, as the start line says it (-np 0: the worker path runs inline)."""
        if self.path == "device":
            return f"on device ({self.reason})"
        if num_workers == 0:
            return f"made inline in the main process (-np 0; {self.reason})"
        return f"made by batchgenerators in {num_workers} worker process{'es' if num_workers > 1 else ''} ({self.reason})"


def choose_data_path(requested: str, plan: Plan, device: torch.device, needed_bytes: int,
                     free_bytes: int | None = None) -> DataPathChoice:
    """Where batches are made. `requested` is --data-path; "auto" follows the plan's
    augmentation.data_path ("workers" stays there; "device" and "auto" mean: on the GPU when the data
    take at most DEVICE_DATA_SHARE of its free memory). "device" is honoured on a CPU too (tests)."""
    if requested not in DATA_PATHS:
        raise ValueError(f"unknown data path '{requested}' (expected one of {DATA_PATHS})")
    wanted = plan.augmentation.data_path if requested == "auto" else requested
    source = "--data-path" if requested != "auto" else "plan"
    if wanted == "workers":
        return DataPathChoice("workers", f"{source} says workers")
    if plan.augmentation.elastic:
        return DataPathChoice("workers", "elastic deformation is only done by the worker path")
    if requested == "device":
        return DataPathChoice("device", "--data-path device")
    if device.type != "cuda":
        return DataPathChoice("workers", "no GPU")
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    gib = 2 ** 30
    if needed_bytes <= DEVICE_DATA_SHARE * free_bytes:
        return DataPathChoice("device", f"dataset {needed_bytes / gib:.2f} GiB <= {DEVICE_DATA_SHARE:.0%} of "
                                        f"{free_bytes / gib:.1f} GiB free on {device}")
    return DataPathChoice("workers", f"dataset {needed_bytes / gib:.2f} GiB > {DEVICE_DATA_SHARE:.0%} of "
                                     f"{free_bytes / gib:.1f} GiB free on {device}")


@dataclass
class BatchSource:
    make_batch: Callable  # (epoch, iteration) -> batch dict
    num_workers: int  # for BatchStream: the device path makes batches inline
    choice: DataPathChoice


def batch_source(source: PreprocessedDataset, case_names: list[str], plan: Plan, task: str, seed: int,
                 device: torch.device, requested: str = "auto", num_workers: int = 2,
                 label_noise: float = 0.0, seg_task: SegmentationTask | None = None,
                 unlabeled_names: tuple[str, ...] = ()) -> BatchSource:
    """The batch function of a stage: on the device (DeviceBatches) or in workers (batches.py).
    Semi-supervised batches (`unlabeled_names`) are made by the worker path only."""
    needed = resident_data_bytes(len(case_names), plan.input_size, with_targets=task == "seg")
    choice = choose_data_path(requested, plan, device, needed)
    if unlabeled_names and choice.path == "device":
        if requested == "device":
            raise RbmnetError("--data-path device: semi-supervised batches (segmentation.semi_supervised) are "
                              "made by the worker path only; use --data-path workers or auto")
        choice = DataPathChoice("workers", "semi-supervised batches are made by the worker path")
    if choice.path == "device":
        return BatchSource(DeviceBatches(source, case_names, plan, task, seed, device, label_noise=label_noise,
                                         seg_task=seg_task), 0, choice)
    make_batch = batches.batch_function(source.folder, case_names, plan, task, seed, label_noise=label_noise,
                                        seg_task=seg_task, unlabeled_names=unlabeled_names)
    return BatchSource(make_batch, num_workers, choice)
