"""The skeleton both training stages share, and its epoch loop.

    run_stage: checks (rank 0: lock, folder state, continued run's plan) -> network (+ initialisation)
               -> batch source -> first writes (--overwrite clears only here) -> resume or start
               -> train (SIGTERM / Ctrl-C stop between writes) -> final report (rank 0)
    train:     batches in, loss down, a log line, a checkpoint, a plot, per epoch

A stage (pretext.py, segmentation.py) describes only what differs in a `StageSpec`: its cases, the
loss of one batch, per-epoch validation, the records written beside its checkpoints and its final
report, as plain values and callables; so this file is the whole recipe of a stage and an epoch.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from rbmnet.io.atomic import write_json
from rbmnet.model.checkpoint import (FINAL, LATEST, load_checkpoint, restore_rng_state, save_checkpoint,
                                     unwrap_network)
from rbmnet.model.device import autocast, needs_grad_scaler
from rbmnet.layout import RUN_LOCK
from rbmnet.model.folder import check_run_folder, clear_run_folder, prepare_model_folder
from rbmnet.model.network import build_model_network
from rbmnet.networks.optimization import build_optimizer, set_learning_rate
from rbmnet.tasks.base import SegmentationTask
from rbmnet.paths import results_dataset_dir
from rbmnet.training.background import BatchStream
from rbmnet.training.continuation import check_continuation, check_model_plan
from rbmnet.training.device_batches import batch_source
from rbmnet.training.distributed import (all_reduce_sum, broadcast_buffers, mean_over_ranks, on_writer,
                                         setup_distributed, training_network)
from rbmnet.training.progress import TrainingLog
from rbmnet.training.run_lock import RunLock
from rbmnet.training.stage_clock import StageClock, stage_prediction
from rbmnet.training.stopping import StopRequested, interrupted, stop_signals, writes_held

COMPANION_KEY = "semi_supervised"  # the checkpoint key of the semi-supervised method's state


@dataclass
class TrainingRun:
    folder: Path
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    epochs: int
    iterations_per_epoch: int
    make_batch: Callable  # (epoch, iteration) -> dict of numpy arrays; picklable for worker processes
    batch_loss: Callable[[torch.nn.Module, dict], torch.Tensor]  # network, batch on device -> scalar loss
    validate: Callable[[torch.nn.Module], dict]  # per-epoch validation numbers for the log
    checkpoint_content: dict  # plan, dataset_json, meta: what prediction needs from a checkpoint
    learning_rate: float = 1e-4
    num_workers: int = 2
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    curves: list[str] = field(default_factory=lambda: ["train_loss", "val_loss"])
    title: str = ""
    is_writer: bool = True  # only one process writes logs and checkpoints (rank 0 under DDP)
    rank: int = 0  # under DDP (distributed.py): this process's rank and the number of ranks
    world_size: int = 1
    clock: StageClock | None = None  # the plan's predicted duration, checked after every epoch
    # a semi-supervised method (semisupervised/): follows the student after every step, saved in checkpoints
    companion: object | None = None


@dataclass
class TrainingOptions:
    """How to run a stage (command-line flags that do not change the model)."""
    device_name: str = "auto"
    num_workers: int = 2
    resume_run: bool = False
    overwrite: bool = False
    compile_network: bool = False
    data_path: str = "auto"


@dataclass
class StageSpec:
    kind: str  # batch kind: "pretext" or "seg"
    model_id: str
    run_folder: str  # inside the model folder: "" (pretext) or the fold folder
    config: object  # the plan's stage section: epochs, iterations, batch size, optimiser, learning rate
    output_channels: int
    cases: list[str]  # training cases
    records: dict[str, dict]  # JSON files written into the run folder when it is (re)started
    meta: dict  # what a checkpoint says about its model
    batch_loss: Callable  # (network, batch, sums_reducer) -> scalar loss
    validate: Callable  # (network, device) -> per-epoch numbers for the log
    curves: list[str]
    headline: str  # what is trained, for the start line
    final_report: Callable  # (network, model folder, run folder, device) -> None, rank 0 only
    initialise: Callable = lambda network: None  # (network) -> line to print, or None; not on resume
    # parameter names that start from other weights and train at transferred_lr_factor x the rate; a
    # function of the network alone, so a resumed run rebuilds the same optimizer groups
    transferred_parameters: Callable = lambda network: set()
    transferred_lr_factor: float = 1.0
    seg_task: SegmentationTask | None = None
    label_noise: float = 0.0
    notes: list[str] = field(default_factory=list)
    # semi-supervision: (initialised network) -> the method (semisupervised/), handed to batch_loss as
    # `semi`; and the cases whose images alone join the batches as "unlabeled_image"
    semi_supervision: Callable | None = None
    unlabeled_cases: list[str] = field(default_factory=list)


def run_stage(inputs, spec: StageSpec, options: TrainingOptions) -> Path:
    """Train one stage; returns the model folder.

    Order matters for the user's files: first everything that can be checked (the run lock, the
    folder's state, a continued run's plan, the network, its initialisation, the batch source), and
    only then, just before training writes its first file, whatever --overwrite discards."""
    plan = inputs.plan
    clock = StageClock(stage_prediction(plan, spec.kind, spec.config))
    context, device = setup_distributed(options.device_name)  # one process, or this rank's under torchrun
    model_folder = results_dataset_dir(inputs.dataset_name) / spec.model_id
    folder = model_folder / spec.run_folder
    with contextlib.ExitStack() as held:
        def check_folders() -> None:  # rank 0 only
            held.enter_context(RunLock(folder))
            check_run_folder(folder, options.resume_run, options.overwrite)
            check_model_plan(model_folder, folder, plan.to_dict(), spec.kind)
            if options.resume_run:
                check_continuation(folder, plan.to_dict(), spec.kind)

        on_writer(context, check_folders)
        torch.manual_seed(plan.seed)
        network = build_model_network(plan.network, spec.output_channels).to(device)
        said = spec.initialise(network) if not options.resume_run else "resuming from checkpoint_latest"
        source = batch_source(inputs.data, spec.cases, plan, spec.kind, plan.seed, device, options.data_path,
                              options.num_workers, spec.label_noise, seg_task=spec.seg_task,
                              unlabeled_names=tuple(spec.unlabeled_cases))
        config = spec.config
        companion = spec.semi_supervision(network) if spec.semi_supervision is not None else None
        batch_loss = functools.partial(spec.batch_loss, sums_reducer=all_reduce_sum if context.enabled else None)
        if companion is not None:
            batch_loss = functools.partial(batch_loss, semi=companion)
        run = TrainingRun(
            folder=folder, network=training_network(network, context, device, options.compile_network),
            optimizer=build_optimizer(network, config, spec.transferred_parameters(network),
                                      spec.transferred_lr_factor), device=device,
            epochs=config.epochs, iterations_per_epoch=config.iterations_per_epoch, make_batch=source.make_batch,
            batch_loss=batch_loss,
            validate=functools.partial(spec.validate, device=device),
            checkpoint_content={"plan": plan.to_dict(), "dataset_json": inputs.dataset_json, "meta": spec.meta},
            learning_rate=config.learning_rate, num_workers=source.num_workers, lr_schedule=config.lr_schedule,
            warmup_epochs=config.warmup_epochs,
            curves=spec.curves, title=f"{spec.model_id} {spec.run_folder}".strip(),
            is_writer=context.is_writer, rank=context.rank, world_size=context.world_size, clock=clock,
            companion=companion)

        def start_folders() -> None:  # rank 0 only: the first writes of this run
            if not options.resume_run:
                clear_run_folder(folder, keep=(RUN_LOCK,))
            prepare_model_folder(inputs.dataset_name, spec.model_id, plan.to_dict(), inputs.dataset_json)
            for name, content in spec.records.items():
                write_json(folder / name, content)

        on_writer(context, start_folders)
        if context.is_writer:
            if said:
                tqdm.write(said)
            for note in spec.notes:
                tqdm.write(f"note: {note}")
            tqdm.write(f"{spec.headline}, {run.epochs} epochs x {run.iterations_per_epoch} iterations, "
                       f"batch {config.batch_size}, device {device}{context.describe()}, "
                       f"batches {source.choice.describe(source.num_workers)}")
        try:
            with stop_signals():
                log = resume(run) if options.resume_run else None
                log = train(run, log)
        except StopRequested as stop:
            raise interrupted(stop, folder, finished_epochs(folder), run.epochs) from None
        if context.is_writer:
            clock.report_starts()
            spec.final_report(network, model_folder, folder, device)
            verdict = clock.finish(folder, log.entries)
            if verdict:
                tqdm.write(f"{spec.kind} stage: {verdict}")
    return model_folder


def finished_epochs(folder: Path) -> int:
    """Epochs saved in the run's latest checkpoint (0 when none is)."""
    path = folder / LATEST
    return int(load_checkpoint(path, mmap=True)["epoch"]) if path.is_file() else 0


