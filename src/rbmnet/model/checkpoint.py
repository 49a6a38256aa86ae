"""Checkpoints that resume exactly and load without executing pickled code (weights_only=True).

A checkpoint holds the network and optimiser states, the number of finished epochs, every RNG
state, the training log, and what prediction needs: the plan, dataset.json and the model's meta.

Every failure is one line naming the file: a write the disk refuses, a file that is damaged or holds
more than tensors and plain values (PyTorch's advice to load it unsafely is never passed on), and a
loadable file that another program wrote (described, with what rbmnet expects instead).
"""
from __future__ import annotations

import random
import re
import shutil
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
                    plan: dict, dataset_json: dict, meta: dict, extra: dict | None = None) -> None:
    """`extra`: more top-level entries (a semi-supervised method's state)."""
    content = {
        "network": unwrap_network(network).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "rng": capture_rng_state(),
        "log": log,
        "plan": plan,
        "dataset_json": dataset_json,
        "meta": meta,
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        try:
            # through a Python file object, a refused write is an OSError with its errno (atomic_path
            # names it); torch's own file writer only says "PytorchStreamWriter failed writing file"
            with open(tmp, "wb") as handle:
                torch.save(content, handle)
        except RuntimeError as exc:
            if not _is_stream_writer_failure(exc):
                raise
            raise RbmnetError(f"{path}: could not write ({_stream_writer_reason(tmp.parent, exc)})") from None


LOW_SPACE_BYTES = 1 << 20  # below this much free space a failed write is taken for a full disk


def _is_stream_writer_failure(exc: RuntimeError) -> bool:
    return "PytorchStreamWriter" in str(exc) or "inline_container" in str(exc)


def _stream_writer_reason(folder: Path, exc: RuntimeError) -> str:
    # measured while the partial temp file still fills the disk (atomic_path removes it afterwards)
    try:
        full = shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        full = False
    if full:
        return "no space left on device"
    detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(exc).strip().splitlines()[0])
    return f"PyTorch's file writer failed: {detail}"


# what tells an rbmnet checkpoint: every reader needs the plan (some read nothing else), no other program writes one
MARK_KEY = "plan"


def load_checkpoint(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    """An rbmnet checkpoint's content (see check_rbmnet_checkpoint), loaded with weights_only=True.

    mmap: tensors are mapped, not read, for callers that only look at the plan or log.
    """
    path = Path(path)
    if not path.is_file():
        raise RbmnetError(f"{path}: checkpoint missing")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # a truncated or foreign file: name it, do not dump a traceback
        raise RbmnetError(f"{path}: cannot load checkpoint: damaged, or not an rbmnet checkpoint "
                          f"({_load_failure(exc)})") from None
    return check_rbmnet_checkpoint(path, content)


def check_rbmnet_checkpoint(path: Path, payload) -> dict:
    """`payload` (what torch.load returned for `path`) when it is an rbmnet checkpoint; else a one-line
    RbmnetError saying what the file holds instead and what rbmnet expects."""
    if isinstance(payload, dict) and isinstance(payload.get(MARK_KEY), dict):
        return payload
    raise RbmnetError(f"{path}: not an rbmnet checkpoint: it holds {describe_foreign_checkpoint(payload)}; "
                      f"rbmnet expects a checkpoint written by rbmnet_train (a dict with 'network', 'plan', "
                      f"'meta', ...)")


def describe_foreign_checkpoint(payload) -> str:
    """What a loaded file holds, in a few words: 'a bare state_dict with 4 tensors (e.g. ...)', ..."""
    if isinstance(payload, torch.Tensor):
        return f"a single tensor of shape {tuple(payload.shape)}"
    if isinstance(payload, dict):
        if not payload:
            return "an empty dict"
        if all(isinstance(value, torch.Tensor) for value in payload.values()):
            return f"a bare state_dict with {len(payload)} tensors (e.g. {str(next(iter(payload)))!r})"
        keys = [repr(str(key)) for key in payload]
        more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
        return f"a dict with keys {', '.join(keys[:8])}{more}"
    if isinstance(payload, (list, tuple)):
        return f"a {type(payload).__name__} of {len(payload)} items"
    return f"a {type(payload).__name__}"


def _load_failure(exc: Exception) -> str:
    """Why torch.load failed, in one line, without PyTorch's advice to load with weights_only=False
    (that runs whatever code the file holds) or to re-save the file differently."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return f"it holds Python objects other than tensors and plain values, e.g. {unsafe.group(1)}"
    first = re.split(r"\.\s|\n", text.strip(), maxsplit=1)[0]
    if not first or re.search(r"weights.only|torch\.(load|save)", first, flags=re.IGNORECASE):
        first = "unreadable content"
    return f"{exc.__class__.__name__}: {first}"


def read_checkpoint_plan(path: Path) -> dict:
    """The plan a checkpoint was trained with, without reading its tensors (memory-mapped)."""
    return load_checkpoint(path, mmap=True)["plan"]


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DistributedDataParallel or torch.compile wrappers."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)
