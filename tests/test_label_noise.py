"""Label noise: which training masks are corrupted (seeded, exact share), what each per-tooth operation
does, and that batches carry the same wrong masks every epoch. That evaluation stays on clean masks is
tested on the benchmark's noisy cells (test_benchmark.py), which train anyway."""
from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import ndimage

from rbmnet.conversion.synthetic import generate_synthetic_case
from rbmnet.errors import RbmnetError
from rbmnet.planning.plan import Plan
from rbmnet.tasks.binary import BinaryTask
from rbmnet.training import batches, label_noise
from rbmnet.training.label_noise import (OPERATIONS, corrupt_label, corrupted_cases, dilate_tooth, drop_tooth,
                                         erode_tooth, merge_teeth, nearest_tooth, noisy_label)

CASES = [f"case_{i:03d}" for i in range(40)]


def three_teeth() -> np.ndarray:
    """Teeth 11 and 12 side by side with a 3-pixel gap, tooth 21 far away."""
    label = np.zeros((40, 60), np.uint8)
    label[10:30, 5:15] = 11
    label[10:30, 18:28] = 12
    label[10:30, 45:55] = 21
    return label


# --- which cases ----------------------------------------------------------------------------------

@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_share_of_corrupted_cases_is_exactly_p(share):
    chosen = corrupted_cases(CASES, share, seed=7)
    assert len(chosen) == round(share * len(CASES))
    assert set(chosen) <= set(CASES)


def test_corrupted_cases_are_seeded_and_do_not_depend_on_order():
    shuffled = CASES[:]
    random.Random(0).shuffle(shuffled)
    assert corrupted_cases(CASES, 0.3, seed=7) == corrupted_cases(shuffled, 0.3, seed=7)
    assert corrupted_cases(CASES, 0.3, seed=7) != corrupted_cases(CASES, 0.3, seed=8)
    # nested: a case corrupted at a lower share is corrupted at a higher one
    assert set(corrupted_cases(CASES, 0.2, seed=7)) < set(corrupted_cases(CASES, 0.5, seed=7))


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_share_outside_zero_one_is_an_error(bad):
    with pytest.raises(RbmnetError, match="label noise"):
        corrupted_cases(CASES, bad, seed=0)


# --- what each operation does ---------------------------------------------------------------------

def unchanged_outside(before: np.ndarray, after: np.ndarray, tooth: int) -> bool:
    """True when only pixels of `tooth` (before or after) changed."""
    changed = before != after
    return bool(np.all((before[changed] == tooth) | (after[changed] == tooth)))


def test_erode_shrinks_one_tooth_inside_its_outline():
    label = three_teeth()
    eroded = erode_tooth(label, 11, radius=2)
    assert 0 < (eroded == 11).sum() < (label == 11).sum()
    assert not np.any((eroded == 11) & (label != 11))
    assert set(np.unique(eroded[(label == 11) & (eroded != 11)])) == {0}
    assert unchanged_outside(label, eroded, 11)
    assert np.array_equal(label, three_teeth())  # the input is not modified


def test_dilate_grows_one_tooth_into_background_only():
    label = three_teeth()
    grown = dilate_tooth(label, 11, radius=2)
    assert (grown == 11).sum() > (label == 11).sum()
    assert np.all(grown[label == 11] == 11)
    assert np.array_equal(grown == 12, label == 12)  # the neighbour keeps every pixel
    assert unchanged_outside(label, grown, 11)


def test_drop_removes_one_tooth():
    label = three_teeth()
    dropped = drop_tooth(label, 12)
    assert not np.any(dropped == 12)
    assert np.all(dropped[label == 12] == 0)
    assert unchanged_outside(label, dropped, 12)


def test_merge_joins_a_tooth_with_its_nearest_neighbour():
    label = three_teeth()
    neighbour, gap = nearest_tooth(label, 11)
    assert neighbour == 12 and gap == pytest.approx(4.0)  # columns 14 -> 18
    assert ndimage.label(np.isin(label, [11, 12]))[1] == 2
    merged = merge_teeth(label, 11, neighbour)
    assert not np.any(merged == 11)
    assert ndimage.label(merged == 12)[1] == 1  # one region now
    assert np.all(merged[label == 11] == 12)
    assert np.array_equal(merged == 21, label == 21)  # the far tooth is untouched
    assert nearest_tooth(np.where(label == 21, 21, 0).astype(np.uint8), 21) == (None, float("inf"))