def resume(run: TrainingRun) -> TrainingLog:
    """Load checkpoint_latest into the run; returns the log as it was at that checkpoint."""
    checkpoint = load_checkpoint(run.folder / LATEST, map_location=run.device)
    bare = unwrap_network(run.network)  # under DDP and/or torch.compile
    bare.load_state_dict(checkpoint["network"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    restore_rng_state(checkpoint["rng"])
    if run.companion is not None:
        run.companion.load_state_dict(checkpoint[COMPANION_KEY])
    return TrainingLog(run.folder, checkpoint["log"])


def train(run: TrainingRun, log: TrainingLog | None = None) -> TrainingLog:
    log = log or TrainingLog(run.folder)
    start_epoch = len(log.entries)
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(run.device) else None
    # Under DDP the ranks share an epoch's iterations (one pass over the data stays one epoch) and
    # rank r makes batch step * world_size + r: a single process's batches, dealt out to the ranks.
    steps = math.ceil(run.iterations_per_epoch / run.world_size)
    indices = [(epoch, step * run.world_size + run.rank)
               for epoch in range(start_epoch, run.epochs) for step in range(steps)]
    if run.clock is not None:
        run.clock.training_starts()
    # One bar for the whole stage: its remaining time is the stage's (smoothing 0 averages over the
    # run, so the per-epoch validation pauses are part of the rate), not just the current epoch's.
    bar = tqdm(total=run.epochs * steps, initial=start_epoch * steps, leave=False, smoothing=0,
               disable=None if run.is_writer else True, dynamic_ncols=True)
    with BatchStream(run.make_batch, indices, num_workers=run.num_workers) as stream, bar:
        batches = iter(stream)
        for epoch in range(start_epoch, run.epochs):
            set_learning_rate(run.optimizer, run.learning_rate, run.lr_schedule, epoch, run.epochs, run.warmup_epochs)
            started = time.perf_counter()
            run.network.train()
            losses, images = [], 0
            bar.set_description(f"epoch {epoch + 1}/{run.epochs}")
            for _ in range(steps):
                batch = _to_device(next(batches), run.device)
                run.optimizer.zero_grad(set_to_none=True)
                with autocast(run.device):
                    loss = run.batch_loss(run.network, batch)
                if scaler is None:
                    loss.backward()
                    run.optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(run.optimizer)
                    scaler.update()
                if run.companion is not None:
                    run.companion.update(run.network)
                # kept on the device: loss.item() every step would make the CPU wait for the GPU
                losses.append(loss.detach())
                images += len(batch["image"])
                if len(losses) % 10 == 1:
                    bar.set_postfix(loss=f"{losses[-1].item():.4f}")
                bar.update(1)
            train_loss = mean_over_ranks(torch.stack(losses).float().mean(), run.device)
            train_seconds = time.perf_counter() - started
            broadcast_buffers(unwrap_network(run.network))  # every rank validates (and keeps) rank 0's model
            run.network.eval()
            with torch.no_grad(), autocast(run.device):
                validation = run.validate(unwrap_network(run.network))  # bare: DDP's forward hooks are for training
            entry = {"epoch": epoch + 1, "train_loss": train_loss, **validation,
                     "lr": run.optimizer.param_groups[-1]["lr"], "train_seconds": round(train_seconds, 3),
                     "epoch_seconds": round(time.perf_counter() - started, 3),
                     "train_images_per_second": round(images * run.world_size / train_seconds, 2)}
            log.entries.append(entry)
            if run.is_writer:
                with writes_held():  # a stop waits for the log and checkpoint of this epoch to agree
                    log.write()
                    save_checkpoint(run.folder / LATEST, run.network, run.optimizer, epoch + 1, log.entries,
                                    **run.checkpoint_content, **companion_state(run))
                log.plot(run.curves, run.title)
                tqdm.write(_format_entry(entry))
                late = run.clock.overrun_warning(log.entries, run.epochs, epoch + 1 - start_epoch) if run.clock else None
                if late:
                    tqdm.write(late)
    if run.is_writer:
        with writes_held():
            save_checkpoint(run.folder / FINAL, run.network, run.optimizer, run.epochs, log.entries,
                            **run.checkpoint_content, **companion_state(run))
    return log


def companion_state(run: TrainingRun) -> dict:
    """The semi-supervised method's state for the checkpoint (its teacher), or nothing."""
    return {} if run.companion is None else {"extra": {COMPANION_KEY: run.companion.state_dict()}}


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for key, value in batch.items():
        if hasattr(value, "dtype") and hasattr(value, "shape"):
            tensor = torch.from_numpy(value) if not isinstance(value, torch.Tensor) else value
            if device.type == "cuda" and tensor.device.type == "cpu":  # device batches arrive there already
                tensor = tensor.pin_memory()
            out[key] = tensor.to(device, non_blocking=True)
        else:
            out[key] = value
    return out


def _format_entry(entry: dict) -> str:
    parts = [f"epoch {entry['epoch']}"]
    for key, value in entry.items():
        if key != "epoch" and isinstance(value, float):
            parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)
