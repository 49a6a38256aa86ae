"""rbmnet_evaluate: a folder of predictions against references, as binary masks or as numbered teeth.

Cases are matched by file name without suffix (any of png, jpg, bmp, tif on either side). What is
scored follows from the files (docs/metrics.md):

- both folders binary masks (every file's values within {0, 255} or within {0, 1}): Dice, Jaccard,
  precision, recall of tooth vs background (value > 0), so 0/1 and 0/255 masks compare directly;
- both folders numbered tooth label maps (some file holds other values): the numbered-teeth metrics
  (evaluation/numbering_metrics.py) with the numbering of --numbering, else the one the reference
  values show (conversion.writer.detect_tooth_numbering); the report adds per_tooth.csv and
  dental_chart.png (--chart-per-case: dental_charts/<case>.png too);
- one side numbered and the other binary: an error; --binary scores both as tooth vs background;
- a prediction that is no label map of the references' labels (binary, the references' own values, or
  the tooth numbers of a numbering), such as a probability map: an error naming the file; --threshold T
  binarises probability maps (evaluation/probability_maps.py) and scores them as tooth vs background.

A folder whose files are all empty (only 0) takes the other folder's kind. Each side's kind is
decided on the whole folder (its cases that have a counterpart). --binary forces the binary scoring
on any inputs; with --labels 1,2,... each label is its own binary mask and summary.json gets
per-label statistics.

Every metric depends only on how many pixels carry each (predicted value, reference value) pair, so
each case is read once and kept as that joint histogram: the kinds, the numbering and the scores all
come from it. Files this command writes into an output folder (dental_chart.png, dental_charts/)
are never taken for cases.

Cases present on one side only are not scored; they are listed in summary.json
("missing_predictions", "missing_references") and named in a warning line, and the exit code stays 0
(--strict makes them an error). No common case, an empty or absent folder, a prediction whose size
differs from its reference, or an output folder that cannot be written (checked before reading any
case) is an error (exit 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from rbmnet.cli.common import friendly_errors
from rbmnet.conversion.writer import detect_tooth_numbering
from rbmnet.data.numbering import NUMBERINGS, ToothNumbering
from rbmnet.errors import RbmnetError
from rbmnet.evaluation.numbering_metrics import TEETH_METRICS, teeth_case_metrics
from rbmnet.evaluation.probability_maps import binarise_probability_map, threshold_rule
from rbmnet.evaluation.reports import SUMMARY_JSON, format_table, statistics_rows, write_segmentation_summary
from rbmnet.evaluation.segmentation_metrics import METRICS, case_metrics, case_metrics_multiclass
from rbmnet.evaluation.teeth_reports import CHART_PNG, write_teeth_summary
from rbmnet.io.atomic import check_writable_folder
from rbmnet.io.images import case_name, is_image_file, read_label

BINARY_VALUE_SETS = ({0, 255}, {0, 1})  # a file whose values lie within one of these is a binary mask
OWN_OUTPUTS = {CHART_PNG}  # image files this command writes beside summary.json (folders are never cases)
BINARY, TEETH = "binary", "numbered teeth"


def evaluate_folders(reference_dir: str | Path, prediction_dir: str | Path, output_dir: str | Path | None = None,
                     labels: list[int] | None = None, strict: bool = False, binary: bool = False,
                     numbering: str | None = None, case_charts: bool = False,
                     threshold: float | None = None) -> dict:
    """Score every case found in both folders; write summary.json/.csv to output_dir (default prediction_dir).

    Binary or numbered-teeth evaluation as the module docstring says (`binary` or `labels`: binary
    whatever the files hold); `numbering` (FDI or universal) overrides the detected one; `threshold`
    reads the predictions as probability maps and scores (probability > threshold) vs reference > 0.
    The summary's "evaluation" names which was done.
    """
    if threshold is not None and labels:
        raise RbmnetError("--threshold makes tooth vs background masks; it cannot be combined with --labels")
    forced = "--binary" if binary else "--labels" if labels else "--threshold" if threshold is not None else None
    if forced and (numbering or case_charts):
        raise RbmnetError(f"--numbering and --chart-per-case apply to numbered teeth, not to {forced}")
    if numbering is not None:
        numbering = _numbering_name(numbering)
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
    output_dir = check_writable_folder(prediction_dir if output_dir is None else output_dir)
    pixels = {case: _read_case(case, predictions[case], references[case], threshold)
              for case in tqdm(common, desc="evaluating", unit="case", disable=None)}
    if threshold is None:
        _check_label_maps(pixels, predictions)
    kind = BINARY if forced else _evaluation_kind(pixels, references, predictions, reference_dir, prediction_dir)
    if kind == BINARY and (numbering or case_charts):
        raise RbmnetError("--numbering and --chart-per-case apply to numbered tooth label maps, but both folders "
                          "hold binary masks (values 0/1 or 0/255)")
    extra = {
        "reference_dir": str(reference_dir.absolute()),
        "prediction_dir": str(prediction_dir.absolute()),
        "evaluation": kind,
        **({"foreground": _foreground(labels, threshold)} if kind == BINARY else {}),
        **({"threshold": threshold} if threshold is not None else {}),
        "missing_predictions": missing_predictions,
        "missing_references": missing_references,
    }
    if kind == TEETH:
        return _evaluate_teeth(pixels, numbering, extra, output_dir, case_charts)
    per_case = []
    for case, case_pixels in pixels.items():
        per_case.extend(_score_case(case, case_pixels, labels))
    return write_segmentation_summary(output_dir, per_case, extra)


@dataclass(frozen=True)
class CasePixels:
    """One case as the number of pixels carrying each (predicted value, reference value) pair."""
    prediction_values: np.ndarray  # the pairs present, and how many pixels each
    reference_values: np.ndarray
    counts: np.ndarray

    def values(self, side: str) -> set[int]:
        values = self.prediction_values if side == "prediction" else self.reference_values
        return {int(v) for v in np.unique(values)}

    def label_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, reference) as 1-D maps with exactly these pairs (pixel order does not matter)."""
        return np.repeat(self.prediction_values, self.counts), np.repeat(self.reference_values, self.counts)


