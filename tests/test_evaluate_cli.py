"""rbmnet_evaluate end to end on tiny mask folders: matching, missing cases, errors and exit codes, and
numbered teeth (detection of binary vs numbered folders, the numbering, the report and the chart)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rbmnet.cli.evaluate import evaluate_folders, main
from rbmnet.io.images import write_png


def square(size=8, top=2, left=2, side=4, value=255):
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + side, left:left + side] = value
    return mask


@pytest.fixture
def folders(tmp_path):
    """References a, b, c; predictions a (perfect), b (shifted), d (no reference). c has no prediction."""
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    write_png(reference / "a.png", square(value=1))      # label map style
    write_png(reference / "b.png", square(value=1))
    write_png(reference / "c.png", square())
    write_png(prediction / "a.png", square())             # 0/255 mask style
    write_png(prediction / "b.png", square(left=4))       # overlaps 8 of 16 pixels
    write_png(prediction / "d.png", square())
    return reference, prediction


def test_cli_scores_common_cases_and_reports_missing(folders, tmp_path):
    reference, prediction = folders
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_cases"] == 2
    assert summary["missing_predictions"] == ["c"]
    assert summary["missing_references"] == ["d"]
    by_case = {row["case"]: row for row in summary["per_case"]}
    assert by_case["a"]["dice"] == 1.0
    assert by_case["b"]["dice"] == pytest.approx(2 * 8 / (2 * 8 + 8 + 8))
    assert by_case["b"]["precision"] == pytest.approx(0.5)
    assert summary["mean"]["dice"] == pytest.approx((1.0 + 0.5) / 2)
    assert (out / "summary.csv").is_file()
    assert "warning: 1 reference cases without a prediction, not scored: c" in result.stderr
    assert "warning: 1 predicted cases without a reference, not scored: d" in result.stderr
    assert "mean" in result.stdout and "0.7500" in result.stdout


def test_default_output_is_the_prediction_folder(folders):
    reference, prediction = folders
    summary = evaluate_folders(reference, prediction)
    assert (prediction / "summary.json").is_file()
    assert summary["num_cases"] == 2
    # the summary files are not images: evaluating again sees the same cases
    assert evaluate_folders(reference, prediction)["num_cases"] == 2


def test_strict_turns_missing_cases_into_an_error(folders):
    reference, prediction = folders
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--strict"])
    assert result.exit_code == 2
    assert "c, d" in result.stderr and "Traceback" not in result.output


def test_labels_score_each_label(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4], labels[4:, 4:] = 1, 2
    write_png(reference / "x.png", labels)
    swapped = labels.copy()
    swapped[4:, 4:] = 0
    write_png(prediction / "x.png", swapped)
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--labels", "1,2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((prediction / "summary.json").read_text())
    assert summary["per_label"]["1"]["mean"]["dice"] == 1.0
    assert summary["per_label"]["2"]["mean"]["dice"] == 0.0
    assert CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--labels", "1,x"]).exit_code == 2


@pytest.mark.parametrize("problem, message", [
    ("empty", "holds no images"),
    ("absent", "does not exist"),
    ("no_common", "no case"),
    ("size", "case 'a'"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, problem, message):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    write_png(reference / "a.png", square())
    prediction.mkdir()
    if problem == "absent":
        prediction = tmp_path / "nowhere"
    elif problem == "no_common":
        write_png(prediction / "z.png", square())
    elif problem == "size":
        write_png(prediction / "a.png", square(size=10))
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def teeth_map(teeth: dict[int, tuple[int, int]], size: int = 12) -> np.ndarray:
    """A label map with a 4 x 4 tooth of each number at (top, left)."""
    label_map = np.zeros((size, size), np.uint8)
    for number, (top, left) in teeth.items():
        label_map[top:top + 4, left:left + 4] = number
    return label_map


@pytest.fixture
def numbered(tmp_path):
    """FDI references x, y (teeth 11 and 21, 11 and 36); prediction x perfect, y gives 36 its contralateral
    number 46 and misses 11."""
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    write_png(reference / "x.png", teeth_map({11: (0, 0), 21: (0, 6)}))
    write_png(prediction / "x.png", teeth_map({11: (0, 0), 21: (0, 6)}))
    write_png(reference / "y.png", teeth_map({11: (0, 0), 36: (6, 6)}))
    write_png(prediction / "y.png", teeth_map({46: (6, 6)}))
    return reference, prediction


def test_numbered_teeth_are_scored_by_number(numbered):
    reference, prediction = numbered
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction)])
    assert result.exit_code == 0, result.output
    summary = json.loads((prediction / "summary.json").read_text())
    assert summary["evaluation"] == "numbered teeth"
    assert summary["numbering"] == "FDI" and summary["numbering_source"].startswith("detected")
    by_case = {row["case"]: row for row in summary["per_case"]}
    assert by_case["x"]["tooth_dice"] == 1.0 and by_case["x"]["identification_accuracy"] == 1.0
    y = by_case["y"]
    # numbers 11, 36, 46 on either side, none with any pixel right: tooth Dice 0; no tooth matched by number
    assert y["per_tooth_dice"] == {"11": 0.0, "36": 0.0, "46": 0.0}
    assert y["matched"] == 0 and y["identification_accuracy"] == 0.0  # 0 / (1 + 2 - 0)
    assert y["wrong_side"] == 1 and y["wrong_side_rate"] == 0.5  # 36 predicted as 46, of 2 reference teeth
    assert y["missed"] == 1 and y["extra"] == 0  # 11 missed; 46 lies on the reference 36 exactly
    assert y["binary_dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert summary["mean"]["identification_accuracy"] == 0.5
    assert summary["mean"]["wrong_side_rate"] == 0.25
    assert summary["sums"] == {"matched": 2, "predicted_teeth": 3, "reference_teeth": 4, "wrong_side": 1,
                               "missed": 1, "extra": 0}
    assert summary["pooled_identification_accuracy"] == pytest.approx(2 / (3 + 4 - 2))
    assert summary["per_tooth"]["21"] == {"dice_mean": 1.0, "cases": 1}
    chart = prediction / "dental_chart.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (prediction / "per_tooth.csv").is_file() and not (prediction / "dental_charts").exists()
    assert "identification_accuracy" in result.stdout and "wrong_side_rate" in result.stdout
    assert "pooled identification accuracy 0.4000" in result.stdout
    assert "1 missed, 0 extra, 1 on the wrong side (of 4 reference teeth)" in result.stdout


def test_a_second_run_in_the_same_folder_ignores_its_own_outputs(numbered):
    reference, prediction = numbered
    first = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--chart-per-case"])
    assert first.exit_code == 0, first.output
    assert {p.name for p in (prediction / "dental_charts").iterdir()} == {"x.png", "y.png"}
    assert (prediction / "dental_chart.png").is_file()
    second = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction)])
    assert second.exit_code == 0, second.output
    summary = json.loads((prediction / "summary.json").read_text())
    assert summary["num_cases"] == 2 and summary["missing_references"] == []
    assert "warning" not in second.stderr


def test_universal_numbering_is_detected_and_can_be_forced(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    # Universal 3 (upper right first molar) and 14 (upper left first molar) are contralateral; plus 8 and 9
    write_png(reference / "u.png", teeth_map({3: (0, 0), 8: (0, 6), 9: (6, 0)}))
    write_png(prediction / "u.png", teeth_map({14: (0, 0), 8: (0, 6), 9: (6, 0)}))
    summary = evaluate_folders(reference, prediction)
    assert summary["numbering"] == "universal"
    case = summary["per_case"][0]
    assert case["wrong_side"] == 1 and case["matched"] == 2
    assert case["identification_accuracy"] == pytest.approx(2 / (3 + 3 - 2))
    # the same values read as FDI are no tooth numbers: a one-line error, not a wrong score
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--numbering", "fdi"])
    assert result.exit_code == 2 and "are not FDI tooth numbers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_undetectable_numbering_asks_for_numbering(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    write_png(reference / "a.png", teeth_map({2: (0, 0), 3: (0, 6)}))  # two values: not surely Universal
    write_png(prediction / "a.png", teeth_map({2: (0, 0), 3: (0, 6)}))
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction)])
    assert result.exit_code == 2 and "pass --numbering" in result.stderr
    forced = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--numbering", "universal"])
    assert forced.exit_code == 0, forced.output
    summary = json.loads((prediction / "summary.json").read_text())
    assert summary["numbering"] == "universal" and summary["numbering_source"] == "--numbering"
    assert summary["mean"]["tooth_dice"] == 1.0


@pytest.mark.parametrize("numbered_side", ["reference", "prediction"])
def test_numbered_against_binary_is_a_one_line_error(tmp_path, numbered_side):
    folders = {"reference": tmp_path / "ref", "prediction": tmp_path / "pred"}
    for side, folder in folders.items():
        write_png(folder / "a.png", teeth_map({11: (0, 0), 21: (0, 6)}) if side == numbered_side
                  else square(size=12))
        write_png(folder / "b.png", square(size=12, value=1))  # binary on both sides
    result = CliRunner().invoke(main, ["-r", str(folders["reference"]), "-p", str(folders["prediction"])])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in result.output
    assert "--binary" in message
    binary_side = "prediction" if numbered_side == "reference" else "reference"
    assert f"{numbered_side}s in {folders[numbered_side]} are numbered tooth label maps (e.g. a.png" in message
    assert f"{binary_side}s in {folders[binary_side]} are binary masks" in message
    assert not (folders["prediction"] / "summary.json").exists()


def test_binary_flag_scores_numbered_maps_as_tooth_vs_background(numbered):
    reference, prediction = numbered
    result = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--binary"])
    assert result.exit_code == 0, result.output
    summary = json.loads((prediction / "summary.json").read_text())
    assert summary["evaluation"] == "binary" and summary["foreground"] == "value > 0"
    by_case = {row["case"]: row for row in summary["per_case"]}
    assert by_case["x"]["dice"] == 1.0
    assert by_case["y"]["dice"] == pytest.approx(2 * 16 / (16 + 32))  # the numbers do not matter
    assert not (prediction / "dental_chart.png").exists()
    conflicting = CliRunner().invoke(main, ["-r", str(reference), "-p", str(prediction), "--binary",
                                            "--numbering", "FDI"])
    assert conflicting.exit_code == 2 and "--numbering" in conflicting.stderr


def test_empty_predictions_take_the_references_kind(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    write_png(reference / "a.png", teeth_map({11: (0, 0), 21: (0, 6)}))
    write_png(prediction / "a.png", np.zeros((12, 12), np.uint8))
    summary = evaluate_folders(reference, prediction)
    assert summary["evaluation"] == "numbered teeth"
    assert summary["per_case"][0]["missed"] == 2 and summary["mean"]["tooth_dice"] == 0.0
