"""`rbmnet_plan_and_preprocess -d NAME`: checks -> fingerprint -> plan -> splits -> preprocessed arrays.

Writes into rbmnet_preprocessed/<Name>/: dataset.json (copy), dataset_fingerprint.json, <plans>.json,
splits_final.json and <configuration>/ (see preprocessing/store.py). Every step reuses its previous
result while its inputs are unchanged, so re-running is cheap and never loses a user's plan edits.
"""
from __future__ import annotations

import shutil
import time
import warnings

import click

from rbmnet.cli.common import dataset_option, friendly_errors, overrides_to_dict, plans_option, set_option
from rbmnet.data.checks import inventory_dataset
from rbmnet.io.atomic import atomic_path
from rbmnet.layout import DATASET_JSON, DEFAULT_PLANS_NAME, FINGERPRINT_JSON, SPLITS_JSON, plans_file_name
from rbmnet.paths import preprocessed_dataset_dir
from rbmnet.planning.fingerprint import load_or_compute_fingerprint
from rbmnet.planning.plan import Plan, apply_overrides, load_plan, save_plan
from rbmnet.data.dataset_json import load_dataset_json
from rbmnet.planning.planner import GIB, check_input_size, generate_plan, memory_budget, plan_differences
from rbmnet.cli.time_planning import SpeedSource, attach_predictions, choose, gpu_planned, resolve_budget
from rbmnet.io.atomic import read_json
from rbmnet.model.device import resolve_device
from rbmnet.planning.durations import format_duration
from rbmnet.planning.speeds import load_speed_file
from rbmnet.planning.time_candidates import chosen_values
from rbmnet.tasks import build_task
from rbmnet.planning.splits import load_or_create_splits
from rbmnet.preprocessing.preprocess import preprocess_dataset
from rbmnet.preprocessing.store import configuration_dir


