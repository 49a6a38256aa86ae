"""One augmentation declaration (augmentation/declaration.py), two executors of it: batchgenerators in
worker processes (training/augmentation.py) and torch on the device (training/device_augmentation.py).

A plan setting changed once changes what both executors do, because both read the declaration that
`batches.augmentation_declaration` makes from the plan, and nothing else.
"""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from batchgenerators.transforms.noise_transforms import GaussianNoiseTransform

from rbmnet.augmentation.declaration import (ELASTIC_ALPHA, ELASTIC_SIGMA, ORDER, SPATIAL,
                                             declare_augmentation)
from rbmnet.planning.plan import AugmentationConfig
from rbmnet.tasks import build_task
from rbmnet.tasks.binary import BinaryTask
from rbmnet.training.augmentation import BUILDERS, SPATIAL_ARGUMENTS, LateralMirrorTransform, transforms_from_declaration
from rbmnet.training.batches import augmentation_declaration, batch_function
from rbmnet.training.device_augmentation import draw_from_declaration
from rbmnet.training.device_batches import DeviceBatches

from test_dataloading import HEIGHT, WIDTH, TOOTH_NUMBERS, tiny_plan, write_tiny_dataset

CPU = torch.device("cpu")
DRAWS = 2000


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "2d_32x48"
    return folder, write_tiny_dataset(folder, tiny_plan())


def both_executors(tiny, augmentation: AugmentationConfig, seg_task=None):
    """The worker path's Compose and a device-path draw, each built the way training builds it."""
    folder, data = tiny
    plan = tiny_plan(augmentation=augmentation)
    task = "seg" if seg_task is not None else "pretext"
    names = data.names("labeled") if seg_task is not None else data.names()
    compose = batch_function(folder, names, plan, task, seed=0, seg_task=seg_task).keywords["transforms"]
    device = DeviceBatches(data, names, plan, task, seed=0, device=CPU, seg_task=seg_task)
    assert device.declaration == augmentation_declaration(plan, task, seg_task)
    draw = draw_from_declaration(DRAWS, device.declaration, torch.Generator().manual_seed(0))
    return compose, draw, device.declaration


def has_mirror(compose) -> bool:
    return any(isinstance(t, LateralMirrorTransform) for t in compose.transforms)


@pytest.mark.parametrize("degrees", [0.0, 30.0])
def test_the_plans_rotation_drives_both_executors(tiny, degrees):
    compose, draw, declaration = both_executors(tiny, AugmentationConfig(probability=1.0, rotation_degrees=degrees))
    spatial = compose.transforms[0]
    if degrees == 0:
        assert "rotation" not in declaration
        assert not spatial.do_rotation and not draw.rotate_on.any()
        return
    limit = math.radians(degrees)
    assert declaration.get("rotation").params["angle"] == (-limit, limit)
    assert spatial.do_rotation and spatial.angle_x == (-limit, limit) and spatial.p_rot_per_sample == 1.0
    assert draw.rotate_on.all()
    assert draw.angle.abs().max() <= limit and draw.angle.abs().max() > 0.95 * limit


def test_the_plans_probability_is_each_transforms_probability_in_both_executors(tiny):
    compose, draw, declaration = both_executors(tiny, AugmentationConfig(probability=0.3))
    assert {spec.name: spec.probability for spec in declaration.transforms} == {
        "rotation": 0.3, "scale": 0.3, "mirror": 0.5, "gamma": 0.3, "brightness": 0.3, "contrast": 0.3,
        "noise": 0.3, "blur": 0.3, "clip": 1.0}
    spatial = compose.transforms[0]
    assert spatial.p_rot_per_sample == spatial.p_scale_per_sample == 0.3
    assert [t.p_per_sample for t in compose.transforms[2:7]] == [0.3] * 5
    for flag in (draw.rotate_on, draw.scale_on, draw.gamma_on, draw.brightness_on, draw.contrast_on,
                 draw.noise_on, draw.blur_on):
        assert abs(flag.float().mean().item() - 0.3) < 0.04
    assert abs(draw.mirror_on.float().mean().item() - 0.5) < 0.04


@pytest.mark.parametrize("mirror", [True, False])
def test_the_plans_mirror_switch_drives_both_executors(tiny, mirror):
    compose, draw, declaration = both_executors(tiny, AugmentationConfig(mirror=mirror), BinaryTask())
    assert ("mirror" in declaration) == mirror == has_mirror(compose)
    assert draw.mirror_on.any() == mirror
    if mirror:
        assert declaration.get("mirror").params == {"axis": "width", "label_permutation": True}