def test_corruption_of_a_synthetic_case_is_seeded_and_changes_the_mask():
    _, label = generate_synthetic_case(np.random.default_rng(5), 64, 128)
    first, applied = corrupt_label(label, np.random.default_rng(1))
    again, applied_again = corrupt_label(label, np.random.default_rng(1))
    other, _ = corrupt_label(label, np.random.default_rng(2))
    assert np.array_equal(first, again) and applied == applied_again
    assert applied and all(operation in OPERATIONS for operation, _ in applied)
    assert not np.array_equal(first, label) and not np.array_equal(first, other)
    assert first.dtype == label.dtype and set(np.unique(first)) <= set(np.unique(label))


def test_binary_masks_are_corrupted_per_connected_component():
    binary = (three_teeth() > 0).astype(np.uint8) * 255
    corrupted, applied = corrupt_label(binary, np.random.default_rng(0))
    assert applied and set(np.unique(corrupted)) <= {0, 255}
    assert not np.array_equal(corrupted, binary)


def test_noisy_label_is_the_same_every_time_and_only_for_chosen_cases():
    _, label = generate_synthetic_case(np.random.default_rng(6), 64, 128)
    assert noisy_label(label, "clean_case", {"noisy_case"}, seed=3) is label
    label_noise._CORRUPTED_CACHE.clear()
    first = noisy_label(label, "noisy_case", {"noisy_case"}, seed=3)
    label_noise._CORRUPTED_CACHE.clear()  # recomputed from scratch: the same wrong mask
    assert np.array_equal(first, noisy_label(label, "noisy_case", {"noisy_case"}, seed=3))
    assert not np.array_equal(first, label)
    assert not np.array_equal(first, noisy_label(label, "noisy_case", {"noisy_case"}, seed=4))


# --- batches --------------------------------------------------------------------------------------

class InMemoryCases:
    """What make_batch reads from a preprocessed dataset: image(name) and label(name)."""

    def __init__(self, count: int):
        self.cases = {}
        for i in range(count):
            image, label = generate_synthetic_case(np.random.default_rng([11, i]), 64, 128)
            self.cases[f"case_{i}"] = (image.astype(np.float32) / 255, label)

    def image(self, name):
        return self.cases[name][0]

    def label(self, name):
        return self.cases[name][1]


def test_batches_carry_the_same_wrong_masks_every_epoch():
    source = InMemoryCases(4)
    names = sorted(source.cases)
    plan = Plan(dataset_name="x", input_size=[64, 128])
    plan.segmentation.batch_size = 4  # every batch holds every case once
    noisy = set(corrupted_cases(names, 0.5, plan.seed))
    assert len(noisy) == 2
    targets = {}
    for epoch in range(3):
        batch = batches.make_batch(source, names, plan, "seg", epoch, 0, plan.seed, label_noise=0.5,
                                   seg_task=BinaryTask())
        for case, target in zip(batch["case"], batch["target"][:, 0]):
            clean = (source.label(case) > 0).astype(np.float32)
            assert np.array_equal(target, clean) == (case not in noisy), case
            targets.setdefault(case, []).append(target)
    for case, seen in targets.items():
        assert all(np.array_equal(seen[0], t) for t in seen[1:]), case
    clean_batch = batches.make_batch(source, names, plan, "seg", 0, 0, plan.seed, seg_task=BinaryTask())
    for case, target in zip(clean_batch["case"], clean_batch["target"][:, 0]):
        assert np.array_equal(target, (source.label(case) > 0).astype(np.float32))


def test_batch_function_refuses_a_share_outside_zero_one():
    plan = Plan(dataset_name="x", input_size=[64, 128])
    with pytest.raises(RbmnetError, match="label noise"):
        batches.batch_function("/nonexistent", ["a"], plan, "seg", plan.seed, augment=False, label_noise=1.5)
