"""Data-parallel training over several processes (one per GPU), started by torchrun.

    torchrun --standalone --nproc_per_node N $(which rbmnet_train) pretext -d Teeth
    python -m torch.distributed.run --standalone --nproc_per_node N -m rbmnet.cli.train seg 0 -d Teeth

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in every process; `setup_distributed` reads them and
joins the process group: NCCL on CUDA (each rank on the GPU of its LOCAL_RANK), gloo on CPU, so the
same code runs (slowly) on a laptop and in the tests. Without those variables everything here is a
no-op for a single process.

How the work is shared (see loop.py): every rank holds the plan's batch size (the planner sized it for
one device), so the global batch is world_size x batch size; an epoch keeps its meaning, one pass
over the data, by running ceil(iterations / world_size) steps. Rank r of world W makes batch
(epoch, step * W + r): the batches of a W-rank epoch are those of a single-process epoch, dealt out.
"""
from __future__ import annotations

import atexit
import os
import warnings
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from rbmnet.errors import RbmnetError
from rbmnet.model.device import compile_if_asked, resolve_device, use_fast_kernels

Result = TypeVar("Result")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes logs, checkpoints and reports."""
        return self.rank == 0

    def describe(self) -> str:
        """'' for one process, ' x 4 ranks (nccl)' under torchrun: for the stage's start message."""
        return f" x {self.world_size} ranks ({self.backend})" if self.enabled else ""


def environment_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) when not launched by it."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise RbmnetError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None


def setup_distributed(device_name: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun; return the context and this rank's device.

    Called once per stage; a second call in the same process (the demo trains twice) reuses the group.
    """
    rank, world_size, local_rank = environment_ranks()
    device = resolve_device(device_name)
    if world_size <= 1:
        return Distributed(), device
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RbmnetError(f"rank {rank} wants GPU {local_rank}, but this machine has "
                              f"{torch.cuda.device_count()}; start at most that many processes per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}  # binds NCCL to this rank's GPU
        dist.init_process_group(backend, **kwargs)
        atexit.register(shutdown_distributed)  # torch warns about a process group left to the interpreter
    return Distributed(rank, world_size, local_rank, backend), device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_data_parallel(network: torch.nn.Module, context: Distributed, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `network` when there are several ranks, else `network` itself.

    DDP broadcasts rank 0's weights at construction and averages gradients after each backward.
    BatchNorm stays per rank (nnU-Net does the same): statistics of a batch of 8 are good enough,
    and synchronising them every layer would cost a collective per BatchNorm.
    """
    if not context.enabled:
        return network
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def training_network(network: torch.nn.Module, context: Distributed, device: torch.device,
                     compile_network: bool = False) -> torch.nn.Module:
    """What the loop trains: fast kernels, then DDP, then torch.compile (compiling the DDP module
    lets TorchDynamo split graphs at DDP's gradient buckets). `network` stays the bare module that
    checkpoints, validation and prediction use; the wrappers share its parameters."""
    network = use_fast_kernels(network, device)
    return compile_if_asked(wrap_data_parallel(network, context, device), device, compile_network)


def on_writer(context: Distributed, function: Callable[[], Result]) -> Result:
    """Run `function` (folder set-up: checks, deletions, writes) on rank 0 only and hand its result to
    every rank; an RbmnetError there is raised on every rank, so none waits for a rank that gave up."""
    if not context.enabled:
        return function()
    outcome: list = [None]
    if context.is_writer:
        try:
            outcome = [("ok", function())]
        except RbmnetError as exc:
            outcome = [("error", str(exc))]
    dist.broadcast_object_list(outcome, src=0)
    status, value = outcome[0]
    if status == "error":
        raise RbmnetError(value)
    return value


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks that autograd goes through: the backward pass sums the gradients over ranks too.

    Used for the Dice sums, so that the Dice of the loss is the Dice of the GLOBAL batch. With DDP
    averaging the parameter gradients over ranks, the gradient is that of the global-batch loss
    (tests/test_distributed.py checks it against one process holding the whole batch).
    Identity for a single process.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    import torch.distributed.nn.functional as distributed_functional

    with warnings.catch_warnings():
        # torch >= 2.12 calls this deprecated in favour of _functional_collectives, whose autograd
        # support is newer than the torch 2.11 this must also run on; the old one works in both.
        warnings.simplefilter("ignore", FutureWarning)
        return distributed_functional.all_reduce(tensor, op=dist.ReduceOp.SUM)


def mean_over_ranks(value: float | torch.Tensor, device: torch.device) -> float:
    """The mean of a number over ranks (the logged training loss); the number itself for one process."""
    tensor = torch.as_tensor(value).detach().to(device=device, dtype=torch.float64).reshape(1).clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return float(tensor.item())


def broadcast_buffers(network: torch.nn.Module) -> None:
    """Give every rank rank 0's BatchNorm statistics, so all ranks hold the same model.

    DDP keeps parameters identical and sends rank 0's buffers before each training forward, but the
    last step's update of the running statistics comes from each rank's own batch; rank 0's are the
    ones its checkpoint holds.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for buffer in network.buffers():
        dist.broadcast(buffer.data, src=0)

