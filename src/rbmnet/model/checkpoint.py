"""Checkpoints that resume exactly and load without executing pickled code (weights_only=True).

A checkpoint holds the network and optimiser states, the number of finished epochs, every RNG
state, the training log, and what prediction needs: the plan, dataset.json and the model's meta.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import atomic_path
from rbmnet.layout import CHECKPOINT_FINAL as FINAL  # the short names many callers import from here
from rbmnet.layout import CHECKPOINT_LATEST as LATEST


def capture_rng_state() -> dict:
    # numpy and python states are converted to plain lists: weights_only loading refuses ndarrays
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, network: torch.nn.Module, optimizer, epoch: int, log: list[dict],
                    plan: dict, dataset_json: dict, meta: dict) -> None:
    content = {
        "network": unwrap_network(network).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "rng": capture_rng_state(),
        "log": log,
        "plan": plan,
        "dataset_json": dataset_json,
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def load_checkpoint(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    """mmap: tensors are mapped, not read, for callers that only look at the plan or log."""
    path = Path(path)
    if not path.is_file():
        raise RbmnetError(f"{path}: checkpoint missing")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # a truncated or foreign file: name it, do not dump a traceback
        raise RbmnetError(f"{path}: cannot load checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None


def read_checkpoint_plan(path: Path) -> dict:
    """The plan a checkpoint was trained with, without reading its tensors (memory-mapped)."""
    content = load_checkpoint(path, mmap=True)
    if not isinstance(content, dict) or not isinstance(content.get("plan"), dict):
        raise RbmnetError(f"{path}: holds no plan (not an rbmnet checkpoint)")
    return content["plan"]


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DistributedDataParallel or torch.compile wrappers."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)
