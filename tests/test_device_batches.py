"""The GPU-resident data path (device_batches.py, device_augmentation.py), exercised on the CPU: same code."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import ndimage

from rbmnet.planning.plan import AugmentationConfig, Plan, apply_overrides
from rbmnet.planning.planner import DEVICE_DATA_SHARE, MemoryBudget, planned_data_path
from rbmnet.tasks.binary import BinaryTask
from rbmnet.augmentation.declaration import declare_augmentation
from rbmnet.training import batches
from rbmnet.training.device_augmentation import draw_from_declaration, gaussian_blur, intensity, warp
from rbmnet.training.device_batches import DeviceBatches, batch_source, choose_data_path
from rbmnet.training.label_noise import corrupted_cases, noisy_label
from training_factory import make_tiny_dataset

CPU = torch.device("cpu")
TINY = {"network.features_per_stage": [4, 8, 16, 32, 64], "pretext.batch_size": 3, "segmentation.batch_size": 3,
        "segmentation.iterations_per_epoch": 2, "segmentation.epochs": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A preprocessed synthetic dataset at 64x128: (root environment, plan, PreprocessedDataset)."""
    from rbmnet.training.setup import load_stage_inputs

    env = make_tiny_dataset(tmp_path_factory.mktemp("device_batches"), num_labeled=8, num_unlabeled=2,
                            num_test=0, seed=2, overrides=TINY)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        inputs = load_stage_inputs("Tiny", "plans", {})
    return env, inputs.plan, inputs.data


@pytest.fixture
def one_thread():
    # two OpenMP threads on a busy 2-core machine can be 100x slower than one
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _forced(plan: Plan, **changes) -> Plan:
    return apply_overrides(plan, {f"augmentation.{k}": v for k, v in changes.items()})


@pytest.mark.parametrize("task", ["pretext", "seg"])
def test_batch_has_the_cpu_paths_format_and_cases(tiny, task):
    _, plan, data = tiny
    names = data.names("labeled")
    seg_task = BinaryTask() if task == "seg" else None
    device_batch = DeviceBatches(data, names, plan, task, seed=5, device=CPU, seg_task=seg_task)(2, 1)
    cpu_batch = batches.make_batch(data, names, plan, task, 2, 1, seed=5, seg_task=seg_task)
    assert set(device_batch) == set(cpu_batch)
    assert device_batch["case"] == cpu_batch["case"]  # same shuffled cycle of cases
    for key in set(cpu_batch) - {"case"}:
        assert isinstance(device_batch[key], torch.Tensor)
        assert tuple(device_batch[key].shape) == cpu_batch[key].shape == (3, 1, 64, 128)
        assert device_batch[key].dtype == torch.from_numpy(cpu_batch[key]).dtype
    image = device_batch["image"]
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
    if task == "seg":
        assert set(device_batch["target"].unique().tolist()) <= {0.0, 1.0}
        assert device_batch["target"].mean() > 0.02  # teeth are there
    else:
        covered = device_batch["mask"].float().mean(dim=(1, 2, 3))
        assert torch.all(covered >= 0.14) and torch.all(covered <= 0.80)


def test_batches_are_a_pure_function_of_seed_epoch_iteration(tiny):
    _, plan, data = tiny
    plan = _forced(plan, probability=1.0)
    names = data.names("labeled")
    first = DeviceBatches(data, names, plan, "pretext", seed=5, device=CPU)
    again = DeviceBatches(data, names, plan, "pretext", seed=5, device=CPU)  # as after a resume
    a, b = first(3, 2), again(3, 2)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    first(0, 0)  # drawing other batches in between changes nothing
    assert torch.equal(first(3, 2)["image"], a["image"])
    assert not torch.equal(first(3, 3)["image"], a["image"])  # next iteration (another DDP rank)
    assert not torch.equal(DeviceBatches(data, names, plan, "pretext", seed=6, device=CPU)(3, 2)["image"], a["image"])


def test_without_augmentation_images_are_the_preprocessed_ones(tiny):
    _, plan, data = tiny
    names = data.names("labeled")
    batch = DeviceBatches(data, names, plan, "seg", seed=1, device=CPU, augment=False, seg_task=BinaryTask())(0, 0)
    expected = np.stack([data.image(n) for n in batch["case"]])[:, None]
    assert np.array_equal(batch["image"].numpy(), expected)
    labels = np.stack([data.label(n) for n in batch["case"]])[:, None]
    assert np.array_equal(batch["target"].numpy(), (labels > 0).astype(np.float32))


def test_label_noise_is_applied_once_per_case(tiny):
    _, plan, data = tiny
    names = data.names("labeled")
    source = DeviceBatches(data, names, plan, "seg", seed=4, device=CPU, augment=False, label_noise=1.0,
                           seg_task=BinaryTask())
    corrupted = set(corrupted_cases(names, 1.0, 4))
    changed = 0
    for row, name in enumerate(names):
        expected = noisy_label(data.label(name), name, corrupted, 4) > 0
        assert np.array_equal(source.targets[row].numpy().astype(bool), expected)
        changed += not np.array_equal(expected, data.label(name) > 0)
    assert changed >= len(names) // 2


