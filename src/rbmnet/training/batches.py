"""What goes into one training batch, as a pure function of (seed, epoch, iteration).

Because a batch depends on nothing else (no iterator state, no worker identity), training resumed
at epoch e sees exactly the batches an uninterrupted run would have seen, with any number of workers.

Cases are drawn as a shuffled cycle: the iteration's batch takes the next batch_size positions of an
endless sequence made of independent permutations of the case list (one per pass over the cases,
reshuffled each epoch). Every case is therefore seen equally often, which matters with few labeled
cases, where drawing with replacement leaves some cases out of whole epochs.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from rbmnet.augmentation.declaration import AugmentationDeclaration, declare_augmentation
from rbmnet.errors import RbmnetError
from rbmnet.planning.plan import Plan
from rbmnet.preprocessing.store import PreprocessedDataset
from rbmnet.tasks.base import SegmentationTask
from rbmnet.training.augmentation import apply_transforms, transforms_from_declaration
from rbmnet.training.label_noise import check_share, training_labels
from rbmnet.pretexts import masking_scheme

TASKS = ("pretext", "seg")
_SHUFFLE_STREAM = 1  # keeps the case-order RNG apart from the per-iteration RNG [seed, epoch, iteration]
_UNLABELED_STREAM = 2  # the unlabeled images' order and augmentation: apart from the labeled cases'


def batch_size_for(plan: Plan, task: str) -> int:
    if task == "pretext":
        return plan.pretext.batch_size
    if task == "seg":
        return plan.segmentation.batch_size
    raise ValueError(f"unknown task '{task}' (expected one of {TASKS})")


def augmentation_declaration(plan: Plan, task: str, seg_task: SegmentationTask | None) -> AugmentationDeclaration:
    """The plan's augmentation for `task`'s batches, declared once for either executor (worker or device
    path): segmentation batches carry label maps, and mirror only where the task has a left-right lookup."""
    with_label = task == "seg"
    flip = seg_task.flip_lookup if seg_task is not None else None
    return declare_augmentation(plan.augmentation, mirror_allowed=not with_label or flip is not None,
                                with_label=with_label)


def draw_cases(case_names: list[str], batch_size: int, seed: int, epoch: int, iteration: int,
               stream: int = _SHUFFLE_STREAM) -> list[str]:
    """The cases of one batch: positions iteration*B .. iteration*B+B-1 of the epoch's shuffled cycle."""
    if not case_names:
        raise RbmnetError("no cases to draw a training batch from")
    count = len(case_names)
    positions = iteration * batch_size + np.arange(batch_size)
    chosen = []
    for position in positions:
        cycle, offset = divmod(int(position), count)
        order = np.random.default_rng([seed, epoch, cycle, stream]).permutation(count)
        chosen.append(case_names[order[offset]])
    return chosen


def make_batch(source: PreprocessedDataset, case_names: list[str], plan: Plan, task: str, epoch: int,
               iteration: int, seed: int, transforms=None, label_noise: float = 0.0,
               seg_task: SegmentationTask | None = None, unlabeled_names: tuple[str, ...] = ()) -> dict:
    """One batch for `task` ("pretext" or "seg"); `transforms` from augmentation.py, or None for none.

    pretext: {"image": float32 (B,1,H,W) augmented radiograph (also the target),
              "mask": bool (B,1,H,W), True = hidden, "case": names}
    seg:     {"image": float32 (B,1,H,W), "target": float32 (B,1,H,W) class indices of `seg_task`
              (binary: {0, 1}), "case": names}
    label_noise: share of `case_names` whose label maps are corrupted (seg only; see label_noise.py).
    unlabeled_names: seg with semi-supervision: the batch also holds "unlabeled_image", as many augmented
    images of these cases, whose labels are never read (whether or not the dataset has them).
    """
    batch_size = batch_size_for(plan, task)
    if task == "seg" and seg_task is None:
        raise ValueError("segmentation batches need the segmentation task (seg_task)")
    names = draw_cases(case_names, batch_size, seed, epoch, iteration)
    rng = np.random.default_rng([seed, epoch, iteration])
    image = np.stack([source.image(name) for name in names])[:, None]
    label = None
    if task == "seg":
        # label noise (label_noise.py) corrupts a seeded share of the training cases, before augmentation
        label = seg_task.encode(training_labels(source, names, case_names, label_noise, seed))[:, None]
    if transforms is not None:
        image, label = apply_transforms(transforms, int(rng.integers(2**63)), image, label)
    if task == "pretext":
        scheme = masking_scheme(plan.masking.scheme)
        masks = [scheme.mask(image.shape[2:], plan.masking, plan.network.total_downsampling, rng) for _ in names]
        return {"image": image, "mask": np.stack(masks)[:, None], "case": names}
    batch = {"image": image, "target": label.astype(np.float32), "case": names}
    if unlabeled_names:
        batch["unlabeled_image"] = unlabeled_images(source, list(unlabeled_names), batch_size, seed, epoch,
                                                    iteration, transforms)
    return batch


