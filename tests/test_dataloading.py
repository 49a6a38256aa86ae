"""Augmentation, batches as pure functions of their indices, and background batch workers."""
from __future__ import annotations

import os
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, replace

import numpy as np
import pytest

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json
from rbmnet.planning.plan import AugmentationConfig, Plan, SegmentationConfig, StageConfig
from rbmnet.preprocessing.store import CaseRecord, PreprocessedDataset, records_to_json
from rbmnet.augmentation.declaration import declare_augmentation
from rbmnet.training.augmentation import apply_transforms, transforms_from_declaration
from rbmnet.training.background import BatchStream
from rbmnet.tasks.binary import BinaryTask
from rbmnet.training.batches import batch_function, draw_cases, make_batch

HEIGHT, WIDTH = 32, 48
TOOTH_NUMBERS = (0, 11, 21, 36)


def tiny_plan(**changes) -> Plan:
    plan = Plan("Tiny", input_size=[HEIGHT, WIDTH], pretext=StageConfig(batch_size=4),
                segmentation=SegmentationConfig(batch_size=3))
    return replace(plan, **changes)


def write_tiny_dataset(folder, plan: Plan, labeled: int = 4, unlabeled: int = 2) -> PreprocessedDataset:
    """images.npy / labels.npy / cases.json as preprocessing writes them; blobs of tooth numbers."""
    rng = np.random.default_rng(0)
    count = labeled + unlabeled
    images = rng.random((count, HEIGHT, WIDTH)).astype(np.float16)
    labels = np.zeros((labeled, HEIGHT, WIDTH), np.uint8)
    for i in range(labeled):
        for k, number in enumerate(TOOTH_NUMBERS[1:]):
            labels[i, 4 + 8 * k:10 + 8 * k, 5 + 3 * i:20 + 3 * i] = number
    records = [CaseRecord(name=f"case_{i:02d}", role="labeled" if i < labeled else "unlabeled", index=i,
                          label_index=i if i < labeled else None, source=f"imagesTr/case_{i:02d}.png",
                          original_shape=[HEIGHT * 2, WIDTH * 2], original_dtype="uint8", clip_low=0.0,
                          clip_high=255.0) for i in range(count)]
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    write_json(folder / "cases.json", {"configuration": plan.configuration, "input_size": plan.input_size,
                                       "normalization": asdict(plan.normalization),
                                       "cases": records_to_json(records)})
    return PreprocessedDataset(folder)


@pytest.fixture
def dataset(tmp_path):
    return write_tiny_dataset(tmp_path / "2d_32x48", tiny_plan())


# --- augmentation -----------------------------------------------------------------------------

ALWAYS = AugmentationConfig(probability=1.0, rotation_degrees=30.0, scale_range=[0.8, 1.2], elastic=True,
                            brightness_range=[1.5, 2.0])
SPATIAL_ONLY = AugmentationConfig(probability=1.0, rotation_degrees=30.0, scale_range=[0.8, 1.2],
                                  gamma_range=[1.0, 1.0], brightness_range=[1.0, 1.0], contrast_range=[1.0, 1.0],
                                  noise_variance=[0.0, 0.0], blur_sigma=[0.0, 0.0])


def labeled_batch(dataset):
    names = dataset.names("labeled")
    image = np.stack([dataset.image(n) for n in names])[:, None]
    label = np.stack([dataset.label(n) for n in names])[:, None]
    return image, label


def test_augmentation_keeps_image_in_range_and_label_values(dataset):
    image, label = labeled_batch(dataset)
    transforms = transforms_from_declaration(
        declare_augmentation(ALWAYS, mirror_allowed=False, with_label=True), (HEIGHT, WIDTH), None)
    out_image, out_label = apply_transforms(transforms, 5, image, label)
    assert out_image.dtype == np.float32 and out_image.shape == image.shape
    # brightness x1.5..2 pushes values above 1: only the final clip brings them back
    assert out_image.min() >= 0.0 and out_image.max() <= 1.0 and np.mean(out_image == 1.0) > 0.05
    assert set(np.unique(out_label)) <= set(TOOTH_NUMBERS)  # nearest-neighbour labels, no blends
    assert len(np.unique(out_label)) > 2 and not np.array_equal(out_label, label)