def _flags(count: int, on: bool) -> torch.Tensor:
    return torch.full((count,), on)


def _draw(count: int, **on):
    draw = draw_from_declaration(count, 
        declare_augmentation(AugmentationConfig(), mirror_allowed=True, with_label=True), torch.Generator().manual_seed(0))
    for name in ("rotate", "scale", "mirror", "gamma", "brightness", "contrast", "noise", "blur"):
        setattr(draw, f"{name}_on", _flags(count, on.get(name, False)))
    return draw


def test_quarter_turn_of_a_square_image_matches_rot90_and_labels_stay_labels():
    image = torch.rand(1, 1, 16, 16)
    target = (torch.rand(1, 1, 16, 16) > 0.5).float()
    draw = _draw(1, rotate=True)
    draw.angle[:] = math.pi / 2
    rotated, rotated_target = warp(image, target, draw)
    turned = [torch.rot90(image, k, dims=(2, 3)) for k in (1, 3)]
    assert min((rotated - t).abs().max() for t in turned) < 1e-4  # bilinear at exact pixel centres
    assert set(rotated_target.unique().tolist()) <= {0.0, 1.0}
    assert any(torch.equal(rotated_target, torch.rot90(target, k, dims=(2, 3))) for k in (1, 3))


def test_rotation_on_a_wide_image_is_a_rotation_in_pixels():
    """A bright dot 10 px right of the centre of a 32x64 image ends 10 px above or below it."""
    image = torch.zeros(1, 1, 32, 64)
    image[0, 0, 15:17, 41:43] = 1.0  # 2x2 dot centred at (16, 42); image centre (16, 32)
    draw = _draw(1, rotate=True)
    draw.angle[:] = math.pi / 2
    rotated, _ = warp(image, None, draw)
    rows, cols = torch.nonzero(rotated[0, 0] > 0.5, as_tuple=True)
    assert abs(cols.float().mean().item() + 0.5 - 32) < 1.0
    assert abs(abs(rows.float().mean().item() + 0.5 - 16) - 10) < 1.0


def test_scaling_above_one_shrinks_the_content():
    image = torch.zeros(1, 1, 32, 32)
    image[0, 0, 8:24, 8:24] = 1.0
    draw = _draw(1, scale=True)
    draw.scale[:] = 2.0
    scaled, _ = warp(image, None, draw)
    area, scaled_area = (image > 0.5).sum().item(), (scaled > 0.5).sum().item()
    assert 0.2 * area < scaled_area < 0.3 * area  # sampling twice the extent: a quarter of the area


def test_mirror_flips_image_and_target_together():
    image, target = torch.rand(2, 1, 8, 12), (torch.rand(2, 1, 8, 12) > 0.5).float()
    draw = _draw(2, mirror=True)
    draw.mirror_on[1] = False
    mirrored, mirrored_target = warp(image, target, draw)
    assert torch.equal(mirrored[0], image[0].flip(2)) and torch.equal(mirrored_target[0], target[0].flip(2))
    assert torch.equal(mirrored[1], image[1]) and torch.equal(mirrored_target[1], target[1])


def test_intensity_transforms_do_what_their_parameters_say():
    generator = torch.Generator().manual_seed(1)
    image = 0.2 + 0.6 * torch.rand(3, 1, 32, 32, generator=generator)
    assert torch.allclose(intensity(image, _draw(3), generator), image, atol=1e-6)  # nothing drawn: unchanged

    draw = _draw(3, gamma=True)
    draw.gamma[:] = 2.0
    low, high = image.amin(dim=(1, 2, 3), keepdim=True), image.amax(dim=(1, 2, 3), keepdim=True)
    expected = ((image - low) / (high - low)) ** 2 * (high - low) + low
    assert torch.allclose(intensity(image, draw, generator), expected, atol=1e-5)

    draw = _draw(3, brightness=True)
    draw.brightness[:] = 1.5
    assert torch.allclose(intensity(image, draw, generator), (image * 1.5).clamp(0, 1), atol=1e-6)

    draw = _draw(3, contrast=True)
    draw.contrast[:] = 0.5
    out = intensity(image, draw, generator)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), image.mean(dim=(1, 2, 3)), atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2, 3)), 0.5 * image.std(dim=(1, 2, 3)), rtol=1e-3)

    flat = torch.full((2, 1, 64, 64), 0.5)
    draw = _draw(2, noise=True)
    draw.noise_std[:] = 0.04
    assert abs((intensity(flat, draw, generator) - 0.5).std().item() - 0.04) < 0.004


def test_blur_matches_scipy_away_from_the_border():
    image = torch.zeros(2, 1, 41, 41)
    image[:, :, 20, 20] = 1.0
    sigma = torch.tensor([0.7, 1.3], dtype=torch.float64)
    blurred = gaussian_blur(image, sigma)
    for i, s in enumerate(sigma.tolist()):
        reference = ndimage.gaussian_filter(image[i, 0].numpy().astype(np.float64), s, truncate=4.0)
        assert np.allclose(blurred[i, 0].numpy(), reference, atol=1e-5)  # radii differ by a pixel


