"""From a fingerprint and a memory budget to a Plan: input size, batch sizes, iterations per epoch.

Rules (each recorded in plan.derivation):
- input size: the median training image, shrunk (never enlarged) so its longer side is at most
  `max_side`, each side rounded to a multiple of the network's total downsampling; so the aspect
  ratio of the median image is kept (2041x1024 -> 256x512 high x wide; 512x512 -> 512x512).
- batch size: as many samples as the memory budget holds under the memory model below, clamped to
  [2, 32] (BatchNorm needs 2; beyond 32 the gradient barely improves) and to the training cases.
- iterations per epoch: pretext, one pass over its training images; segmentation, one pass over the
  fraction's training cases but at least 25 steps, because an epoch of a 10 % fraction would
  otherwise be a handful of steps and the planned epochs too few updates to converge.
- segmentation task: `teeth` when dataset.json declares a tooth numbering and several tooth labels,
  else `binary` (tasks.default_task_name); `--set segmentation.task=...` forces either.
Epochs, learning rates and the rest keep the Plan defaults (the paper's 80 pretext epochs).

Memory model, per training sample at input H x W: a U-Net-like network keeps, for the backward
pass, a handful of tensors per stage of features[s] channels at (H/2^s) x (W/2^s), i.e.
    bytes = H * W * sum_s(features[s] / 4^s) * 4 bytes * ACTIVATION_VALUES_PER_FEATURE_PIXEL.
The constant was measured: CPU peak memory (ru_maxrss) of one Adam step (forward + backward) of a
ResUNet with features [32..512] at 2-4 x 128x128 to 2 x 256x512 grew by 74-78 bytes per
pixel x sum_s(features[s]/4^s), i.e. ~19.5 float32 values; 20 keeps a small margin. Fixed cost:
weights, gradients and two Adam moments, 4 copies of ~25 * sum(features^2) float32 parameters
(8.7 M parameters measured for the default widths; the estimate gives 8.7 M). The output adds, per
output channel of the task's head, OUTPUT_VALUES_PER_CHANNEL_PIXEL float32 values per pixel (logits,
activation, their gradients, the one-hot target): 33 channels for FDI teeth with the `classes` head.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.layout import DEFAULT_PLANS_NAME
from rbmnet.planning.plan import NetworkConfig, Plan, apply_overrides
from rbmnet.tasks import build_task, default_task_name

MIN_BATCH, MAX_BATCH = 2, 32
MIN_SEGMENTATION_ITERATIONS = 25
ACTIVATION_VALUES_PER_FEATURE_PIXEL = 20
OUTPUT_VALUES_PER_CHANNEL_PIXEL = 5
BYTES_PER_VALUE = 4  # float32 training
PARAMETERS_PER_SQUARED_WIDTH = 25
GIB = 2 ** 30
CPU_BUDGET_CAP = 4 * GIB
CPU_BUDGET_SHARE = 0.25  # of available RAM: leave the rest to data loading and the system
GPU_USABLE_SHARE = 0.8  # CUDA context, cuDNN workspaces and allocator fragmentation take the rest
# The device data path (training/device_batches.py) keeps the dataset on the GPU when it takes at
# most this share of the GPU's (free) memory; float16 images and uint8 targets.
DEVICE_DATA_SHARE = 0.25


@dataclass
class MemoryBudget:
    device: str
    memory_bytes: int  # what the device has (GPU total, or available RAM)
    budget_bytes: int  # what one training process may use
    source: str  # how memory_bytes was found


def memory_budget(gpu_memory_gb: float | None = None, cpu_only: bool = False) -> MemoryBudget:
    """The budget of the machine this runs on (its CPU with `cpu_only`), or of a GPU with `gpu_memory_gb` GiB."""
    if cpu_only and gpu_memory_gb is None:
        return _cpu_budget()
    if gpu_memory_gb is not None:
        if gpu_memory_gb <= 0:
            raise RbmnetError(f"--gpu-memory-gb must be positive, got {gpu_memory_gb}")
        total = int(gpu_memory_gb * GIB)
        return MemoryBudget("cuda", total, int(total * GPU_USABLE_SHARE), "--gpu-memory-gb")
    if _gpu_device_present():
        import torch  # only here: importing torch costs seconds, and planning needs it for nothing else

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return MemoryBudget(f"cuda ({props.name})", int(props.total_memory),
                                int(props.total_memory * GPU_USABLE_SHARE), "torch.cuda total_memory of device 0")
    return _cpu_budget()


def _gpu_device_present() -> bool:
    """Device nodes of NVIDIA (or ROCm) drivers; without them torch.cuda cannot find a GPU either."""
    dev = Path("/dev")
    return not dev.is_dir() or any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


def _cpu_budget() -> MemoryBudget:
    available = available_ram_bytes()
    return MemoryBudget("cpu", available, int(min(CPU_BUDGET_CAP, CPU_BUDGET_SHARE * available)),
                        "MemAvailable of /proc/meminfo; budget min(4 GiB, 25 %)")


def available_ram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 * GIB  # unknown system: assume a modest laptop


def per_sample_bytes(input_size: list[int], network: NetworkConfig, output_channels: int = 1) -> int:
    feature_pixels = sum(f / 4 ** s for s, f in enumerate(network.features_per_stage))
    height, width = input_size
    features = feature_pixels * ACTIVATION_VALUES_PER_FEATURE_PIXEL
    return int(height * width * (features + output_channels * OUTPUT_VALUES_PER_CHANNEL_PIXEL) * BYTES_PER_VALUE)


def model_state_bytes(network: NetworkConfig) -> int:
    parameters = PARAMETERS_PER_SQUARED_WIDTH * sum(f * f for f in network.features_per_stage)
    return 4 * parameters * BYTES_PER_VALUE  # weights, gradients, Adam's two moments


def batch_size_for(budget_bytes: int, sample_bytes: int, state_bytes: int, training_cases: int) -> int:
    fitting = max(0, budget_bytes - state_bytes) // max(1, sample_bytes)
    return clamp_batch_size(fitting, training_cases)


def clamp_batch_size(fitting: int, training_cases: int) -> int:
    """What fits in memory (modelled or probed), clamped to [MIN_BATCH, MAX_BATCH] and the training cases."""
    return min(max(MIN_BATCH, min(MAX_BATCH, fitting)), max(MIN_BATCH, training_cases))


def resident_data_bytes(num_cases: int, input_size, with_targets: bool) -> int:
    """Device memory of a dataset held on the GPU: float16 images (+ uint8 targets)."""
    height, width = input_size
    return num_cases * height * width * (2 + (1 if with_targets else 0))


def planned_data_path(budget: MemoryBudget, data_bytes: int) -> tuple[str, str]:
    """The plan's augmentation.data_path and why: a GPU plan decides; a CPU plan leaves it to training."""
    if not budget.device.startswith("cuda"):
        return "auto", "planned for a CPU: decided when training starts, from the free memory of its GPU if any"
    if data_bytes <= DEVICE_DATA_SHARE * budget.memory_bytes:
        return "device", (f"dataset {data_bytes / GIB:.2f} GiB <= {DEVICE_DATA_SHARE:.0%} of the GPU's "
                          f"{budget.memory_bytes / GIB:.1f} GiB: kept and augmented on the GPU")
    return "workers", (f"dataset {data_bytes / GIB:.2f} GiB > {DEVICE_DATA_SHARE:.0%} of the GPU's "
                       f"{budget.memory_bytes / GIB:.1f} GiB: batches made by CPU workers")