def unlabeled_images(source: PreprocessedDataset, names: list[str], batch_size: int, seed: int, epoch: int,
                     iteration: int, transforms=None) -> np.ndarray:
    """(B, 1, H, W) augmented images of `names`, drawn like labeled cases but from their own stream;
    only images are read."""
    drawn = draw_cases(names, batch_size, seed, epoch, iteration, stream=_UNLABELED_STREAM)
    image = np.stack([source.image(name) for name in drawn])[:, None]
    if transforms is not None:
        rng = np.random.default_rng([seed, epoch, iteration, _UNLABELED_STREAM])
        image, _ = apply_transforms(transforms, int(rng.integers(2**63)), image, None)
    return image


# Worker processes open the memory-mapped arrays once each, on first use, instead of receiving them
# pickled: only the folder path travels to a worker.
_OPEN_DATASETS: dict[str, PreprocessedDataset] = {}


def open_dataset_cached(folder: str | Path) -> PreprocessedDataset:
    key = str(Path(folder).resolve())
    if key not in _OPEN_DATASETS:
        _OPEN_DATASETS[key] = PreprocessedDataset(key)
    return _OPEN_DATASETS[key]


def make_batch_from_folder(folder: str | Path, case_names: list[str], plan: Plan, task: str, epoch: int,
                           iteration: int, seed: int, transforms=None, label_noise: float = 0.0,
                           seg_task: SegmentationTask | None = None, unlabeled_names: tuple[str, ...] = ()) -> dict:
    """`make_batch` reading from a preprocessed folder path: picklable through functools.partial, e.g.
    partial(make_batch_from_folder, folder, names, plan, "seg", seed=plan.seed, transforms=t)(epoch, it).
    """
    return make_batch(open_dataset_cached(folder), case_names, plan, task, epoch, iteration, seed, transforms,
                      label_noise, seg_task, unlabeled_names)


def batch_function(folder: str | Path, case_names: list[str], plan: Plan, task: str, seed: int,
                   augment: bool = True, label_noise: float = 0.0,
                   seg_task: SegmentationTask | None = None,
                   unlabeled_names: tuple[str, ...] = ()) -> functools.partial:
    """Picklable (epoch, iteration) -> batch for BatchStream, with the plan's augmentation."""
    transforms = None
    if augment:
        transforms = transforms_from_declaration(
            augmentation_declaration(plan, task, seg_task), tuple(plan.input_size),
            label_flip=seg_task.flip_lookup if seg_task is not None else None)
    batch_size_for(plan, task)  # fail on an unknown task here, not in a worker
    check_share(label_noise)
    return functools.partial(make_batch_from_folder, str(folder), list(case_names), plan, task,
                             seed=seed, transforms=transforms, label_noise=label_noise, seg_task=seg_task,
                             unlabeled_names=tuple(unlabeled_names))
