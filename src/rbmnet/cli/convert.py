"""`rbmnet_convert`: bring radiographs and their labels into rbmnet_raw/<Name>/."""
from __future__ import annotations

import os
import time
from pathlib import Path

import click

from rbmnet.cli.common import friendly_errors
from rbmnet.conversion.folder import convert_folder
from rbmnet.conversion.supervisely import convert_supervisely
from rbmnet.conversion.synthetic import write_synthetic_dataset
from rbmnet.conversion.writer import NUMBERING_CHOICES, ConversionResult

existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
name_option = click.option("-d", "--dataset", "name", required=True,
                           help="Name of the dataset folder to write.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing dataset of that name.")
workers_option = click.option(
    "-np", "--num-processes", "num_processes", type=click.IntRange(min=1),
    default=min(8, os.cpu_count() or 1), show_default=True, help="Worker processes.")


@click.group()
def main():
    """Bring data into rbmnet_raw/<NAME>/ (imagesTr, labelsTr, imagesUnlabeled, imagesTs, dataset.json)."""


@main.command()
@click.option("--images", "images_dir", type=existing_dir, required=True,
              help="Folder of radiographs (png, jpg, bmp, tif; 8/16-bit; gray or RGB-gray).")
@click.option("--labels", "labels_dir", type=existing_dir, required=True,
              help="Folder of label maps or masks named like their images.")
@name_option
@click.option("--unlabeled", "unlabeled_dir", type=existing_dir,
              help="Extra folder of unlabeled radiographs (pretraining only).")
@click.option("--test", "test_dir", type=existing_dir, help="Folder of held-out test radiographs (imagesTs).")
@click.option("--numbering", type=click.Choice(("auto",) + NUMBERING_CHOICES, case_sensitive=False),
              default="auto", show_default=True,
              help="Tooth numbering of the label values. auto: all values FDI numbers -> FDI; else "
                   "within 1..32 with 3 or more values -> universal; else none.")
@click.option("--unmatched-to-unlabeled", is_flag=True,
              help="Put images without a label into imagesUnlabeled instead of failing.")
@workers_option
@overwrite_option
@friendly_errors
def folder(images_dir, labels_dir, name, unlabeled_dir, test_dir, numbering, unmatched_to_unlabeled,
           num_processes, overwrite):
    """Images and label maps with matching names (label values are kept: tooth numbers stay)."""
    numbering = {"fdi": "FDI", "universal": "universal", "none": "none", "auto": "auto"}[numbering.lower()]
    start = time.perf_counter()
    result = convert_folder(name, images_dir, labels_dir, unlabeled_dir, test_dir, numbering,
                            unmatched_to_unlabeled, num_processes, overwrite)
    _report(result, time.perf_counter() - start)


@main.command()
@click.argument("project_dir", type=existing_dir)
@name_option
@click.option("--to-fdi", is_flag=True, help="Store FDI tooth numbers instead of the Universal ones.")
@workers_option
@overwrite_option
@friendly_errors
def supervisely(project_dir, name, to_fdi, num_processes, overwrite):
    """A Supervisely JSON project (the public teeth dataset's download)."""
    start = time.perf_counter()
    result = convert_supervisely(project_dir, name, to_fdi, num_processes, overwrite)
    _report(result, time.perf_counter() - start)


@main.command()
@click.option("-d", "--dataset", "name", default="Teeth", show_default=True,
              help="Name of the dataset folder to write.")
@click.option("--num-labeled", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--num-unlabeled", type=click.IntRange(min=0), default=40, show_default=True)
@click.option("--num-test", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--height", type=click.IntRange(min=32), default=256, show_default=True)
@click.option("--width", type=click.IntRange(min=32), default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical files.")
@workers_option
@overwrite_option
@friendly_errors
def synthetic(name, num_labeled, num_unlabeled, num_test, height, width, seed, num_processes, overwrite):
    """Panoramic-like synthetic radiographs with per-tooth labels (FDI): data for a first run."""
    start = time.perf_counter()
    result = write_synthetic_dataset(name, num_labeled, num_unlabeled, num_test, height, width, seed,
                                     overwrite, num_processes)
    _report(result, time.perf_counter() - start)


def _report(result: ConversionResult, seconds: float) -> None:
    content = result.dataset_json
    for note in result.notes:
        click.echo(f"note: {note}")
    teeth = [name for name, value in content["labels"].items() if value != 0]
    numbering = content["tooth_numbering"] or "no tooth numbering"
    click.echo(f"wrote {result.dataset_dir}: {content['numTraining']} labeled, {content['numUnlabeled']} "
               f"unlabeled, {content['numTest']} test; {len(teeth)} labels ({numbering}) in {seconds:.1f} s")


if __name__ == "__main__":
    main()