def plan_and_preprocess(dataset_name: str | None, plans_name: str = DEFAULT_PLANS_NAME, num_processes: int = 2,
                        overrides: dict | None = None, input_size=None, max_side: int = 512,
                        gpu_memory_gb: float | None = None, overwrite_plans: bool = False,
                        overwrite: bool = False, verbose: bool = True, overwrite_splits: bool = False,
                        num_folds: int | None = None, probe_batch_size: bool = False, time_budget: str | None = "off",
                        device_name: str = "auto", speed_from: str | None = None, dry_run: bool = False,
                        predict_durations: bool = False) -> Plan:
    """The whole command as a function (the demo calls it). Returns the plan in effect.

    time_budget: a duration ('30m'), 'off' (the paper's protocol), or None (the flag absent: a default
    budget on a CPU, the paper's protocol on a GPU). predict_durations: measure speeds and predict each
    stage's duration even without a budget. dry_run: print the plan and predictions, write nothing."""
    started = time.perf_counter()
    inventory = inventory_dataset(dataset_name)
    out_dir = preprocessed_dataset_dir(inventory.name)
    fingerprint, computed = load_or_compute_fingerprint(inventory, out_dir / FINGERPRINT_JSON, num_processes, verbose,
                                                        save=not dry_run)
    for note in fingerprint["notes"]:
        warnings.warn(note, stacklevel=2)

    plan_path = out_dir / plans_file_name(plans_name)
    dataset_json = load_dataset_json(inventory.folder)
    memory = memory_budget(gpu_memory_gb, cpu_only=device_name == "cpu")
    budget_seconds, budget_note = resolve_budget(time_budget, gpu_planned(memory))
    explicit_budget = time_budget is not None and budget_seconds is not None
    overrides = dict(overrides or {})
    fresh = generate_plan(fingerprint, inventory.name, plans_name, overrides, input_size, max_side, gpu_memory_gb,
                          budget=memory, dataset_json=dataset_json)
    folds = num_folds or _existing_fold_count(out_dir / SPLITS_JSON) or 5
    output_channels = build_task(fresh, dataset_json).output_channels
    speeds, option, chosen = None, None, {}
    if budget_seconds is not None or predict_durations:
        speeds = SpeedSource(fresh, dataset_json, tuple(fingerprint["aggregate"]["median_shape"]),
                             device=None if gpu_memory_gb is not None else resolve_device(device_name),
                             file_speeds=load_speed_file(speed_from) if speed_from else None)
    replacing = overwrite_plans or not plan_path.is_file()
    if budget_seconds is not None and (replacing or explicit_budget):
        option = choose(budget_seconds, fingerprint, fresh, memory, output_channels, max_side, overrides,
                        input_size, speeds, folds)
        chosen = chosen_values(option)
        fresh = generate_plan(fingerprint, inventory.name, plans_name, overrides, input_size, max_side,
                              gpu_memory_gb, budget=memory, dataset_json=dataset_json, time_choice=chosen)
    probe = _probe_batch_size(fresh) if probe_batch_size else None
    if probe is not None:
        fresh = generate_plan(fingerprint, inventory.name, plans_name, overrides, input_size, max_side,
                              gpu_memory_gb, budget=memory, probe=probe, dataset_json=dataset_json, time_choice=chosen)
    if not replacing:
        # an explicit --time-budget re-plans a kept plan's time knobs; --set values still win
        plan = _kept_plan(load_plan(plan_path), {**chosen, **overrides}, input_size)
        if probe is not None:  # asked for explicitly: the measured batch sizes replace the kept ones
            plan = _with_probed_batch_sizes(plan, fresh)
        differences = plan_differences(plan, fresh)
        plan_status = "kept existing" + (", time knobs re-planned for the budget" if chosen else "")
    else:
        plan, differences = fresh, []
        plan_status = "replaced" if plan_path.is_file() else "new"
    predictions = None
    applied_budget = budget_seconds if (replacing or explicit_budget) else None
    if budget_seconds is not None and option is None:
        budget_note = "the existing plan is kept as it is (--time-budget DURATION or --overwrite-plans re-plans it)"
    if speeds is not None:
        predictions = attach_predictions(plan, fingerprint, speeds, output_channels, folds, applied_budget,
                                         budget_note, option)
    if dry_run:
        if verbose:
            _report(inventory, fingerprint, computed, plan, plan_path, "dry run, not written", differences,
                    speeds, predictions, applied_budget, budget_note, option)
            click.echo("dry run: nothing written (plan, splits and preprocessed data left as they were)")
        return plan
    # Splits before anything is saved: a dataset that cannot be split fails without half-written state.
    labeled = [case for case, _, _ in inventory.labeled]
    splits, splits_created = load_or_create_splits(out_dir / SPLITS_JSON, labeled, plan.seed, overwrite_splits,
                                                   num_folds)
    save_plan(plan, plan_path)
    with atomic_path(out_dir / DATASET_JSON) as tmp:
        shutil.copyfile(inventory.folder / DATASET_JSON, tmp)
    preprocessed_dir = configuration_dir(out_dir, plan.configuration)
    written = preprocess_dataset(inventory, plan, preprocessed_dir, num_processes, overwrite, verbose)

    if verbose:
        _report(inventory, fingerprint, computed, plan, plan_path, plan_status, differences, speeds, predictions,
                applied_budget, budget_note, option)
        echo = click.echo
        echo(f"splits: {len(splits)} folds over {len(labeled)} labeled cases "
             f"({'new' if splits_created else 'kept'}) in {out_dir / SPLITS_JSON}")
        echo(f"preprocessed: {preprocessed_dir} ({'written' if written else 'up to date, skipped'})")
        echo(f"done in {time.perf_counter() - started:.1f} s")
    return plan


