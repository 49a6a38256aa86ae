"""Read -> infer -> write with the three overlapping, so the device is not idle while files are decoded.

Reader threads decode and preprocess a bounded number of files ahead (in input order); the main
thread batches them through the network; writer threads resize the probabilities back to each
image's size, threshold and encode the PNGs. Threads suffice: PIL's decoders, zlib, scikit-image's
resampling and torch all release the GIL for their heavy parts, and threads share the arrays
without pickling. A file that cannot be read becomes a Failure and the others go on, and so does an
image the network cannot take (a failed batch is retried one image at a time); an output the
system refuses to write (disk full, read-only) stops the run with that one error.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from rbmnet.errors import RbmnetError
from rbmnet.inference.overlay import display_gray
from rbmnet.io.images import IMAGE_SUFFIXES, is_image_file, read_image, write_png
from rbmnet.preprocessing.transforms import preprocess_image, restore_probabilities

PROBABILITIES_FOLDER = "probabilities"
OVERLAYS_FOLDER = "overlays"


@dataclass
class Failure:
    file: str  # the input's file name
    reason: str


@dataclass
class PredictionReport:
    predicted: list[str] = field(default_factory=list)  # input file names with new outputs
    skipped: list[str] = field(default_factory=list)  # already done (resume)
    failures: list[Failure] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)  # a row per predicted case ("file" + inference/quality.py's)
    # seconds spent per stage, summed over threads (stages overlap, so they add up to more than the wall time)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.predicted) + len(self.skipped) + len(self.failures)


@dataclass
class OutputSettings:
    output_dir: Path
    decode: Callable[[np.ndarray], np.ndarray]  # (C,H,W) probabilities at the original size -> uint8 map
    tooth_probability: Callable[[np.ndarray], np.ndarray]  # (C,H,W) -> (H,W) probability of any tooth
    draw_overlay: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (gray, saved map) -> RGB picture
    save_probabilities: bool = False  # uint8 PNG, tooth probability * 255, in <output_dir>/probabilities/
    overlay: bool = False  # RGB PNG in <output_dir>/overlays/
    finish: Callable[[np.ndarray], np.ndarray] | None = None  # decoded map -> saved map (None: saved as decoded)
    describe: Callable[[np.ndarray, np.ndarray], dict] | None = None  # (decoded, saved) -> the case's quality columns

    def paths(self, source: Path) -> dict[str, Path]:
        name = f"{source.stem}.png"
        paths = {"mask": self.output_dir / name}
        if self.save_probabilities:
            paths["probabilities"] = self.output_dir / PROBABILITIES_FOLDER / name
        if self.overlay:
            paths["overlay"] = self.output_dir / OVERLAYS_FOLDER / name
        return paths

    def is_done(self, source: Path) -> bool:
        return all(p.is_file() for p in self.paths(source).values())


@dataclass
class LoadedCase:
    source: Path
    image: np.ndarray  # preprocessed, the plan's input size
    properties: dict  # what maps the prediction back (original shape, clip values)
    raw: np.ndarray | None  # the decoded radiograph, kept only for the overlay


class StageClock:
    """Thread-safe sums of seconds per named stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def measure(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def list_inputs(input_dir: Path) -> list[Path]:
    """Every visible regular file: non-images are reported as failures, not silently ignored."""
    return sorted(p for p in Path(input_dir).iterdir() if p.is_file() and not p.name.startswith("."))


def claim_output_names(files: list[Path]) -> tuple[list[Path], list[Failure]]:
    """One output per stem: 'a.png' and 'a.tif' would both write a.png, so the second one fails."""
    owners: dict[str, Path] = {}
    kept, clashes = [], []
    for path in files:
        if not is_image_file(path):
            kept.append(path)  # fails when read, with the reason
        elif path.stem in owners:
            clashes.append(Failure(path.name, f"output {path.stem}.png already comes from {owners[path.stem].name}"))
        else:
            owners[path.stem] = path
            kept.append(path)
    return kept, clashes


def load_case(path: Path, input_size, normalization, keep_raw: bool, clock: StageClock) -> LoadedCase | Failure:
    try:
        if not is_image_file(path):
            return Failure(path.name, f"not an image file (reads {', '.join(IMAGE_SUFFIXES)})")
        with clock.measure("decode"):
            raw = read_image(path)
        with clock.measure("preprocess"):
            image, properties = preprocess_image(raw, input_size, normalization)
        return LoadedCase(path, image, properties, raw if keep_raw else None)
    except Exception as exc:  # one bad file must not stop the others
        return Failure(path.name, _reason(exc, path))


def write_case(case: LoadedCase, probability: np.ndarray, settings: OutputSettings,
               clock: StageClock, quality: dict | None = None) -> Failure | dict:
    """(C,h,w) probabilities at the input size -> mask (and extras) at the original size.

    Returns the case's quality row: `quality` (what the forward pass measured) and settings.describe's
    columns. A case whose pictures cannot be made or encoded is a Failure; a write the system refuses
    (disk full, read-only, no permission) raises RbmnetError: every later case would fail the same way.
    """
    with clock.measure("write"):
        try:
            pictures, description = _output_pictures(case, probability, settings)
            for path, picture in pictures.items():
                write_png(path, picture)
        except RbmnetError:  # only atomic_path's "could not write" reaches here
            raise
        except Exception as exc:
            return Failure(case.source.name, _reason(exc, case.source))
    return {**(quality or {}), **description}


def _output_pictures(case: LoadedCase, probability: np.ndarray,
                     settings: OutputSettings) -> tuple[dict[Path, np.ndarray], dict]:
    """{output path: uint8 picture}, the mask last: an existing mask means the case is complete (resume);
    and settings.describe's columns."""
    paths = settings.paths(case.source)
    restored = restore_probabilities(probability, case.properties["original_shape"])
    decoded = settings.decode(restored)
    mask = decoded if settings.finish is None else settings.finish(decoded)
    description = {} if settings.describe is None else settings.describe(decoded, mask)
    pictures = {}
    if "probabilities" in paths:
        tooth = settings.tooth_probability(restored)
        pictures[paths["probabilities"]] = np.round(np.clip(tooth, 0, 1) * 255).astype(np.uint8)
    if "overlay" in paths:
        gray = display_gray(case.raw, case.properties["clip_low"], case.properties["clip_high"])
        pictures[paths["overlay"]] = settings.draw_overlay(gray, mask)
    pictures[paths["mask"]] = mask
    return pictures, description


def run_pipeline(files: list[Path], predict: Callable[[np.ndarray], tuple[np.ndarray, list[dict]]], input_size, normalization,
                 settings: OutputSettings, batch_size: int = 4, num_workers: int = 2,
                 progress: bool = True) -> PredictionReport:
    """Predict every file; `predict` maps (B,H,W) preprocessed images to ((B,C,H,W) probabilities, a dict
    per image of the quality columns measured on the way)."""
    report, clock = PredictionReport(), StageClock()
    lookahead = 2 * batch_size + num_workers  # enough to fill the next batch while this one runs
    bar = tqdm(total=len(files), unit="image", disable=not progress, dynamic_ncols=True)

    def record(outcome: Failure | dict | None, case_name: str) -> None:
        if isinstance(outcome, Failure):
            report.failures.append(outcome)
            tqdm.write(f"failed: {outcome.file}: {outcome.reason}")
        else:
            report.predicted.append(case_name)
            report.quality.append({"file": case_name, **(outcome or {})})
        bar.update(1)

    # the bar closes on the way out, also when a refused write stops the run
    with bar, _executor(num_workers) as readers, _executor(num_workers) as writers:
        pending_writes: deque[tuple[Future, str]] = deque()

        def infer_and_hand_over(batch: list[LoadedCase]) -> None:
            try:
                with clock.measure("forward"):
                    batch_probabilities, batch_quality = predict(np.stack([case.image for case in batch]))
            except Exception as exc:  # whatever the backend: one image it cannot take costs that image only
                if len(batch) > 1:
                    for case in batch:
                        infer_and_hand_over([case])
                else:
                    record(Failure(batch[0].source.name, _reason(exc, batch[0].source)), batch[0].source.name)
                return
            for case, probability, quality in zip(batch, batch_probabilities, batch_quality):
                pending_writes.append((writers.submit(write_case, case, probability, settings, clock, quality),
                                       case.source.name))
            while len(pending_writes) > lookahead:  # bound the memory held by finished-but-unwritten cases
                future, name = pending_writes.popleft()
                record(future.result(), name)

        load = functools.partial(load_case, input_size=input_size, normalization=normalization,
                                 keep_raw=settings.overlay, clock=clock)
        batch: list[LoadedCase] = []
        for loaded in _prefetched(readers, load, files, lookahead):
            if isinstance(loaded, Failure):
                record(loaded, loaded.file)
                continue
            batch.append(loaded)
            if len(batch) == batch_size:
                infer_and_hand_over(batch)
                batch = []
        if batch:
            infer_and_hand_over(batch)
        while pending_writes:
            future, name = pending_writes.popleft()
            record(future.result(), name)
    report.stage_seconds = dict(clock.seconds)
    return report


def _prefetched(executor, function, items: Iterable, depth: int) -> Iterator:
    """function(item) for each item, in order, with at most `depth` submitted ahead of the consumer."""
    items = iter(items)
    pending: deque[Future] = deque(executor.submit(function, item) for _, item in zip(range(depth), items))
    while pending:
        result = pending.popleft().result()
        for item in items:  # top up by one
            pending.append(executor.submit(function, item))
            break
        yield result


class _InlineExecutor:
    """num_workers=0: run everything in the calling thread (for debugging and profiling)."""

    def submit(self, function, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever calls result()
            future.set_exception(exc)
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def _executor(num_workers: int):
    if num_workers <= 0:
        return _InlineExecutor()
    return ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="rbmnet-io")


def _reason(exc: Exception, path: Path) -> str:
    """The message without the file name the failure row already shows."""
    text = str(exc) if isinstance(exc, RbmnetError) else f"{exc.__class__.__name__}: {exc}"
    for prefix in (f"{path}: ", f"{path.name}: "):
        text = text.removeprefix(prefix)
    return text