def plan_input_size(median_shape, total_downsampling: int, max_side: int = 512) -> list[int]:
    """Median (height, width) -> [height, width] with the same aspect, longer side <= max_side."""
    if max_side < total_downsampling:
        raise RbmnetError(f"--max-side {max_side} is smaller than the network's downsampling {total_downsampling}")
    scale = min(1.0, max_side / max(median_shape))
    size = []
    for side in median_shape:
        rounded = max(total_downsampling, round(side * scale / total_downsampling) * total_downsampling)
        if rounded > max_side:
            rounded -= total_downsampling
        size.append(int(rounded))
    return size


def check_input_size(size, total_downsampling: int) -> list[int]:
    size = [int(s) for s in size]
    if len(size) != 2 or any(s <= 0 for s in size):
        raise RbmnetError(f"input size must be two positive numbers (height width), got {size}")
    bad = [s for s in size if s % total_downsampling]
    if bad:
        suggestion = "x".join(str(max(1, round(s / total_downsampling)) * total_downsampling) for s in size)
        raise RbmnetError(f"input size {size[0]}x{size[1]} is not divisible by {total_downsampling} (the network "
                          f"downsamples {int(math.log2(total_downsampling))} times); use e.g. {suggestion}")
    return size


def fold_training_cases(num_labeled: int, fraction: float, num_folds: int = 5) -> int:
    """Training cases of the smallest fold's training split at `fraction` (as training will draw them)."""
    smallest_train = num_labeled - math.ceil(num_labeled / num_folds)
    return max(1, round(smallest_train * fraction))


