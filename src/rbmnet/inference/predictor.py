"""Load the folds of a segmentation model, average their probabilities, predict a folder (`predict_folder`).

Probabilities are averaged BEFORE thresholding (as nnU-Net does): a pixel two folds call 0.45 and
0.7 is tooth (0.575), which a vote of the two masks could not decide.
"""
from __future__ import annotations

import ctypes
import csv
import functools
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rbmnet.errors import RbmnetError
from rbmnet.inference.model_selection import select_folds
from rbmnet.inference.overlay import numbered_overlay, overlay
from rbmnet.inference.pipeline import (Failure, OutputSettings, PredictionReport, claim_output_names, list_inputs,
                                       run_pipeline)
from rbmnet.io.atomic import check_writable_folder, write_text
from rbmnet.io.images import IMAGE_SUFFIXES, is_image_file
from rbmnet.model.device import resolve_device
from rbmnet.model.folder import load_postprocessing
from rbmnet.model.forward import probabilities
from rbmnet.model.loading import load_fold_model
from rbmnet.planning.plan import Plan
from rbmnet.tasks.base import SegmentationTask
from rbmnet.tasks.binary import BinaryTask

FAILURES_CSV = "failures.csv"


@dataclass
class Ensemble:
    networks: list[torch.nn.Module]
    plan: Plan  # preprocessing (input size, normalization) and the threshold come from here
    folds: list[str]
    device: torch.device
    model_id: str
    dataset_json: dict
    task: SegmentationTask

    def predict(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """(B,H,W) preprocessed float images -> (B,C,H,W) float32 probabilities, the mean over folds."""
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None].to(self.device)
        total = None
        # inference_mode: no autograd bookkeeping at all (cheaper than no_grad alone)
        with torch.inference_mode():
            for network in self.networks:
                fold_probabilities = probabilities(network, batch, self.task, tta=tta)
                total = fold_probabilities if total is None else total + fold_probabilities
            return (total / len(self.networks)).cpu().numpy()


def load_ensemble(model_folder: Path, folds: list[str], device: torch.device) -> Ensemble:
    """Each fold's network from its final checkpoint (model/loading.py); all folds must share preprocessing."""
    loaded = [load_fold_model(model_folder, fold) for fold in folds]
    first = loaded[0]
    for fold, model in zip(folds[1:], loaded[1:]):
        if (model.plan.input_size, model.plan.normalization) != (first.plan.input_size, first.plan.normalization):
            raise RbmnetError(f"{model_folder}: folds {folds[0]} and {fold} were trained with different input "
                              f"size or normalization; predict with them separately (-f)")
    # channels_last: oneDNN's convolutions run ~25 % faster on CPU without layout reorders (measured,
    # benchmarks/predict_speed.py); on CUDA it is the layout tensor cores prefer
    networks = [model.network.to(device, memory_format=torch.channels_last) for model in loaded]
    return Ensemble(networks=networks, plan=first.plan, folds=list(folds), device=device,
                    model_id=first.meta.get("model_id", Path(model_folder).name),
                    dataset_json=first.dataset_json, task=first.task)


OVERLAYS = {"binary": overlay, "teeth": numbered_overlay}  # by the saved map's kind
BINARY = BinaryTask()  # --binary: any task's teeth written as the binary task's masks


def output_settings(output_dir: Path, task: SegmentationTask, binary: bool, save_probabilities: bool,
                    overlay: bool, postprocess=None) -> OutputSettings:
    """How probabilities become files: the task's map (post-processed when the model decided so), or
    with `binary` a 0/255 tooth mask from any task."""
    def decode(restored: np.ndarray) -> np.ndarray:
        label_map = task.decode(restored)
        if postprocess is not None:
            label_map = postprocess(label_map)
        return BINARY.index_to_labels(task.binary_mask(label_map).astype(np.uint8)) if binary else label_map

    kind = "binary" if binary else task.name
    return OutputSettings(output_dir, decode, task.tooth_probability, OVERLAYS[kind], save_probabilities, overlay)