def _read_case(case: str, prediction_path: Path, reference_path: Path, threshold: float | None) -> CasePixels:
    prediction = (read_label(prediction_path) if threshold is None
                  else binarise_probability_map(prediction_path, threshold))
    reference = read_label(reference_path)
    if prediction.shape != reference.shape:
        raise RbmnetError(f"case '{case}': prediction {prediction_path.name} is {prediction.shape[1]}x"
                          f"{prediction.shape[0]} but reference {reference_path.name} is "
                          f"{reference.shape[1]}x{reference.shape[0]} (width x height)")
    pairs = np.bincount((prediction.astype(np.int64) * 256 + reference).ravel(), minlength=256 * 256)
    present = np.flatnonzero(pairs)
    return CasePixels((present // 256).astype(np.uint8), (present % 256).astype(np.uint8), pairs[present])


def _check_label_maps(pixels: dict[str, CasePixels], predictions: dict[str, Path]) -> None:
    """Refuse a prediction whose values are no label set the references could be compared with (a
    probability map, say): scored as "value > 0" it would give a Dice that means nothing."""
    reference_labels = set().union(*(case_pixels.values("reference") for case_pixels in pixels.values())) | {0}
    label_sets = [*BINARY_VALUE_SETS, reference_labels, *({0, *n.numbers()} for n in NUMBERINGS.values())]
    for case, case_pixels in pixels.items():
        values = case_pixels.values("prediction")
        if not any(values <= labels for labels in label_sets):
            stray = sorted(values - reference_labels)
            raise RbmnetError(f"{predictions[case]}: not a label map of the references' labels ({len(values)} distinct "
                              f"values, e.g. {stray[:6]}); for a probability map pass --threshold T (e.g. 0.5) "
                              f"to binarise it")


def _foreground(labels: list[int] | None, threshold: float | None) -> str:
    if threshold is not None:
        return f"prediction {threshold_rule(threshold)}; reference value > 0"
    return "value > 0" if labels is None else f"each of labels {labels}"


def _folder_kind(values_by_case: dict[str, set[int]]) -> tuple[str | None, str | None]:
    """(binary, numbered or None when every file is empty; the first case showing numbered values)."""
    for case, values in values_by_case.items():
        if not any(values <= allowed for allowed in BINARY_VALUE_SETS):
            return TEETH, case
    return (BINARY if any(values - {0} for values in values_by_case.values()) else None), None


def _evaluation_kind(pixels: dict[str, CasePixels], references: dict[str, Path], predictions: dict[str, Path],
                     reference_dir: Path, prediction_dir: Path) -> str:
    sides = {}
    for side, files, folder in (("reference", references, reference_dir),
                                ("prediction", predictions, prediction_dir)):
        values = {case: case_pixels.values(side) for case, case_pixels in pixels.items()}
        kind, example = _folder_kind(values)
        shown = f" (e.g. {files[example].name} holds {sorted(values[example] - {0})[:6]})" if example else ""
        sides[side] = kind, f"{side}s in {folder} are " + ("numbered tooth label maps" + shown if kind == TEETH
                                                           else "binary masks (values 0/1 or 0/255)")
    kinds = {kind for kind, _ in sides.values()}
    if kinds == {BINARY, TEETH}:
        raise RbmnetError(f"{sides['reference'][1]} but {sides['prediction'][1]}: pass --binary to score both "
                          f"as tooth vs background (value > 0)")
    return TEETH if TEETH in kinds else BINARY


def _numbering_name(text: str) -> str:
    by_lower = {name.lower(): name for name in NUMBERINGS}
    if text.lower() not in by_lower:
        raise RbmnetError(f"--numbering '{text}' is unknown (known: {', '.join(NUMBERINGS)})")
    return by_lower[text.lower()]


def _evaluate_teeth(pixels: dict[str, CasePixels], numbering: str | None, extra: dict, output_dir: Path,
                    case_charts: bool) -> dict:
    reference_values = set().union(*(case_pixels.values("reference") for case_pixels in pixels.values()))
    source = "--numbering"
    if numbering is None:
        numbering, source = detect_tooth_numbering(reference_values), "detected from the reference values"
        if numbering is None:
            shown = sorted(reference_values - {0})
            raise RbmnetError(f"cannot tell the tooth numbering of the reference values {shown[:12]}"
                              f"{' ...' if len(shown) > 12 else ''}: pass --numbering FDI or --numbering universal")
    tooth_numbering = NUMBERINGS[numbering]
    _check_reference_numbers(pixels, tooth_numbering, source)
    per_case = [{"case": case, **teeth_case_metrics(*case_pixels.label_maps(), tooth_numbering)}
                for case, case_pixels in pixels.items()]
    extra.update({"numbering": numbering, "numbering_source": source})
    return write_teeth_summary(output_dir, per_case, extra, tooth_numbering, chart_path=output_dir / CHART_PNG,
                               case_charts=case_charts)


def _check_reference_numbers(pixels: dict[str, CasePixels], numbering: ToothNumbering, source: str) -> None:
    valid = set(numbering.numbers())
    for case, case_pixels in pixels.items():
        invalid = sorted(case_pixels.values("reference") - valid - {0})
        if invalid:
            raise RbmnetError(f"case '{case}': reference value(s) {invalid[:8]} are not {numbering.name} tooth "
                              f"numbers (numbering {source}); pass --numbering, or --binary to score tooth vs "
                              f"background")


def _cases(folder: Path, side: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise RbmnetError(f"{side} folder {folder} does not exist")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not is_image_file(path) or path.name in OWN_OUTPUTS:
            continue
        name = case_name(path)
        if name in cases:
            raise RbmnetError(f"{side} case '{name}' appears twice in {folder} ({cases[name].name}, {path.name})")
        cases[name] = path
    if not cases:
        raise RbmnetError(f"{side} folder {folder} holds no images (png, jpg, bmp, tif)")
    return cases


def _score_case(case: str, pixels: CasePixels, labels: list[int] | None) -> list[dict]:
    prediction, reference = pixels.label_maps()
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
@click.option("--binary", is_flag=True,
              help="Score tooth vs background (value > 0) whatever the files hold, numbered label maps included.")
@click.option("--numbering", default=None, type=click.Choice(list(NUMBERINGS), case_sensitive=False),
              help="Tooth numbering of numbered label maps (default: detected from the reference values).")
@click.option("--chart-per-case", "case_charts", is_flag=True,
              help="Numbered teeth: also a dental chart per case in dental_charts/.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              metavar="T",
              help="Predictions are probability maps: a pixel is tooth when its probability is above T (0 < T < 1, "
                   "e.g. 0.5). Probability = the 8-bit value / 255 (as "
                   "rbmnet_predict --save-probabilities writes it), the 16-bit value / 65535, or a floating-point "
                   "(TIFF) value in 0..1 as stored. Scored as tooth vs background against reference > 0.")
@click.option("--strict", is_flag=True, help="Fail when a case has no prediction or no reference.")
@friendly_errors
def main(reference_dir: Path, prediction_dir: Path, output_dir: Path | None, labels_text: str | None,
         binary: bool, numbering: str | None, case_charts: bool, threshold: float | None, strict: bool) -> None:
    """Score predictions against references: Dice, Jaccard, precision and recall of binary masks, or the
    numbered-teeth metrics (tooth Dice, identification accuracy, wrong side) of tooth label maps.
    Predictions must be label maps (masks or tooth numbers); probability maps need --threshold."""
    labels = _parse_labels(labels_text)
    summary = evaluate_folders(reference_dir, prediction_dir, output_dir, labels=labels, strict=strict,
                               binary=binary, numbering=numbering, case_charts=case_charts, threshold=threshold)
    written = [SUMMARY_JSON]
    if summary["evaluation"] == TEETH:
        click.echo(f"{summary['num_cases']} cases, numbered teeth ({summary['numbering']}, "
                   f"{summary['numbering_source']})")
        click.echo(format_table(statistics_rows(summary, TEETH_METRICS), ["statistic", *TEETH_METRICS]))
        sums = summary["sums"]
        click.echo(f"pooled identification accuracy {summary['pooled_identification_accuracy']:.4f}; summed over "
                   f"cases: {sums['missed']} missed, {sums['extra']} extra, {sums['wrong_side']} on the wrong "
                   f"side (of {sums['reference_teeth']} reference teeth)")
        written.append(CHART_PNG)
    else:
        click.echo(f"{summary['num_cases']} cases" + (f", labels {labels}" if labels else "")
                   + (f", tooth where {summary['foreground']}" if threshold is not None else ""))
        click.echo(format_table(statistics_rows(summary), ["statistic", *METRICS]))
    for key, side in (("missing_predictions", "reference cases without a prediction"),
                      ("missing_references", "predicted cases without a reference")):
        if summary[key]:
            click.echo(f"warning: {len(summary[key])} {side}, not scored: {_listing(summary[key])}", err=True)
    folder = Path(output_dir or prediction_dir)
    click.echo("wrote " + ", ".join(str(folder / name) for name in written))


if __name__ == "__main__":
    main()
