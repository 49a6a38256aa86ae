"""`rbmnet_benchmark -d NAME`: train every (model, fraction, fold[, label noise]) cell that is missing,
then write the Table-2-like comparison (benchmark.md, benchmark.csv) and dice_vs_fraction.png.

`--task teeth` (default: the plan's segmentation.task) trains every cell on numbered teeth with the
plan's or --numbering-head's head; the table then shows the task's metrics (tooth Dice first)."""
from __future__ import annotations

import sys
import time

import click

from rbmnet.cli.common import dataset_option, friendly_errors, overrides_to_dict, plans_option, set_option
from rbmnet.errors import RbmnetError
from rbmnet.benchmarking.arms import FEW_LABEL_ARMS
from rbmnet.networks import describe_architectures

DEFAULT_ARCHS = "resunet,unet,linknet,pspnet"
DEFAULT_FRACTIONS = "0.1,0.2,0.3,0.8,0.9"
DEFAULT_FOLDS = "0,1,2,3,4"
EXIT_CELLS_FAILED = 1


def parse_list(text: str, kind, option: str) -> list:
    """'0.1,0.2' -> [0.1, 0.2]; duplicates dropped, order kept."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        values = [kind(item) for item in items]
    except ValueError:
        raise RbmnetError(f"{option} expects a comma-separated list of {kind.__name__} values, got '{text}'") from None
    if not values:
        raise RbmnetError(f"{option} is empty")
    return list(dict.fromkeys(values))


def names_in(text: str) -> list[str]:
    """'a, b,' -> ['a', 'b']; an empty text is an empty list (--archs '' with --arms only)."""
    return [item.strip() for item in text.split(",") if item.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@dataset_option
@plans_option
@click.option("--archs", default=DEFAULT_ARCHS, show_default=True,
              help=f"Baselines, each trained from scratch on the plan's input (radiograph + Sobel): "
                   f"{describe_architectures()}.")
@click.option("--rbm/--no-rbm", default=True, show_default=True,
              help="Include 'RBM + Modified ResUNet': resunet initialised from the pretext model "
                   "(trained first when missing).")
@click.option("--arms", default="", show_default=False, metavar="NAME[,NAME...]",
              help=f"Few-label arms, beside --archs and --rbm: {', '.join(FEW_LABEL_ARMS)} "
                   "(docs/few_labels.md). Every row gets its paired difference to Modified ResUNet from scratch.")
@click.option("--seeds", default=None, metavar="S[,S...]",
              help="Training seeds (each also draws its own labeled subset); every cell is trained once per seed, "
                   "named __seed<S> in its model id. Default: the plan's seed only.")
@click.option("--fractions", default=DEFAULT_FRACTIONS, show_default=True,
              help="Training fractions (columns of the table); 0.9 needs 10 folds "
                   "(rbmnet_plan_and_preprocess --num-folds 10 --overwrite-splits).")
@click.option("--folds", default=DEFAULT_FOLDS, show_default=True, help="Folds to train and average over.")
@click.option("--task", type=click.Choice(["binary", "teeth"]), default=None,
              help="Segmentation task of every cell: binary (tooth vs background) or teeth (each tooth with its "
                   "number; the table shows tooth Dice, identification accuracy, wrong-side rate, binary Dice). "
                   "Default: the plan's segmentation.task.")
@click.option("--numbering-head", "numbering_head", type=click.Choice(["factorized", "classes"]), default=None,
              help="--task teeth: the numbering head (default: the plan's segmentation.numbering_head).")
@click.option("--label-noise", "label_noise", default="0", show_default=True, metavar="P[,P...]",
              help="Shares of training masks to corrupt (e.g. 0,0.2,0.5); one table section per level.")
@click.option("--epochs", type=int, default=None, help="Segmentation epochs (pretext: --set pretext.epochs=N).")
@click.option("--lr", type=float, default=None, help="Segmentation learning rate.")
@click.option("--batch-size", type=int, default=None, help="Segmentation batch size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("-np", "--num-workers", type=int, default=2, show_default=True,
              help="Background processes preparing batches (0: in the main process).")
@set_option
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Folder for the table and plot (default: rbmnet_results/NAME/benchmark).")
@click.option("--table-only", is_flag=True, help="Train nothing; write the table from the cells trained so far.")
@click.option("--retrain-changed", is_flag=True,
              help="Train again the cells (and the pretext model) that were trained under other settings than "
                   "this run asks for; without it they are reported as failures and left as they are.")
@friendly_errors
def main(dataset, plans_name, archs, rbm, arms, seeds, fractions, folds, task, numbering_head, label_noise, epochs, lr,
         batch_size, device, num_workers, overrides, output, table_only, retrain_changed):
    """Compare U-Net, PSPNet, LinkNet, Modified ResUNet and RBM + Modified ResUNet over training fractions.

    Finished cells are skipped, interrupted ones resumed, so the command can be re-run after an
    interruption or with more folds/fractions; a failing cell is reported and the others go on.
    A finished cell is reused only when the plan in its checkpoint matches the settings of this run
    (plan, --epochs, --set ...); one trained under other settings is reported, never mixed into the
    table: --retrain-changed trains it again, another plan (-p) keeps both.
    """
    from pathlib import Path

    from rbmnet.benchmarking.grid import (GridSpec, grid_states, run_grid, segmentation_overrides, select_models,
                                          stage_inputs_per_cell, with_resolved_arms, with_task)
    from rbmnet.benchmarking.plot import PLOT_NAME, plot_dice_vs_fraction
    from rbmnet.benchmarking.table import collect_results, primary_metric, task_suffix, write_tables
    from rbmnet.paths import resolve_dataset_name, results_dataset_dir

    started = time.perf_counter()
    name = resolve_dataset_name(dataset)
    fraction_values = parse_list(fractions, float, "--fractions")
    bad = [f for f in fraction_values if not 0 < f <= 1]
    if bad:
        raise RbmnetError(f"--fractions must lie in (0, 1], got {', '.join(f'{f:g}' for f in bad)}")
    if num_workers < 0:
        raise RbmnetError(f"-np must be 0 or more, got {num_workers}")
    extra = overrides_to_dict(overrides)
    spec = GridSpec(dataset_name=name, plans_name=plans_name,
                    models=select_models(names_in(archs), rbm, names_in(arms)),
                    seeds=parse_list(seeds, int, "--seeds") if seeds is not None else [None],
                    fractions=fraction_values, folds=parse_list(folds, int, "--folds"),
                    label_noises=parse_list(label_noise, float, "--label-noise"),
                    overrides=segmentation_overrides(epochs, lr, batch_size, extra, task, numbering_head),
                    pretext_overrides=extra, device=device, num_workers=num_workers,
                    retrain_changed=retrain_changed)
    spec = with_resolved_arms(spec)
    inputs = stage_inputs_per_cell(spec)
    spec = with_task(spec, inputs)
    if numbering_head is not None and spec.task != "teeth":
        raise RbmnetError(f"--numbering-head applies to the teeth task; this grid trains task {spec.task} "
                          f"(pass --task teeth)")
    outcome = None
    if not table_only:
        outcome = run_grid(spec, inputs)
    output_dir = Path(output) if output else results_dataset_dir(name) / "benchmark"
    states = grid_states(spec, inputs)  # after training: what the table may use
    left_out = frozenset(cell for cell, state in states.items() if state.name in ("stale", "changed"))
    results = collect_results(spec, left_out)
    csv_path, markdown_path, markdown = write_tables(results, spec, output_dir, len(left_out))
    plot_path = plot_dice_vs_fraction(results, output_dir / PLOT_NAME,
                                      title=f"{name} (plan {plans_name}{task_suffix(spec)})",
                                      metric=primary_metric(spec))
    click.echo("\n" + markdown)
    click.echo(f"wrote {markdown_path}, {csv_path}, {plot_path}")
    if outcome is not None:
        retrained = f" ({len(outcome.retrained)} of them retrained: settings changed)" if outcome.retrained else ""
        click.echo(f"cells: {len(outcome.trained)} trained{retrained}, {len(outcome.resumed)} resumed, "
                   f"{len(outcome.skipped)} skipped (already trained), {len(outcome.failed)} failed; "
                   f"{time.perf_counter() - started:.1f} s")
        if outcome.failed:
            for what, reason in outcome.failed:
                click.echo(f"  failed: {what if isinstance(what, str) else what.describe()}: {reason}", err=True)
            failed_cells = sum(not isinstance(what, str) for what, _ in outcome.failed)
            pretext_failed = len(outcome.failed) > failed_cells
            click.echo(f"error: {failed_cells} of {len(spec.cells())} cells failed"
                       + (" (and the pretext training)" if pretext_failed else "") + "; see above", err=True)
            sys.exit(EXIT_CELLS_FAILED)


if __name__ == "__main__":  # python -m rbmnet.cli.benchmark
    main()