def test_each_transform_happens_with_the_plans_probability():
    config = AugmentationConfig(probability=0.3)
    draw = draw_from_declaration(4000, 
        declare_augmentation(config, mirror_allowed=True, with_label=True), torch.Generator().manual_seed(3))
    for flag in (draw.rotate_on, draw.scale_on, draw.gamma_on, draw.noise_on, draw.blur_on):
        assert abs(flag.float().mean().item() - 0.3) < 0.035
    assert abs(draw.mirror_on.float().mean().item() - 0.5) < 0.035
    assert draw.angle.abs().max() <= math.radians(config.rotation_degrees)
    assert draw.scale.min() >= 0.9 and draw.scale.max() <= 1.1
    assert 0.35 < (draw.gamma < 1).float().mean().item() < 0.65  # half below 1, half above (batchgenerators)
    off = draw_from_declaration(100, 
        declare_augmentation(AugmentationConfig(mirror=False, rotation_degrees=0.0), mirror_allowed=True, with_label=True), torch.Generator())
    assert not off.mirror_on.any() and not off.rotate_on.any()


def test_data_path_choice(tiny):
    _, plan, _ = tiny
    cuda = torch.device("cuda")  # a device object needs no GPU; free memory is passed in
    gib = 2 ** 30
    assert choose_data_path("workers", plan, cuda, 1, free_bytes=80 * gib).path == "workers"
    assert choose_data_path("auto", plan, CPU, 1).path == "workers"
    assert choose_data_path("device", plan, CPU, 1).path == "device"  # honoured on a CPU (tests, debugging)
    assert choose_data_path("auto", plan, cuda, gib, free_bytes=80 * gib).path == "device"
    too_big = choose_data_path("auto", plan, cuda, 30 * gib, free_bytes=80 * gib)
    assert too_big.path == "workers" and "30.00 GiB" in too_big.reason
    assert choose_data_path("auto", _forced(plan, data_path="workers"), cuda, 1, free_bytes=80 * gib).path == "workers"
    assert choose_data_path("device", _forced(plan, elastic=True), cuda, 1, free_bytes=80 * gib).path == "workers"
    with pytest.raises(ValueError):
        choose_data_path("gpu", plan, cuda, 1)


def test_plan_decides_the_data_path_for_a_gpu_and_leaves_it_open_for_a_cpu():
    gib = 2 ** 30
    assert planned_data_path(MemoryBudget("cpu", 16 * gib, 4 * gib, "test"), 10)[0] == "auto"
    assert planned_data_path(MemoryBudget("cuda (H200)", 140 * gib, 112 * gib, "test"), gib)[0] == "device"
    limit = int(DEVICE_DATA_SHARE * 8 * gib)
    assert planned_data_path(MemoryBudget("cuda", 8 * gib, 6 * gib, "test"), limit + 1)[0] == "workers"
    old = Plan(dataset_name="T").to_dict()
    del old["augmentation"]["data_path"]  # plans written before the key existed still load
    assert Plan.from_dict(old).augmentation.data_path == "auto"


def test_batch_source_picks_the_path(tiny):
    _, plan, data = tiny
    names = data.names("labeled")
    on_device = batch_source(data, names, plan, "seg", 1, CPU, requested="device", num_workers=3,
                             seg_task=BinaryTask())
    assert isinstance(on_device.make_batch, DeviceBatches) and on_device.num_workers == 0
    in_workers = batch_source(data, names, plan, "seg", 1, CPU, requested="auto", num_workers=3,
                              seg_task=BinaryTask())
    assert in_workers.choice.path == "workers" and in_workers.num_workers == 3
    assert set(in_workers.make_batch(0, 0)) == {"image", "target", "case"}


def test_training_on_the_device_path_through_the_command_line(tiny, monkeypatch, one_thread):
    from rbmnet.cli.train import main as train_cli

    env, _, _ = tiny
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(train_cli, ["seg", "0", "-d", "Tiny", "--init", "scratch", "--data-path", "device",
                                            "--compile", "--overwrite", "-np", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "batches on device" in result.output and "--compile is ignored on CPU" in result.output
    # the synthetic set is FDI-numbered: the plan chose the teeth task, its default head names the model
    fold = Path(env["RBMNET_RESULTS"]) / "Tiny" / "seg__resunet__scratch__frac0.2__plans__teeth-classes" / "fold_0"
    log = fold / "training_log.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 1 and math.isfinite(entries[0]["train_loss"]) and entries[0]["train_images_per_second"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_batches_are_made_on_the_gpu(tiny):
    _, plan, data = tiny
    device = torch.device("cuda")
    batch = DeviceBatches(data, data.names("labeled"), _forced(plan, probability=1.0), "pretext", 1, device)(0, 0)
    assert batch["image"].device.type == "cuda" and batch["mask"].device.type == "cuda"
    again = DeviceBatches(data, data.names("labeled"), _forced(plan, probability=1.0), "pretext", 1, device)(0, 0)
    assert torch.equal(batch["image"], again["image"])
