"""`rbmnet_train pretext|seg`: the two training stages, every plan knob overridable."""
from __future__ import annotations

import click

from rbmnet.cli.common import dataset_option, friendly_errors, overrides_to_dict, plans_option, set_option
from rbmnet.networks import ARCHITECTURES


def training_options(func):
    for option in reversed((
        dataset_option, plans_option,
        click.option("--epochs", type=int, default=None, help="Epochs (plan default otherwise)."),
        click.option("--lr", type=float, default=None, help="Learning rate."),
        click.option("--batch-size", type=int, default=None, help="Batch size."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--seed", type=int, default=None, help="Seed (plan default otherwise); named in the model id."),
        click.option("-np", "--num-workers", type=int, default=2, show_default=True,
                     help="Background processes preparing batches (0: in the main process, for debugging)."),
        click.option("--continue", "resume_run", is_flag=True, help="Resume from checkpoint_latest."),
        click.option("--overwrite", is_flag=True, help="Discard an existing run of this model and start over."),
        set_option,
    )):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Train the self-supervised pretext task or a segmentation fold."""


@main.command()
@training_options
@friendly_errors
def pretext(dataset, plans_name, epochs, lr, batch_size, device, seed, num_workers, resume_run, overwrite, overrides):
    """Random Block Masking pretraining on every image of the dataset (labeled and unlabeled)."""
    from rbmnet.training.pretext import run_pretext
    from rbmnet.training.setup import cli_overrides, load_stage_inputs

    changes = cli_overrides(epochs, lr, batch_size, seed, "pretext", overrides_to_dict(overrides))
    inputs = load_stage_inputs(dataset, plans_name, changes)
    folder = run_pretext(inputs, device, num_workers, resume_run, overwrite,
                         model_tag=f"__seed{seed}" if seed is not None else "")
    click.echo(f"pretext model: {folder}")


ARCH_HELP = "Network: " + "; ".join(f"{name}: {arch.description}" for name, arch in ARCHITECTURES.items())


@main.command()
@click.argument("fold")
@training_options
@click.option("--fraction", type=float, default=None, help="Share of the labeled cases used for training (plan: 0.2).")
@click.option("--init", default=None, help="pretext | scratch | PATH to a checkpoint "
              "(default: the dataset's pretext checkpoint when one exists).")
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), default=None, help=ARCH_HELP)
@friendly_errors
def seg(fold, dataset, plans_name, epochs, lr, batch_size, device, seed, num_workers, resume_run, overwrite,
        overrides, fraction, init, arch):
    """Train segmentation fold FOLD (0..4, or 'all' for every labeled case)."""
    from rbmnet.errors import RbmnetError
    from rbmnet.training.segmentation import run_segmentation
    from rbmnet.training.setup import cli_overrides, load_stage_inputs

    if fold != "all" and not fold.isdigit():
        raise RbmnetError(f"FOLD must be a fold number (0..4) or 'all', got '{fold}'")
    extra = overrides_to_dict(overrides)
    if fraction is not None:
        extra["segmentation.fraction"] = fraction
    changes = cli_overrides(epochs, lr, batch_size, seed, "segmentation", extra)
    inputs = load_stage_inputs(dataset, plans_name, changes)
    folder = run_segmentation(inputs, fold, arch, init, device, num_workers, resume_run, overwrite,
                              model_tag=f"__seed{seed}" if seed is not None else "")
    click.echo(f"segmentation model: {folder}")