def test_labels_without_a_left_right_lookup_are_mirrored_by_neither_executor(tiny):
    labels = {"background": 0, **{f"tooth_{n}": n for n in TOOTH_NUMBERS[1:]}}
    plan = tiny_plan()
    plan.segmentation.task, plan.segmentation.numbering_head = "teeth", "classes"
    task = build_task(plan, {"labels": labels, "tooth_numbering": None})
    assert task.flip_lookup is None
    compose, draw, declaration = both_executors(tiny, AugmentationConfig(mirror=True), task)
    assert "mirror" not in declaration and not has_mirror(compose) and not draw.mirror_on.any()
    # the same plan's pretext batches (the image alone) are mirrored
    compose, draw, declaration = both_executors(tiny, AugmentationConfig(mirror=True))
    assert declaration.get("mirror").params["label_permutation"] is False
    assert has_mirror(compose) and draw.mirror_on.any()


def test_noise_std_is_the_root_of_the_plans_variance_in_both_executors(tiny):
    compose, draw, declaration = both_executors(tiny, AugmentationConfig(probability=1.0, noise_variance=[0.0004, 0.0025]))
    low, high = declaration.get("noise").params["std"]
    assert (low, high) == (pytest.approx(0.02), pytest.approx(0.05))
    (noise,) = [t for t in compose.transforms if isinstance(t, GaussianNoiseTransform)]
    assert noise.noise_variance == (low, high)  # batchgenerators' name; it draws a standard deviation
    assert low <= draw.noise_std.min() < low + 0.001 and high - 0.001 < draw.noise_std.max() <= high


def test_elastic_is_declared_once_and_only_the_worker_path_executes_it():
    declaration = declare_augmentation(AugmentationConfig(elastic=True), mirror_allowed=True, with_label=True)
    assert declaration.get("elastic").params == {"alpha": ELASTIC_ALPHA, "sigma": ELASTIC_SIGMA}
    spatial = transforms_from_declaration(declaration, (HEIGHT, WIDTH), label_flip=BinaryTask().flip_lookup).transforms[0]
    assert spatial.do_elastic_deform and spatial.alpha == ELASTIC_ALPHA and spatial.sigma == ELASTIC_SIGMA
    with pytest.raises(ValueError, match="elastic"):
        draw_from_declaration(4, declaration, torch.Generator())


def test_every_transform_has_one_worker_builder_and_keeps_the_declared_order():
    assert set(SPATIAL_ARGUMENTS) == set(SPATIAL) and not set(SPATIAL_ARGUMENTS) & set(BUILDERS)
    assert set(SPATIAL_ARGUMENTS) | set(BUILDERS) == set(ORDER)
    config = AugmentationConfig(elastic=True)
    declaration = declare_augmentation(config, mirror_allowed=True, with_label=False)
    assert declaration.names == ORDER  # everything on: every transform, in ORDER
    compose = transforms_from_declaration(declaration, (HEIGHT, WIDTH))
    assert [type(t).__name__ for t in compose.transforms] == [
        "SpatialTransform", "LateralMirrorTransform", "GammaTransform", "BrightnessMultiplicativeTransform",
        "ContrastAugmentationTransform", "GaussianNoiseTransform", "GaussianBlurTransform", "ClipValueRange"]


def test_the_declaration_is_plain_frozen_data_from_any_plan_like_object():
    section = SimpleNamespace(rotation_degrees=90.0, scale_range=(1, 1), elastic=False, mirror=False,
                              gamma_range=(0.5, 2), brightness_range=(1, 1), contrast_range=(1, 1),
                              noise_variance=(0.0, 0.01), blur_sigma=(0.5, 1), probability=0.25)
    declaration = declare_augmentation(section, mirror_allowed=True, with_label=False)
    assert declaration.names == ("rotation", "gamma", "brightness", "contrast", "noise", "blur", "clip")
    assert declaration.get("rotation").params["angle"] == (-math.pi / 2, math.pi / 2)
    assert declaration.get("scale") is None and declaration.get("noise").params["std"] == (0.0, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        declaration.with_label = True
    with pytest.raises(ValueError, match="unknown augmentation transform"):
        declaration.get("shear")
