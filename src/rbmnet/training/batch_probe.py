"""Batch size from measured GPU memory: run training steps at growing batch sizes, keep the largest that fits.

planner.py's memory model was calibrated on a CPU; on a GPU the truth differs (bf16 activations,
cuDNN workspaces, the caching allocator). `rbmnet_plan_and_preprocess --probe-batch-size` measures
instead: it builds the plan's network, and for batch sizes 2, 4, 8, ... runs two Adam steps of the
segmentation task the way training runs them (bf16 autocast, channels_last), recording the peak of
allocated memory. It keeps the largest size whose peak stays within PROBE_MEMORY_SHARE of the memory
that was free when the probe began (out of memory counts as not fitting), refining between the
last fit and the first miss by bisection. The planner still clamps the result to [2, 32].

The rest of the free memory is for what the probe does not see: the resident dataset of the device
data path (device_batches.py takes at most DEVICE_DATA_SHARE), allocator fragmentation, and the
other process of a DDP rank that shares nothing but the machine.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from rbmnet.errors import RbmnetError

PROBE_MEMORY_SHARE = 0.7
PROBE_STEPS = 2  # the first step also allocates Adam's moments; the second is the steady state


@dataclass
class BatchProbe:
    batch_size: int  # largest batch size whose peak stayed within the limit (0: not even the smallest)
    limit_bytes: int
    free_bytes: int
    device: str
    peaks: dict[int, int | None] = field(default_factory=dict)  # batch size -> peak bytes, None = out of memory

    def to_dict(self) -> dict:
        data = asdict(self)
        data["peaks"] = {str(k): v for k, v in sorted(self.peaks.items())}
        return data


def largest_fitting_batch(step_peak: Callable[[int], int | None], limit_bytes: int, smallest: int = 2,
                          largest: int = 32) -> tuple[int, dict[int, int | None]]:
    """Double from `smallest` until a size does not fit (peak > limit or None) or `largest` is reached,
    then bisect between the last fit and the first miss. Returns (largest fitting size or 0, peaks)."""
    peaks: dict[int, int | None] = {}

    def fits(size: int) -> bool:
        if size not in peaks:
            peaks[size] = step_peak(size)
        return peaks[size] is not None and peaks[size] <= limit_bytes

    if not fits(smallest):
        return 0, peaks
    good, bad = smallest, None
    while good < largest:
        trial = min(2 * good, largest)
        if fits(trial):
            good = trial
        else:
            bad = trial
            break
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, peaks


def cuda_step_peak(network_config, input_size: list[int], device) -> Callable[[int], int | None]:
    """batch size -> peak allocated bytes of PROBE_STEPS segmentation training steps (None: out of memory)."""
    import torch

    from rbmnet.networks import build_network
    from rbmnet.model.device import autocast, use_fast_kernels
    from rbmnet.tasks.losses import dice_bce_loss
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS, network_input

    height, width = input_size

    def step_peak(batch_size: int) -> int | None:
        network = optimizer = image = target = None
        try:
            network = build_network(network_config, 1, input_channels=NETWORK_INPUT_CHANNELS)
            network = use_fast_kernels(network.to(device), device)
            optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
            image = torch.rand(batch_size, 1, height, width, device=device)
            target = (torch.rand(batch_size, 1, height, width, device=device) > 0.5).float()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(PROBE_STEPS):
                optimizer.zero_grad(set_to_none=True)
                with autocast(device):
                    loss = dice_bce_loss(network(network_input(image)).float(), target)
                loss.backward()
                optimizer.step()
            torch.cuda.synchronize(device)
            return int(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            del network, optimizer, image, target
            torch.cuda.empty_cache()

    return step_peak


def probe_batch_size(network_config, input_size: list[int], largest: int, device_name: str = "cuda") -> BatchProbe:
    """Measure on the CUDA device `device_name`; an RbmnetError where there is none."""
    import torch

    if not torch.cuda.is_available():
        raise RbmnetError("--probe-batch-size needs a CUDA GPU and this machine has none; the batch size "
                          "comes from the memory model instead (or plan for a GPU with --gpu-memory-gb)")
    device = torch.device(device_name)
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    limit = int(free * PROBE_MEMORY_SHARE)
    size, peaks = largest_fitting_batch(cuda_step_peak(network_config, input_size, device), limit, largest=largest)
    if size == 0:
        raise RbmnetError(f"not even a batch of 2 at {input_size[0]}x{input_size[1]} fits in "
                          f"{PROBE_MEMORY_SHARE:.0%} of the {free / 2**30:.1f} GiB free on {device}; "
                          f"choose a smaller --input-size or narrower network.features_per_stage")
    return BatchProbe(size, limit, int(free), f"{device} ({torch.cuda.get_device_name(device)})", peaks)
