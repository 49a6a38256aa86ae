"""`rbmnet_export -d NAME [-m MODEL_ID] [-o DIR]`: a trained model as ONNX graphs, one per fold, each
verified against PyTorch, which `rbmnet_predict --backend onnx` runs (docs/export.md)."""
from __future__ import annotations

from pathlib import Path

import click

from rbmnet.cli.common import fold_list, friendly_errors, model_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_options("exported")
@click.option("-o", "--output", "copy_to", default=None, type=click.Path(path_type=Path),
              help="Also write a self-contained copy (plan, dataset.json, post-processing, the ONNX graphs; no "
                   "checkpoints) into this new folder: rbmnet_predict -m DIR uses it without the results root.")
@click.option("--archive", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the model (checkpoints and the new exports) as one zip for rbmnet_install_model.")
@friendly_errors
def main(dataset, model, folds, copy_to, archive):
    """Export every trained fold of a segmentation model to <model>/fold_<k>/model.onnx (normalized
    image -> probabilities; Sobel channel and activation inside) with model.json (what prediction
    needs outside the graph). Each graph is run in ONNX Runtime and PyTorch on sample images (two
    sizes, batch 1 and 2) and refused, with nothing written, when any probability differs by more
    than 1e-3; the largest difference is printed. See docs/export.md.
    """
    from rbmnet.export.model_export import export_model
    from rbmnet.export.portable_copy import check_copy_target, write_portable_copy
    from rbmnet.export.verification import TOLERANCE

    chosen_folds = fold_list(folds)
    folder = _model_folder(dataset, model, chosen_folds)
    if copy_to is not None:
        check_copy_target(copy_to)  # before minutes of export work
    click.echo(f"model: {folder}")
    exports = export_model(folder, chosen_folds, log=click.echo)
    worst = max(export.max_difference for export in exports)
    click.echo(f"exported {len(exports)} fold(s): {', '.join(str(e.onnx_path) for e in exports)}; "
               f"max |onnx - torch| {worst:.2g} (tolerance {TOLERANCE:g})")
    if copy_to is not None:
        target = write_portable_copy(folder, exports, copy_to)
        click.echo(f"self-contained copy: {target} (predict with: rbmnet_predict -m {target} -i IMAGES -o OUTPUT)")
    if archive is not None:
        from rbmnet.export.archive import write_archive

        write_archive(folder, archive)
        click.echo(f"archive: {archive} (install with: rbmnet_install_model {archive})")


def _model_folder(dataset: str | None, model: str | None, folds: list[str] | None) -> Path:
    """The model folder, as rbmnet_predict chooses it; before any training, says what to train."""
    from rbmnet.errors import RbmnetError
    from rbmnet.inference.model_selection import SEGMENTATION_PREFIX, choose_model
    from rbmnet.layout import CHECKPOINT_FINAL, FOLD_PREFIX
    from rbmnet.paths import results_dataset_dir

    try:
        return choose_model(dataset, model, folds).folder
    except RbmnetError:
        untrained = dataset is not None and model is None and not any(
            results_dataset_dir(dataset).glob(f"{SEGMENTATION_PREFIX}*/{FOLD_PREFIX}*/{CHECKPOINT_FINAL}"))
        if untrained:
            raise RbmnetError(f"{results_dataset_dir(dataset)}: nothing to export, no trained segmentation model; "
                              f"train one first: rbmnet_train seg 0 -d {dataset}") from None
        raise


if __name__ == "__main__":
    main()