def _report(inventory, fingerprint, computed, plan, plan_path, plan_status, differences, speeds, predictions,
            budget_seconds, budget_note, option) -> None:
    aggregate = fingerprint["aggregate"]
    derivation = plan.derivation
    echo = click.echo
    echo(f"dataset {inventory.name}: {fingerprint['num_labeled']} labeled, {fingerprint['num_unlabeled']} "
         f"unlabeled, {fingerprint['num_test']} test cases (fingerprint {'computed' if computed else 'reused'}; "
         f"median image {_hw(aggregate['median_shape'])})")
    echo(f"plan {plan_path} ({plan_status}): input size {_hw(plan.input_size)} (height x width), "
         f"configuration {plan.configuration}, widths {plan.network.features_per_stage}")
    if differences:
        echo(f"  differs from a freshly generated plan in: {', '.join(differences)} "
             f"(--overwrite-plans replaces it)")
    if derivation.get("budget_bytes"):
        timed = "time budget and memory" if "time budget" in derivation.get("batch_size_rule", "") else "memory"
        echo(f"  batch size: pretext {plan.pretext.batch_size}, segmentation {plan.segmentation.batch_size} "
             f"(from the {timed}: {derivation['device']}, budget {derivation['budget_bytes'] / GIB:.1f} GiB of "
             f"{derivation['memory_assumed_bytes'] / GIB:.1f} GiB, "
             f"{derivation['per_sample_bytes'] / GIB:.2f} GiB per sample)")
    echo(f"  epochs x iterations: pretext {plan.pretext.epochs} x {plan.pretext.iterations_per_epoch}, "
         f"segmentation {plan.segmentation.epochs} x {plan.segmentation.iterations_per_epoch}")
    head = f", numbering head {plan.segmentation.numbering_head}" if plan.segmentation.task == "teeth" else ""
    echo(f"  segmentation task: {plan.segmentation.task}{head} "
         f"({derivation.get('task_rule', 'kept from the existing plan')})")
    if speeds is None:
        return
    echo(f"  time: {budget_note}")
    pretext, fold = predictions["pretext"], predictions["segmentation_fold"]
    pretrained = predictions.get("pretrained", True)  # older plans always started from the pretext model
    planned_seconds = predictions.get("planned_seconds", predictions["pretext_plus_one_fold_seconds"])
    stages = (f"pretext {format_duration(pretext['total_seconds'])}, one fold {format_duration(fold['total_seconds'])}, "
              f"pretext + one fold {format_duration(predictions['pretext_plus_one_fold_seconds'])}" if pretrained else
              f"one fold {format_duration(fold['total_seconds'])} from scratch (pretraining is opt-in, "
              f"segmentation.initialisation=pretext: the pretext stage would add {format_duration(pretext['total_seconds'])})")
    echo(f"  predicted: {stages}, all {predictions['folds']} folds "
         f"{format_duration(predictions['all_folds_seconds'])} ({speeds.describe()})")
    if option is not None and budget_seconds is not None and planned_seconds > budget_seconds * 1.001:
        warnings.warn(f"explicit values take {'pretext + one fold' if pretrained else 'one fold'} to "
                      f"{format_duration(planned_seconds)}, over the {format_duration(budget_seconds)} budget "
                      f"(explicit --set values win over the budget)", stacklevel=2)


def _existing_fold_count(path) -> int | None:
    try:
        return len(read_json(path))
    except (OSError, ValueError, TypeError):
        return None


def _probe_batch_size(plan: Plan):
    """Measure the batch size on this machine's GPU; without one, say so and keep the memory model's."""
    import torch

    from rbmnet.training.batch_probe import probe_batch_size
    from rbmnet.planning.planner import MAX_BATCH

    if not torch.cuda.is_available():
        warnings.warn("--probe-batch-size needs a CUDA GPU and this machine has none; the batch size comes "
                      "from the memory model instead (or plan for a GPU with --gpu-memory-gb)", stacklevel=2)
        return None
    probe = probe_batch_size(plan.network, plan.input_size, largest=MAX_BATCH)
    click.echo(f"batch size probe on {probe.device}: {probe.batch_size} fits in {probe.limit_bytes / GIB:.1f} GiB "
               f"(peak GiB by batch size: " + ", ".join(
                   f"{size}: {'out of memory' if peak is None else f'{peak / GIB:.1f}'}"
                   for size, peak in sorted(probe.peaks.items())) + ")")
    return probe