def test_image_and_label_move_together(dataset):
    _, label = labeled_batch(dataset)
    image = (label > 0).astype(np.float32)
    transforms = transforms_from_declaration(
        declare_augmentation(SPATIAL_ONLY, mirror_allowed=False, with_label=True), (HEIGHT, WIDTH), None)
    out_image, out_label = apply_transforms(transforms, 11, image, label)
    assert not np.array_equal(out_label, label)
    assert np.mean((out_image > 0.5) == (out_label > 0)) > 0.97


def test_mirror_only_flips_width():
    config = AugmentationConfig(probability=0.0, mirror=True)
    transforms = transforms_from_declaration(
        declare_augmentation(config, mirror_allowed=True, with_label=False), (HEIGHT, WIDTH), None)
    image = np.random.default_rng(0).random((8, 1, HEIGHT, WIDTH), dtype=np.float32)
    out, _ = apply_transforms(transforms, 2, image.copy())
    flipped = [np.array_equal(o, i[..., ::-1]) for o, i in zip(out, image)]
    same = [np.array_equal(o, i) for o, i in zip(out, image)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_apply_transforms_is_seeded_and_leaves_global_rng_alone(dataset):
    image, label = labeled_batch(dataset)
    transforms = transforms_from_declaration(
        declare_augmentation(ALWAYS, mirror_allowed=False, with_label=True), (HEIGHT, WIDTH), None)
    np.random.seed(99)
    expected_next = np.random.random()
    np.random.seed(99)
    first = apply_transforms(transforms, 3, image.copy(), label.copy())
    assert np.random.random() == expected_next
    second = apply_transforms(transforms, 3, image.copy(), label.copy())
    third = apply_transforms(transforms, 4, image.copy(), label.copy())
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], third[0])


# --- make_batch -------------------------------------------------------------------------------

def test_pretext_batch_is_a_pure_function_of_its_indices(dataset):
    plan = tiny_plan()
    names = dataset.names()
    transforms = transforms_from_declaration(
        declare_augmentation(plan.augmentation, mirror_allowed=True, with_label=False), (HEIGHT, WIDTH), None)
    batch = make_batch(dataset, names, plan, "pretext", epoch=2, iteration=5, seed=1, transforms=transforms)
    again = make_batch(dataset, names, plan, "pretext", epoch=2, iteration=5, seed=1, transforms=transforms)
    other = make_batch(dataset, names, plan, "pretext", epoch=2, iteration=6, seed=1, transforms=transforms)
    assert batch["image"].shape == (4, 1, HEIGHT, WIDTH) and batch["image"].dtype == np.float32
    assert batch["mask"].shape == (4, 1, HEIGHT, WIDTH) and batch["mask"].dtype == bool
    assert len(batch["case"]) == 4 and set(batch["case"]) <= set(names)
    for key in ("image", "mask"):
        np.testing.assert_array_equal(batch[key], again[key])
    assert batch["case"] == again["case"]
    assert not np.array_equal(batch["mask"], other["mask"])
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    fractions = batch["mask"].mean(axis=(1, 2, 3))
    assert np.all(fractions > 0.14) and np.all(fractions < 0.78)


def test_seg_batch_without_augmentation_is_the_stored_case(dataset):
    plan = tiny_plan()
    names = dataset.names("labeled")
    batch = make_batch(dataset, names, plan, "seg", epoch=0, iteration=1, seed=3, seg_task=BinaryTask())
    assert batch["image"].shape == (3, 1, HEIGHT, WIDTH) and batch["target"].dtype == np.float32
    assert set(np.unique(batch["target"])) == {0.0, 1.0}
    for i, name in enumerate(batch["case"]):
        np.testing.assert_array_equal(batch["image"][i, 0], dataset.image(name))
        np.testing.assert_array_equal(batch["target"][i, 0], (dataset.label(name) > 0).astype(np.float32))


def test_seg_batch_with_augmentation_has_binary_target(dataset):
    plan = tiny_plan(augmentation=ALWAYS)
    transforms = transforms_from_declaration(
        declare_augmentation(plan.augmentation, mirror_allowed=False, with_label=True), (HEIGHT, WIDTH), None)
    batch = make_batch(dataset, dataset.names("labeled"), plan, "seg", 0, 0, seed=3, transforms=transforms,
                       seg_task=BinaryTask())
    assert set(np.unique(batch["target"])) == {0.0, 1.0}
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1


