"""rbmnet_evaluate: Dice, Jaccard, precision, recall of a folder of predicted masks against references.

Cases are matched by file name without suffix (any of png, jpg, bmp, tif on either side). By default
the task is binary: any value > 0 is foreground on both sides, so label maps and 0/255 masks compare
directly. With --labels 1,2,... each label is its own binary mask and summary.json gets per-label
statistics.

Cases present on one side only are not scored; they are listed in summary.json
("missing_predictions", "missing_references") and named in a warning line, and the exit code stays 0
(--strict makes them an error). No common case, an empty or absent folder, or a prediction whose size
differs from its reference is an error (exit 2).
"""
from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from rbmnet.cli.common import friendly_errors
from rbmnet.errors import RbmnetError
from rbmnet.evaluation.reports import SUMMARY_JSON, format_table, statistics_rows, write_segmentation_summary
from rbmnet.evaluation.segmentation_metrics import METRICS, case_metrics, case_metrics_multiclass
from rbmnet.io.images import case_name, is_image_file, read_label


def evaluate_folders(reference_dir: str | Path, prediction_dir: str | Path, output_dir: str | Path | None = None,
                     labels: list[int] | None = None, strict: bool = False) -> dict:
    """Score every case found in both folders; write summary.json/.csv to output_dir (default prediction_dir)."""
    reference_dir, prediction_dir = Path(reference_dir), Path(prediction_dir)
    references = _cases(reference_dir, "reference")
    predictions = _cases(prediction_dir, "prediction")
    common = sorted(set(references) & set(predictions))
    missing_predictions = sorted(set(references) - set(predictions))
    missing_references = sorted(set(predictions) - set(references))
    if not common:
        raise RbmnetError(f"no case in {prediction_dir} has a reference of the same name in {reference_dir}")
    if strict and (missing_predictions or missing_references):
        raise RbmnetError(f"cases on one side only: {_listing(missing_predictions + missing_references)} "
                          f"(without --strict they are listed and skipped)")
    per_case = []
    for case in tqdm(common, desc="evaluating", unit="case", disable=None):
        per_case.extend(_score_case(case, predictions[case], references[case], labels))
    extra = {
        "reference_dir": str(reference_dir.absolute()),
        "prediction_dir": str(prediction_dir.absolute()),
        "foreground": "value > 0" if labels is None else f"each of labels {labels}",
        "missing_predictions": missing_predictions,
        "missing_references": missing_references,
    }
    output_dir = prediction_dir if output_dir is None else Path(output_dir)
    return write_segmentation_summary(output_dir, per_case, extra)


def _cases(folder: Path, side: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise RbmnetError(f"{side} folder {folder} does not exist")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not is_image_file(path):
            continue
        name = case_name(path)
        if name in cases:
            raise RbmnetError(f"{side} case '{name}' appears twice in {folder} ({cases[name].name}, {path.name})")
        cases[name] = path
    if not cases:
        raise RbmnetError(f"{side} folder {folder} holds no images (png, jpg, bmp, tif)")
    return cases


def _score_case(case: str, prediction_path: Path, reference_path: Path, labels: list[int] | None) -> list[dict]:
    prediction, reference = read_label(prediction_path), read_label(reference_path)
    if prediction.shape != reference.shape:
        raise RbmnetError(f"case '{case}': prediction {prediction_path.name} is {prediction.shape[1]}x"
                          f"{prediction.shape[0]} but reference {reference_path.name} is "
                          f"{reference.shape[1]}x{reference.shape[0]} (width x height)")
    if labels is None:
        return [{"case": case, **case_metrics(prediction > 0, reference > 0)}]
    by_label = case_metrics_multiclass(prediction, reference, labels)
    return [{"case": case, "label": label, **metrics} for label, metrics in by_label.items()]


def _parse_labels(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        labels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise RbmnetError(f"--labels takes integers separated by commas, got '{text}'") from None
    if not labels or any(label <= 0 or label > 255 for label in labels):
        raise RbmnetError(f"--labels takes foreground labels 1..255, got '{text}'")
    return labels


def _listing(names: list[str], shown: int = 10) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-r", "--reference", "reference_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of reference label maps/masks.")
@click.option("-p", "--prediction", "prediction_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of predicted label maps/masks, named like the references.")
@click.option("-o", "--output", "output_dir", default=None, type=click.Path(path_type=Path),
              help="Where summary.json and summary.csv go (default: the prediction folder).")
@click.option("--labels", "labels_text", default=None, metavar="1,2,...",
              help="Score each label separately instead of foreground (> 0) vs background.")
@click.option("--strict", is_flag=True, help="Fail when a case has no prediction or no reference.")
@friendly_errors
def main(reference_dir: Path, prediction_dir: Path, output_dir: Path | None, labels_text: str | None,
         strict: bool) -> None:
    """Dice, Jaccard, precision and recall of predicted masks against reference masks."""
    labels = _parse_labels(labels_text)
    summary = evaluate_folders(reference_dir, prediction_dir, output_dir, labels=labels, strict=strict)
    click.echo(f"{summary['num_cases']} cases" + (f", labels {labels}" if labels else ""))
    click.echo(format_table(statistics_rows(summary), ["statistic", *METRICS]))
    for key, side in (("missing_predictions", "reference cases without a prediction"),
                      ("missing_references", "predicted cases without a reference")):
        if summary[key]:
            click.echo(f"warning: {len(summary[key])} {side}, not scored: {_listing(summary[key])}", err=True)
    click.echo(f"wrote {Path(output_dir or prediction_dir) / SUMMARY_JSON}")


if __name__ == "__main__":
    main()