def _with_probed_batch_sizes(plan: Plan, fresh: Plan) -> Plan:
    keys = ("pretext.batch_size", "pretext.iterations_per_epoch", "segmentation.batch_size",
            "segmentation.iterations_per_epoch")
    values = {key: getattr(getattr(fresh, key.split(".")[0]), key.split(".")[1]) for key in keys}
    plan = apply_overrides(plan, values)
    plan.derivation = {**plan.derivation, "batch_size_rule": fresh.derivation["batch_size_rule"],
                       "batch_size_probe": fresh.derivation["batch_size_probe"]}
    return plan


def _kept_plan(plan: Plan, overrides: dict | None, input_size) -> Plan:
    """An existing plan stays as the user left it, but explicit command-line values still apply."""
    explicit = dict(overrides or {})
    if input_size is not None:
        explicit.setdefault("input_size", [int(s) for s in input_size])
    if explicit:
        plan = apply_overrides(plan, explicit)
    plan.input_size = check_input_size(plan.input_size, plan.network.total_downsampling)
    return plan


def _hw(shape) -> str:
    return "x".join(f"{s:g}" for s in shape)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@dataset_option
@plans_option
@click.option("-np", "--num-processes", default=2, show_default=True, type=click.IntRange(min=1),
              help="Worker processes for reading and preprocessing cases.")
@click.option("--input-size", nargs=2, type=int, default=None, metavar="H W",
              help="Fix the input size (height width) instead of deriving it; must be divisible by the "
                   "network's downsampling (16 by default).")
@click.option("--max-side", default=512, show_default=True, type=click.IntRange(min=1),
              help="Cap on the longer side of the derived input size.")
@click.option("--gpu-memory-gb", type=float, default=None,
              help="Plan batch sizes for a GPU with this much memory (GiB) instead of this machine.")
@click.option("--probe-batch-size", is_flag=True,
              help="CUDA only: measure the batch size (training steps at growing sizes, the largest that fits "
                   "with a margin) instead of estimating it; also updates a kept plan's batch sizes.")
@click.option("--time-budget", default=None, metavar="DURATION",
              help="Plan pretext + one segmentation fold to fit this duration on the training device (90s, 30m, "
                   "2h, 1d); 'off' for the paper's protocol. Default: 1h on a machine without a GPU, the paper's "
                   "protocol on a GPU. Explicit --set values win over the budget's choice.")
@click.option("--device", "device_name", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="The device that will train: speeds are measured on it (auto: a GPU if any).")
@click.option("--speed-from", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Speeds measured on another machine (its speeds.json, see docs/time_budget.md) instead of "
                   "measuring here; with --gpu-memory-gb and no FILE the speeds are an assumed table, not measured.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the predicted durations; write nothing.")
@click.option("--overwrite-plans", is_flag=True, help="Replace an existing plan (by default it is kept).")
@click.option("--overwrite", is_flag=True, help="Preprocess again even when the data are up to date.")
@click.option("--overwrite-splits", is_flag=True, help="Replace an existing splits_final.json.")
@click.option("--num-folds", type=click.IntRange(min=2), default=None,
              help="Folds of a new splits_final.json (default 5); 10 folds allow training fractions up to 0.9.")
@set_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary.")
@friendly_errors
def main(dataset, plans_name, num_processes, input_size, max_side, gpu_memory_gb, probe_batch_size, time_budget,
         device_name, speed_from, dry_run, overwrite_plans, overwrite, overwrite_splits, num_folds, overrides, quiet):
    """Check a raw dataset, fingerprint it, plan training and write the preprocessed arrays."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"warning: {message}", err=True)
        plan_and_preprocess(dataset, plans_name=plans_name, num_processes=num_processes,
                            overrides=overrides_to_dict(overrides), input_size=list(input_size) if input_size else None,
                            max_side=max_side, gpu_memory_gb=gpu_memory_gb, overwrite_plans=overwrite_plans,
                            overwrite=overwrite, verbose=not quiet, overwrite_splits=overwrite_splits,
                            num_folds=num_folds, probe_batch_size=probe_batch_size, time_budget=time_budget,
                            device_name=device_name, speed_from=speed_from, dry_run=dry_run, predict_durations=True)


if __name__ == "__main__":  # python -m rbmnet.cli.plan_and_preprocess
    main()
