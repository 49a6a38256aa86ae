"""Device choice and the precision used on it: bf16 autocast on CUDA, full precision on CPU."""
from __future__ import annotations

import contextlib

import torch

from rbmnet.errors import RbmnetError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RbmnetError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RbmnetError(f"device '{name}' asked for, but CUDA is not available on this machine")
    return device


def autocast(device: torch.device):
    """Mixed precision where it pays (CUDA: bf16 when supported, else fp16); a no-op on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device) -> bool:
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


def use_fast_kernels(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """CUDA only: channels_last weights (tensor cores read NHWC without transposes; the first conv
    turns the NCHW input into NHWC once) and cuDNN autotuning (every batch has the same shape)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        network = network.to(memory_format=torch.channels_last)
    return network


def compile_if_asked(network: torch.nn.Module, device: torch.device, requested: bool) -> torch.nn.Module:
    """torch.compile on CUDA when asked. Ignored on a CPU, where training is for tests and small runs
    and the compilation time would outweigh what it saves."""
    if not requested:
        return network
    if device.type != "cuda":
        from tqdm import tqdm

        tqdm.write("--compile is ignored on CPU (it only pays on a GPU)")
        return network
    return torch.compile(network)
