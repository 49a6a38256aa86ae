"""Measured training speeds for the time planner: a few real training steps of a configuration.

For one SpeedCase (planning/speeds.py) on the device that will train: a warm-up step, then timed
forward + backward + Adam steps of the segmentation loss and of the pretext loss, exactly as the
training loop runs them (autocast, fast kernels); on a CPU also the making of one augmented batch
(the worker data path shares the cores with the steps, so the planner adds the two); a forward
without gradients (validation); and the reports' per-case work (resizing to the original size,
decoding and scoring a fold's prediction; SSIM, FSIM, LPIPS of a pretext reconstruction).
A few seconds per case for the sizes a CPU budget picks; `speed_for` caches the result.
"""
from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rbmnet.errors import RbmnetError
from rbmnet.evaluation.image_metrics import reconstruction_metrics
from rbmnet.evaluation.lpips_metric import load_lpips
from rbmnet.model.device import autocast, use_fast_kernels
from rbmnet.model.network import build_model_network
from rbmnet.model.sobel import network_input
from rbmnet.networks.optimization import build_optimizer
from rbmnet.planning.plan import Plan
from rbmnet.planning.speeds import Speed, SpeedCache, SpeedCase
from rbmnet.preprocessing.transforms import restore_probabilities
from rbmnet.tasks.base import SegmentationTask
from rbmnet.training.augmentation import apply_transforms, transforms_from_declaration
from rbmnet.training.batches import augmentation_declaration
from rbmnet.pretexts import masking_scheme
from rbmnet.training.pretext import RECONSTRUCTION_CHANNELS, pretext_batch_loss
from rbmnet.training.segmentation import seg_batch_loss

TIMED_SECONDS = 1.5  # per measured quantity, after a warm-up: enough repeats for a stable median
MAX_REPEATS = 5


