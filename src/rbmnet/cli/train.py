"""`rbmnet_train pretext|seg`: the two training stages, every plan knob overridable.

Several GPUs (data-parallel, see training/distributed.py):
    torchrun --standalone --nproc_per_node 4 $(which rbmnet_train) pretext -d Teeth
    python -m torch.distributed.run --standalone --nproc_per_node 4 -m rbmnet.cli.train seg 0 -d Teeth
"""
from __future__ import annotations

import click

from rbmnet.cli.common import dataset_option, friendly_errors, overrides_to_dict, plans_option, set_option
from rbmnet.networks import ARCHITECTURES, describe_architectures
from rbmnet.planning.plan import DATA_PATHS


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
        click.option("--data-path", type=click.Choice(DATA_PATHS), default="auto", show_default=True,
                     help="Where batches are made: device = the preprocessed data kept on the GPU and augmented "
                          "there; workers = batchgenerators in -np CPU processes; auto = device when the data fit "
                          "in the GPU's free memory and the plan does not say workers."),
        click.option("--compile", "compile_network", is_flag=True,
                     help="torch.compile the network (CUDA only; ignored on CPU)."),
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
def pretext(dataset, plans_name, epochs, lr, batch_size, device, seed, num_workers, resume_run, overwrite, data_path,
            compile_network, overrides):
    """Random Block Masking pretraining on every image of the dataset (labeled and unlabeled)."""
    from rbmnet.model.folder import seed_tag
    from rbmnet.training.pretext import run_pretext
    from rbmnet.training.setup import cli_overrides, load_stage_inputs

    changes = cli_overrides(epochs, lr, batch_size, seed, "pretext", overrides_to_dict(overrides))
    inputs = load_stage_inputs(dataset, plans_name, changes)
    folder = run_pretext(inputs, device, num_workers, resume_run, overwrite,
                         model_tag=seed_tag(seed), compile_network=compile_network,
                         data_path=data_path)
    click.echo(f"pretext model: {folder}")
    if inputs.plan.segmentation.initialisation != "pretext":  # the default: folds start from scratch
        click.echo("folds start from scratch unless asked: rbmnet_train seg FOLD --init pretext starts from this "
                   "model (or plan with --set segmentation.initialisation=\"pretext\")")


ARCH_HELP = f"Network (default: the plan's, resunet). {describe_architectures()}."


@main.command()
@click.argument("fold")
@training_options
@click.option("--fraction", type=float, default=None, help="Share of the labeled cases used for training (plan: 0.2).")
@click.option("--init", default=None, help="pretext | scratch | PATH to a checkpoint (default: the plan's "
              "segmentation.initialisation; 'pretext' uses the pretext model once it is trained, else scratch).")
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), default=None, help=ARCH_HELP)
@click.option("--task", "task_name", type=click.Choice(["binary", "teeth"]), default=None,
              help="binary = tooth vs background; teeth = every tooth with its number (dataset.json's numbering). "
                   "Default: the plan's (teeth when the dataset declares a tooth numbering). Named in the model id.")
@click.option("--numbering-head", type=click.Choice(["factorized", "classes"]), default=None,
              help="teeth only: factorized = tooth + quadrant + position heads; classes = one channel per tooth "
                   "(plan default otherwise).")
@click.option("--label-noise", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="P",
              help="Corrupt the masks of a seeded share P of the training cases (teeth eroded, dilated, "
                   "dropped or merged) to measure robustness to wrong labels; validation stays clean.")
@friendly_errors
def seg(fold, dataset, plans_name, epochs, lr, batch_size, device, seed, num_workers, resume_run, overwrite,
        data_path, compile_network, overrides, fraction, init, arch, task_name, numbering_head, label_noise):
    """Train segmentation fold FOLD (0..4, or 'all' for every labeled case)."""
    from rbmnet.errors import RbmnetError
    from rbmnet.model.folder import seed_tag
    from rbmnet.training.segmentation import run_segmentation
    from rbmnet.training.setup import cli_overrides, load_stage_inputs

    if fold != "all" and not fold.isdigit():
        raise RbmnetError(f"FOLD must be a fold number (0..4) or 'all', got '{fold}'")
    extra = overrides_to_dict(overrides)
    for key, value in (("fraction", fraction), ("task", task_name), ("numbering_head", numbering_head)):
        if value is not None:
            extra[f"segmentation.{key}"] = value
    changes = cli_overrides(epochs, lr, batch_size, seed, "segmentation", extra)
    inputs = load_stage_inputs(dataset, plans_name, changes)
    folder = run_segmentation(inputs, fold, arch, init, device, num_workers, resume_run, overwrite,
                              model_tag=seed_tag(seed), label_noise=label_noise,
                              compile_network=compile_network, data_path=data_path)
    click.echo(f"segmentation model: {folder}")


if __name__ == "__main__":  # python -m rbmnet.cli.train (e.g. under python -m torch.distributed.run)
    main()
