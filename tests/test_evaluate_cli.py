"""rbmnet_evaluate end to end on tiny mask folders: matching, missing cases, errors and exit codes."""
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
    write_png(reference / "b.png", square(value=11))
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
