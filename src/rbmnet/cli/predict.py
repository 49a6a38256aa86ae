"""`rbmnet_predict -i IN_DIR -o OUT_DIR -d NAME`: masks for a folder of radiographs."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from rbmnet.cli.common import fold_list, friendly_errors, model_options
from rbmnet.inference.quality import DEFAULT_FLAG_BELOW

EXIT_SOME_FAILED = 1


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--input", "input_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of radiographs (png, jpg, bmp, tif; 8/16-bit; grayscale or RGB-gray; any size).")
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the predictions: <stem>.png at the input's size; 0 background / 255 tooth "
                   "(binary models), or each tooth's number (teeth models). Must not lie inside the input folder.")
@model_options("used")
@click.option("--tta/--no-tta", default=False, show_default=True,
              help="Also predict the left-right mirrored image and average. Off by default: it doubles "
                   "the time, which matters on CPU; turn it on for the last bit of accuracy.")
@click.option("--save-probabilities", is_flag=True,
              help="Also write the tooth probability as an 8-bit PNG (probability x 255, original size) "
                   "in OUT_DIR/probabilities/.")
@click.option("--overlay", is_flag=True,
              help="Also write the radiograph with the teeth tinted and outlined in OUT_DIR/overlays/ "
                   "(teeth models: each tooth in its own colour with its number).")
@click.option("--binary", is_flag=True,
              help="Write 0/255 tooth masks even from a teeth model (to compare it with binary models).")
@click.option("--flag-below", type=click.FloatRange(0, 1), default=DEFAULT_FLAG_BELOW, show_default=True,
              help="Mark images whose agreement between folds (or TTA passes) is below this in OUT_DIR/quality.csv "
                   "(column flagged) and print how many; 0 turns flagging off. See docs/quality.md.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
# the names of inference/backends.py's BACKEND_NAMES, spelled out so that --help does not load torch
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="What computes the probabilities: torch (the checkpoints), onnx (ONNX Runtime on the CPU, "
                   "needs rbmnet_export first), auto (onnx on CPU when every fold has an up-to-date export, "
                   "else torch). Same outputs either way.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images per forward pass.")
@click.option("--continue", "resume", is_flag=True, help="Skip inputs whose outputs already exist.")
@click.option("-np", "--num-workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Threads reading and, separately, writing files while the network runs (0: in the main thread).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def main(input_dir, output_dir, dataset, model, folds, tta, save_probabilities, overlay, binary, flag_below, device,
         backend, batch_size, resume, num_workers, quiet):
    """Predict teeth for every radiograph in IN_DIR with a trained segmentation model: a tooth mask
    (binary models) or a map of tooth numbers (teeth models), post-processed as the model decided;
    and OUT_DIR/quality.csv: per image the folds' (and TTA passes') agreement, the tooth area and, for
    teeth models, the tooth count and duplicated numbers.

    A file that cannot be read is reported (one line, and a row of OUT_DIR/failures.csv), the others
    are still predicted, and the exit code is then 1. Bad arguments, an OUT_DIR that cannot be written
    (checked first) and a write the disk refuses later (full, read-only) exit with 2 and one line.
    """
    from rbmnet.inference.backends import choose_backend
    from rbmnet.inference.model_selection import choose_model
    from rbmnet.inference.predictor import FAILURES_CSV, predict_folder
    from rbmnet.inference.quality import QUALITY_CSV, flag_message
    from rbmnet.model.folder import postprocessing_name

    choice = choose_model(dataset, model, fold_list(folds))
    click.echo(f"model: {choice.folder} ({choice.how}); folds {', '.join(choice.folds)}; "
               f"tta {'on' if tta else 'off'}; post-processing {postprocessing_name(choice.folder)}")
    backend, backend_device = choose_backend(backend, choice.folder, choice.folds, device)
    click.echo(f"backend: {backend} on {backend_device}")
    report = predict_folder(input_dir, output_dir, choice.folder, choice.folds, tta=tta, device=device,
                            batch_size=batch_size, num_workers=num_workers, save_probabilities=save_probabilities,
                            overlay=overlay, resume=resume, progress=not quiet, binary=binary, flag_below=flag_below,
                            backend=backend)
    skipped = f", {len(report.skipped)} skipped (already done)" if report.skipped else ""
    click.echo(f"{len(report.predicted)} predicted{skipped} -> {Path(output_dir)}")
    click.echo(flag_message(report.quality, flag_below, Path(output_dir) / QUALITY_CSV))
    if report.failures:
        click.echo(f"{len(report.failures)} of {report.total} inputs failed; "
                   f"see {Path(output_dir) / FAILURES_CSV}", err=True)
        sys.exit(EXIT_SOME_FAILED)