def generate_plan(fingerprint: dict, dataset_name: str, plans_name: str = DEFAULT_PLANS_NAME,
                  overrides: dict | None = None, input_size=None, max_side: int = 512, gpu_memory_gb: float | None = None,
                  budget: MemoryBudget | None = None, probe=None, dataset_json: dict | None = None,
                  time_choice: dict | None = None) -> Plan:
    """A fresh plan. Overrides are applied first (so e.g. other widths change the memory model) and
    win over every derived value. `probe` (training/batch_probe.BatchProbe, measured on this plan's network and
    input size) replaces the memory model's batch size. `dataset_json` decides the segmentation task.
    `time_choice` (planning/time_budget.py: what a time budget chose, as dotted keys) is applied like
    overrides but recorded as derived; the user's overrides still win over it."""
    explicit = dict(overrides or {})
    overrides = {**(time_choice or {}), **explicit}
    plan = Plan(dataset_name=dataset_name, plans_name=plans_name)
    if dataset_json is not None:
        plan.segmentation.task = default_task_name(dataset_json)
    task_rule = (f"{plan.segmentation.task}: dataset.json tooth_numbering "
                 f"{(dataset_json or {}).get('tooth_numbering')}" if dataset_json is not None else "plan default")
    plan = apply_overrides(plan, overrides)
    if "segmentation.task" in explicit:
        task_rule = "set by --set segmentation.task"
    output_channels = build_task(plan, dataset_json).output_channels if dataset_json is not None else 1
    downsampling = plan.network.total_downsampling
    median_shape = fingerprint["aggregate"]["median_shape"]
    if "input_size" in explicit:
        size_rule = "set by --set input_size"
    elif "input_size" in overrides:
        size_rule = "chosen for the time budget (time_budget)"
    elif input_size is not None:
        plan.input_size = list(input_size)
        size_rule = "set by --input-size"
    else:
        plan.input_size = plan_input_size(median_shape, downsampling, max_side)
        size_rule = (f"median shape {median_shape} scaled to longer side <= {max_side} (never enlarged), "
                     f"sides rounded to multiples of {downsampling}")
    plan.input_size = check_input_size(plan.input_size, downsampling)

    budget = budget or memory_budget(gpu_memory_gb)
    sample = per_sample_bytes(plan.input_size, plan.network, output_channels)
    state = model_state_bytes(plan.network)
    images = fingerprint["num_labeled"] + fingerprint["num_unlabeled"]
    pretext_cases = max(1, images - math.ceil(images * plan.pretext.validation_fraction))
    seg_cases = fold_training_cases(fingerprint["num_labeled"], plan.segmentation.fraction)
    # an explicit batch size is taken before iterations are derived from it (one pass per epoch)
    fitting = probe.batch_size if probe is not None else None
    plan.pretext.batch_size = overrides.get("pretext.batch_size") or (
        clamp_batch_size(fitting, pretext_cases) if fitting else batch_size_for(
            budget.budget_bytes, sample, state, pretext_cases))
    plan.segmentation.batch_size = overrides.get("segmentation.batch_size") or (
        clamp_batch_size(fitting, seg_cases) if fitting else batch_size_for(
            budget.budget_bytes, sample, state, seg_cases))
    data_bytes = resident_data_bytes(images, plan.input_size, with_targets=True)
    plan.augmentation.data_path, data_path_rule = planned_data_path(budget, data_bytes)
    plan.pretext.iterations_per_epoch = math.ceil(pretext_cases / plan.pretext.batch_size)
    plan.segmentation.iterations_per_epoch = max(MIN_SEGMENTATION_ITERATIONS,
                                                 math.ceil(seg_cases / plan.segmentation.batch_size))
    plan = apply_overrides(plan, overrides)  # explicit values win over derived ones
    plan.input_size = check_input_size(plan.input_size, plan.network.total_downsampling)
    plan.derivation = {
        "device": budget.device,
        "memory_assumed_bytes": budget.memory_bytes,
        "memory_assumed_gib": round(budget.memory_bytes / GIB, 2),
        "memory_source": budget.source,
        "budget_bytes": budget.budget_bytes,
        "budget_gib": round(budget.budget_bytes / GIB, 2),
        "memory_model": (f"per sample H*W*sum_s(features[s]/4^s)*{BYTES_PER_VALUE} bytes*"
                         f"{ACTIVATION_VALUES_PER_FEATURE_PIXEL} (calibrated on CPU peak memory of a ResUNet step) "
                         f"+ H*W*output channels*{OUTPUT_VALUES_PER_CHANNEL_PIXEL}*{BYTES_PER_VALUE} bytes; "
                         f"fixed: 4 copies of {PARAMETERS_PER_SQUARED_WIDTH}*sum(features^2) float32 parameters"),
        "per_sample_bytes": sample,
        "output_channels": output_channels,
        "task_rule": task_rule,
        "model_state_bytes": state,
        "median_shape": median_shape,
        "input_size_rule": size_rule,
        "batch_size_rule": (f"floor((budget - model state) / per sample), clamped to [{MIN_BATCH}, {MAX_BATCH}] "
                            f"and to the training cases (pretext {pretext_cases}, segmentation {seg_cases} = "
                            f"smallest fold's training split x fraction {plan.segmentation.fraction})"),
        "iterations_rule": (f"pretext ceil({pretext_cases} / batch); segmentation "
                            f"max({MIN_SEGMENTATION_ITERATIONS}, ceil({seg_cases} / batch))"),
        "data_path_rule": data_path_rule,
        "resident_data_bytes": data_bytes,
        "cases": {"labeled": fingerprint["num_labeled"], "unlabeled": fingerprint["num_unlabeled"],
                  "test": fingerprint["num_test"]},
        "overrides": explicit,
    }
    if "segmentation.batch_size" in (time_choice or {}) and "segmentation.batch_size" not in explicit:
        plan.derivation["batch_size_rule"] = (
            "chosen for the time budget: on a CPU at most 4 (the time per image hardly depends on the batch, "
            "so small batches buy updates), within memory; on a GPU what the memory model holds")
    if probe is not None:
        plan.derivation["batch_size_rule"] = (
            f"measured: largest batch whose peak GPU memory (2 bf16 Adam steps) stayed within "
            f"{probe.limit_bytes / GIB:.1f} GiB of {probe.free_bytes / GIB:.1f} GiB free was {probe.batch_size}; "
            f"clamped to [{MIN_BATCH}, {MAX_BATCH}] and to the training cases (pretext {pretext_cases}, "
            f"segmentation {seg_cases})")
        plan.derivation["batch_size_probe"] = probe.to_dict()
    return plan


def plan_differences(kept: Plan, fresh: Plan) -> list[str]:
    """Dotted keys whose values differ between two plans (derivation excluded: it only explains)."""
    a, b = flatten_plan(kept.to_dict()), flatten_plan(fresh.to_dict())
    return sorted(k for k in set(a) | set(b) if not k.startswith("derivation") and a.get(k) != b.get(k))


def flatten_plan(data: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: plan values by the dotted keys that --set uses."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_plan(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