def machine_description(device: torch.device) -> str:
    """The part of a cache key that names the machine: device, torch version, threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return f"{device.type} {name}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speed_for(case: SpeedCase, plan: Plan, task: SegmentationTask, device: torch.device, original_shape,
              cache: SpeedCache | None = None) -> tuple[Speed, bool]:
    """(speed, True when it came from the cache): measured once per machine and configuration."""
    cache = cache if cache is not None else SpeedCache()
    key = case.key(machine_description(device))
    cached = cache.get(key)
    if cached is not None:
        return cached, True
    try:
        speed = measure_speed(case, plan, task, device, original_shape)
    except torch.cuda.OutOfMemoryError:
        raise RbmnetError(f"speed probe: {case.input_size[0]}x{case.input_size[1]} with widths "
                          f"{list(case.features_per_stage)} at batch {case.seg_batch_size} does not fit in the GPU's "
                          f"memory; plan with --probe-batch-size or set the batch sizes (--set segmentation.batch_size=N)"
                          ) from None
    cache.put(key, speed)
    return speed, False


def measure_speed(case: SpeedCase, plan: Plan, task: SegmentationTask, device: torch.device,
                  original_shape) -> Speed:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network_config = dataclasses.replace(plan.network, features_per_stage=list(case.features_per_stage))
    height, width = case.input_size

    def step_seconds(output_channels: int, batch_size: int, loss) -> float:
        network = use_fast_kernels(build_model_network(network_config, output_channels).to(device), device)
        optimizer = build_optimizer(network, plan.segmentation)
        batch = _device_batch(rng, batch_size, height, width, task, plan, device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                value = loss(network, batch)
            value.backward()
            optimizer.step()

        return _timed(step, device)

    seg_step = step_seconds(task.output_channels, case.seg_batch_size,
                            lambda network, batch: seg_batch_loss(network, batch, task))
    fill = plan.masking.fill_value
    pretext_step = step_seconds(RECONSTRUCTION_CHANNELS, case.pretext_batch_size,
                                lambda network, batch: pretext_batch_loss(network, batch, fill))
    seg_batch = pretext_batch = 0.0
    if device.type != "cuda":  # on a GPU the device data path makes batches there, overlapping the steps
        seg_batch = _batch_seconds(plan, task, case.input_size, case.seg_batch_size, "seg", rng)
        pretext_batch = _batch_seconds(plan, task, case.input_size, case.pretext_batch_size, "pretext", rng)
    evaluation = _eval_seconds_per_image(network_config, task, case, device, rng)
    return Speed(seg_step_seconds=seg_step, pretext_step_seconds=pretext_step, seg_batch_seconds=seg_batch,
                 pretext_batch_seconds=pretext_batch, eval_seconds_per_image=evaluation,
                 seg_report_seconds_per_megapixel=_seg_report_seconds_per_megapixel(task, case, original_shape, rng),
                 pretext_report_seconds_per_image=_pretext_report_seconds(case.input_size, plan, rng),
                 source=f"measured on {machine_description(device)}")


def _timed(function, device: torch.device) -> float:
    """Median seconds of `function` after one warm-up call (which also allocates Adam's moments)."""
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    once()
    times = [once()]
    while len(times) < MAX_REPEATS and sum(times) < TIMED_SECONDS:
        times.append(once())
    return statistics.median(times)


def _device_batch(rng, batch_size: int, height: int, width: int, task: SegmentationTask, plan: Plan,
                  device: torch.device) -> dict:
    image = torch.from_numpy(rng.random((batch_size, 1, height, width), dtype=np.float32)).to(device)
    target = torch.from_numpy(rng.integers(0, task.num_classes, (batch_size, 1, height, width))
                              .astype(np.float32)).to(device)
    scheme, cell = masking_scheme(plan.masking.scheme), plan.network.total_downsampling
    mask = torch.from_numpy(np.stack([scheme.mask((height, width), plan.masking, cell, rng)
                                      for _ in range(batch_size)])[:, None]).to(device)
    return {"image": image, "target": target, "mask": mask}


def _batch_seconds(plan: Plan, task: SegmentationTask, input_size, batch_size: int, kind: str, rng) -> float:
    seg_task = task if kind == "seg" else None
    transforms = transforms_from_declaration(augmentation_declaration(plan, kind, seg_task), tuple(input_size),
                                             label_flip=task.flip_lookup if seg_task is not None else None)
    image = rng.random((batch_size, 1, *input_size), dtype=np.float32)
    label = rng.integers(0, task.num_classes, (batch_size, 1, *input_size)).astype(np.uint8) if seg_task else None

    def make() -> None:
        apply_transforms(transforms, int(rng.integers(2**31)), image, label)
        if kind == "pretext":
            scheme = masking_scheme(plan.masking.scheme)
            [scheme.mask(tuple(input_size), plan.masking, plan.network.total_downsampling, rng)
             for _ in range(batch_size)]

    return _timed(make, torch.device("cpu"))


def _eval_seconds_per_image(network_config, task: SegmentationTask, case: SpeedCase, device: torch.device,
                            rng) -> float:
    network = use_fast_kernels(build_model_network(network_config, task.output_channels).to(device), device).eval()
    count = min(4, case.seg_batch_size)
    image = torch.from_numpy(rng.random((count, 1, *case.input_size), dtype=np.float32)).to(device)

    def forward() -> None:
        with torch.no_grad(), autocast(device):
            task.activate(network(network_input(image)))

    return _timed(forward, device) / count


def _seg_report_seconds_per_megapixel(task: SegmentationTask, case: SpeedCase, original_shape, rng) -> float:
    """Resize a prediction to the original size, decode and score it: blobs like teeth, not pixel noise
    (noise would make connected-component metrics far slower than real predictions)."""
    height, width = case.input_size
    coarse = torch.from_numpy(rng.normal(size=(2, task.output_channels, max(1, height // 16), max(1, width // 16)))
                              .astype(np.float32) * 4)
    logits = F.interpolate(coarse, size=(height, width), mode="nearest")
    probabilities = task.activate(logits).numpy()
    reference = task.decode(restore_probabilities(probabilities[1], original_shape))

    def report() -> None:
        prediction = task.decode(restore_probabilities(probabilities[0], original_shape))
        task.case_metrics(prediction, reference)

    megapixels = original_shape[0] * original_shape[1] / 1e6
    return _timed(report, torch.device("cpu")) / megapixels


def _pretext_report_seconds(input_size, plan: Plan, rng) -> float:
    lpips_metric = load_lpips(None)
    lpips_metric = None if hasattr(lpips_metric, "reason") else lpips_metric
    target = rng.random(tuple(input_size), dtype=np.float32)
    prediction = np.clip(target + rng.normal(scale=0.05, size=target.shape).astype(np.float32), 0, 1)
    mask = masking_scheme(plan.masking.scheme).mask(tuple(input_size), plan.masking,
                                                    plan.network.total_downsampling, rng)

    def report() -> None:
        reconstruction_metrics(prediction, target, mask, lpips_metric)
        reconstruction_metrics(np.where(mask, 0.0, target), target, mask, None)

    return _timed(report, torch.device("cpu"))