def test_shuffled_cycle_visits_every_case_once_per_pass():
    names = [f"c{i}" for i in range(6)]
    one_pass = draw_cases(names, 3, seed=0, epoch=0, iteration=0) + draw_cases(names, 3, seed=0, epoch=0, iteration=1)
    assert sorted(one_pass) == names
    next_pass = draw_cases(names, 3, seed=0, epoch=0, iteration=2) + draw_cases(names, 3, seed=0, epoch=0, iteration=3)
    assert sorted(next_pass) == names
    other_epoch = draw_cases(names, 3, seed=0, epoch=1, iteration=0) + draw_cases(names, 3, seed=0, epoch=1, iteration=1)
    assert sorted(other_epoch) == names and other_epoch != one_pass


def test_bad_task_and_multiclass_and_unlabeled_are_clear_errors(dataset):
    with pytest.raises(ValueError, match="unknown task"):
        make_batch(dataset, dataset.names(), tiny_plan(), "segment", 0, 0, seed=0)
    with pytest.raises(ValueError, match="segmentation task"):
        make_batch(dataset, dataset.names("labeled"), tiny_plan(), "seg", 0, 0, seed=0)
    with pytest.raises(RbmnetError, match="has no label"):
        make_batch(dataset, dataset.names("unlabeled"), tiny_plan(), "seg", 0, 0, seed=0, seg_task=BinaryTask())


# --- BatchStream ------------------------------------------------------------------------------

def fail_at_three(epoch, iteration):
    if iteration == 3:
        raise ValueError(f"boom at iteration {iteration}")
    return iteration


def exit_at_two(epoch, iteration):
    if iteration == 2:
        os._exit(1)
    return iteration


def slower_first(epoch, iteration):
    time.sleep(0.05 * (4 - iteration % 5))  # later batches finish first
    return epoch, iteration


def test_results_come_in_order_with_workers():
    indices = [(e, i) for e in range(2) for i in range(5)]
    with BatchStream(slower_first, indices, num_workers=2) as stream:
        assert list(stream) == indices


def test_worker_exception_surfaces_with_its_traceback():
    indices = [(0, i) for i in range(8)]
    started = time.monotonic()
    with pytest.raises(RuntimeError) as caught:
        with BatchStream(fail_at_three, indices, num_workers=2) as stream:
            assert [next(stream) for _ in range(3)] == [0, 1, 2]
            next(stream)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "ValueError: boom at iteration 3" in message
    assert "test_dataloading.py" in message and "in fail_at_three" in message and "line" in message


def test_dead_worker_raises_promptly():
    started = time.monotonic()
    with pytest.raises(BrokenProcessPool, match="died"):
        with BatchStream(exit_at_two, [(0, i) for i in range(6)], num_workers=2) as stream:
            list(stream)
    assert time.monotonic() - started < 10


def test_prefetch_is_bounded_and_close_stops_workers():
    consumed = []

    def indices():
        for i in range(100):
            consumed.append(i)
            yield 0, i

    stream = BatchStream(slower_first, indices(), num_workers=2, prefetch=3)
    assert next(stream) == (0, 0)
    assert len(consumed) <= 4 and len(stream.pending) <= 3
    processes = list(stream.executor._processes.values())
    assert processes and all(p.is_alive() for p in processes)
    stream.close()
    assert not any(p.is_alive() for p in processes)
    assert list(stream) == []


def test_inline_and_worker_batches_are_identical(dataset):
    plan = tiny_plan()
    make = batch_function(dataset.folder, dataset.names(), plan, "pretext", seed=plan.seed)
    indices = [(1, i) for i in range(4)]
    inline = list(BatchStream(make, indices, num_workers=0))
    with BatchStream(make, indices, num_workers=2) as stream:
        parallel = list(stream)
    assert len(inline) == len(parallel) == 4
    for a, b in zip(inline, parallel):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
        assert a["case"] == b["case"]


def test_spawned_worker_gives_the_same_seg_batch(dataset):
    plan = tiny_plan()
    make = batch_function(dataset.folder, dataset.names("labeled"), plan, "seg", seed=plan.seed, seg_task=BinaryTask())
    with BatchStream(make, [(0, 0)], num_workers=1, start_method="spawn") as stream:
        spawned = next(stream)
    inline = make(0, 0)
    np.testing.assert_array_equal(spawned["image"], inline["image"])
    np.testing.assert_array_equal(spawned["target"], inline["target"])
