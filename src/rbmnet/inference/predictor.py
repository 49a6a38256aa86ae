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
from rbmnet.inference.backends import choose_backend, load_folds
from rbmnet.inference.model_selection import select_folds
from rbmnet.inference.overlay import numbered_overlay, overlay
from rbmnet.inference.quality import (AGREEMENT_PIXELS, DEFAULT_FLAG_BELOW, describe_prediction, member_agreement,
                                      write_quality)
from rbmnet.inference.pipeline import (Failure, OutputSettings, PredictionReport, claim_output_names, list_inputs,
                                       run_pipeline)
from rbmnet.io.atomic import check_writable_folder, write_text
from rbmnet.io.images import IMAGE_SUFFIXES, is_image_file
from rbmnet.model.folder import load_postprocessing
from rbmnet.model.forward import FoldPredictor, average_passes, predictor_passes
from rbmnet.planning.plan import Plan
from rbmnet.tasks.base import SegmentationTask
from rbmnet.tasks.binary import BinaryTask

FAILURES_CSV = "failures.csv"


@dataclass
class Ensemble:
    predictors: list[FoldPredictor]  # one per fold, made by the backend (inference/backends.py)
    plan: Plan  # preprocessing (input size, normalization) and the threshold come from here
    folds: list[str]
    device: torch.device
    model_id: str
    dataset_json: dict
    task: SegmentationTask
    backend: str = "torch"

    def predict(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """(B,H,W) preprocessed float images -> (B,C,H,W) float32 probabilities, the mean over folds."""
        return self._predict(images, tta, measure_agreement=False)[0]

    def predict_with_agreement(self, images: np.ndarray, tta: bool = False) -> tuple[np.ndarray, list[dict]]:
        """`predict`, and per image how much the folds (and TTA passes) agree (inference/quality.py)."""
        return self._predict(images, tta, measure_agreement=True)

    def _predict(self, images: np.ndarray, tta: bool, measure_agreement: bool) -> tuple[np.ndarray, list[dict]]:
        batch = np.ascontiguousarray(images, dtype=np.float32)[:, None]
        total, fold_maps, pass_maps = None, [], []
        # inference_mode: no autograd bookkeeping at all (cheaper than no_grad alone)
        with torch.inference_mode():
            for predict in self.predictors:
                passes = predictor_passes(predict, batch, self.task.channel_flip_order, tta)
                fold_probabilities = average_passes(passes)
                total = fold_probabilities if total is None else total + fold_probabilities
                if measure_agreement:  # uint8 index maps only: the members' probabilities are not kept
                    pass_maps.append([self.task.to_index(p[AGREEMENT_PIXELS]) for p in passes])
                    fold_maps.append(pass_maps[-1][0] if len(passes) == 1
                                     else self.task.to_index(fold_probabilities[AGREEMENT_PIXELS]))
            mean = (total / len(self.predictors)).cpu().numpy()
        agreement = member_agreement(fold_maps, pass_maps, self.task.name == "teeth") if measure_agreement else []
        return mean, agreement


def load_ensemble(model_folder: Path, folds: list[str], device: torch.device, backend: str = "torch") -> Ensemble:
    """Each fold as `backend` runs it (inference/backends.py); all folds must share preprocessing."""
    loaded = load_folds(backend, Path(model_folder), folds, device)
    first = loaded[0]
    for fold, model in zip(folds[1:], loaded[1:]):
        if (model.plan.input_size, model.plan.normalization) != (first.plan.input_size, first.plan.normalization):
            raise RbmnetError(f"{model_folder}: folds {folds[0]} and {fold} were trained with different input "
                              f"size or normalization; predict with them separately (-f)")
    return Ensemble(predictors=[model.predict for model in loaded], plan=first.plan, folds=list(folds), device=device,
                    model_id=first.model_id, dataset_json=first.dataset_json, task=first.task, backend=backend)


OVERLAYS = {"binary": overlay, "teeth": numbered_overlay}  # by the saved map's kind
BINARY = BinaryTask()  # --binary: any task's teeth written as the binary task's masks


def output_settings(output_dir: Path, task: SegmentationTask, binary: bool, save_probabilities: bool,
                    overlay: bool, postprocess=None) -> OutputSettings:
    """How probabilities become files: the task's map (post-processed when the model decided so), or
    with `binary` a 0/255 tooth mask from any task; quality.csv's columns from both maps."""
    def finish(label_map: np.ndarray) -> np.ndarray:
        if postprocess is not None:
            label_map = postprocess(label_map)
        return BINARY.index_to_labels(task.binary_mask(label_map).astype(np.uint8)) if binary else label_map

    kind = "binary" if binary else task.name
    return OutputSettings(output_dir, task.decode, task.tooth_probability, OVERLAYS[kind], save_probabilities, overlay,
                          finish=finish, describe=functools.partial(describe_prediction, numbered=kind == "teeth"))


def predict_folder(input_dir, output_dir, model_folder, folds: list[str] | None = None, tta: bool = False,
                   device: str = "auto", batch_size: int = 4, num_workers: int = 2, save_probabilities: bool = False,
                   overlay: bool = False, resume: bool = False, progress: bool = True,
                   binary: bool = False, flag_below: float = DEFAULT_FLAG_BELOW,
                   backend: str = "auto") -> PredictionReport:
    """Predict a map for every image in `input_dir` (PNG, original size, name stem + '.png'): a 0/255
    mask for binary models (and with `binary`), tooth numbers for teeth models; and quality.csv, which
    flags images whose agreement is below `flag_below` (0: no flags; inference/quality.py).

    Unreadable and non-image files become failures (also written to <output_dir>/failures.csv) and do
    not stop the others; bad arguments (folders, model, folds) and an output folder that cannot be
    written raise RbmnetError before any work, and a write refused later (disk full) stops the run.
    On CPU it calls `reuse_freed_memory` (a process-wide malloc setting that halves the time; see there).
    `backend` (torch, onnx, auto) says what computes the probabilities (inference/backends.py).
    """
    input_dir, output_dir = Path(input_dir).absolute(), Path(output_dir).absolute()
    files = check_folders(input_dir, output_dir)
    if batch_size < 1:
        raise RbmnetError(f"batch size must be at least 1, got {batch_size}")
    if not 0 <= flag_below <= 1:
        raise RbmnetError(f"--flag-below must lie in [0, 1] (0: no flags), got {flag_below}")
    folds = select_folds(Path(model_folder), folds)
    backend, resolved_device = choose_backend(backend, Path(model_folder), folds, device)
    ensemble = load_ensemble(Path(model_folder), folds, resolved_device, backend)
    if ensemble.device.type == "cpu":
        reuse_freed_memory()
    settings = output_settings(output_dir, ensemble.task, binary, save_probabilities, overlay,
                               load_postprocessing(Path(model_folder)))

    files, clashes = claim_output_names(files)
    done = {p for p in files if resume and is_image_file(p) and settings.is_done(p)}
    todo = [p for p in files if p not in done]
    report = run_pipeline(todo, functools.partial(ensemble.predict_with_agreement, tta=tta),
                          ensemble.plan.input_size, ensemble.plan.normalization, settings, batch_size, num_workers,
                          progress)
    report.skipped = sorted(p.name for p in done)
    report.quality = write_quality(output_dir, report.quality, flag_below, kept_files=set(report.skipped))
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