def predict_folder(input_dir, output_dir, model_folder, folds: list[str] | None = None, tta: bool = False,
                   device: str = "auto", batch_size: int = 4, num_workers: int = 2, save_probabilities: bool = False,
                   overlay: bool = False, resume: bool = False, progress: bool = True,
                   binary: bool = False) -> PredictionReport:
    """Predict a map for every image in `input_dir` (PNG, original size, name stem + '.png'): a 0/255
    mask for binary models (and with `binary`), tooth numbers for teeth models.

    Unreadable and non-image files become failures (also written to <output_dir>/failures.csv) and do
    not stop the others; bad arguments (folders, model, folds) and an output folder that cannot be
    written raise RbmnetError before any work, and a write refused later (disk full) stops the run.
    On CPU it calls `reuse_freed_memory` (a process-wide malloc setting that halves the time; see there).
    """
    input_dir, output_dir = Path(input_dir).absolute(), Path(output_dir).absolute()
    files = check_folders(input_dir, output_dir)
    if batch_size < 1:
        raise RbmnetError(f"batch size must be at least 1, got {batch_size}")
    folds = select_folds(Path(model_folder), folds)
    ensemble = load_ensemble(Path(model_folder), folds, resolve_device(device))
    if ensemble.device.type == "cpu":
        reuse_freed_memory()
    settings = output_settings(output_dir, ensemble.task, binary, save_probabilities, overlay,
                               load_postprocessing(Path(model_folder)))

    files, clashes = claim_output_names(files)
    done = {p for p in files if resume and is_image_file(p) and settings.is_done(p)}
    todo = [p for p in files if p not in done]
    report = run_pipeline(todo, functools.partial(ensemble.predict, tta=tta), ensemble.plan.input_size,
                          ensemble.plan.normalization, settings, batch_size, num_workers, progress)
    report.skipped = sorted(p.name for p in done)
    report.failures = clashes + report.failures
    write_failures(output_dir, report.failures)
    return report


def reuse_freed_memory() -> bool:
    """Let glibc keep freed large blocks for reuse instead of unmapping them (process-wide, Linux only).

    Every forward pass allocates the same large activations (tens of MB each); by default glibc
    returns them to the OS at once and the next pass faults them back in page by page, which cost
    ~40 % of the CPU time of a 512x512 prediction (measured). Memory then stays at its peak, which
    the next batch needs anyway. Returns whether the setting took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt returns 1 on success; M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3 (malloc.h).
        # Old glibc caps the mmap threshold at 32 MiB (64-bit): then blocks above it stay mmapped.
        mmap_ok = libc.mallopt(-3, 1 << 30) or libc.mallopt(-3, 32 << 20)
        return bool(mmap_ok) and bool(libc.mallopt(-1, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def check_folders(input_dir: Path, output_dir: Path) -> list[Path]:
    """The input files; refuses a missing or image-less input, an output inside the input and an output
    folder that cannot be written (created here, before the model is loaded)."""
    if not input_dir.is_dir():
        raise RbmnetError(f"{input_dir}: input folder does not exist")
    if output_dir.exists() and not output_dir.is_dir():
        raise RbmnetError(f"{output_dir}: output path exists and is not a folder")
    if output_dir.resolve().is_relative_to(input_dir.resolve()):
        raise RbmnetError(f"{output_dir}: output folder lies inside the input folder {input_dir}; choose another")
    files = list_inputs(input_dir)
    if not any(is_image_file(p) for p in files):
        raise RbmnetError(f"{input_dir}: no images to predict (reads {', '.join(IMAGE_SUFFIXES)})")
    check_writable_folder(output_dir)
    return files


def write_failures(output_dir: Path, failures: list[Failure]) -> None:
    """failures.csv (file, reason) when something failed; a stale one from an earlier run is removed."""
    path = output_dir / FAILURES_CSV
    if not failures:
        path.unlink(missing_ok=True)
        return
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "reason"])
    writer.writerows([f.file, f.reason] for f in failures)
    write_text(path, text.getvalue())
