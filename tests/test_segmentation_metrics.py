"""Segmentation metrics on hand-made masks, the empty rule, summaries and cross-validation reports."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rbmnet.evaluation.reports import (crossval_summary, format_table, json_ready, write_crossval_summary,
                                       write_segmentation_summary)
from rbmnet.evaluation.segmentation_metrics import case_metrics, case_metrics_multiclass, summarize


def masks(rows_prediction: list[str], rows_reference: list[str]):
    as_array = lambda rows: np.array([[c == "#" for c in row] for row in rows])
    return as_array(rows_prediction), as_array(rows_reference)


def test_known_counts_and_metrics_on_4x4():
    prediction, reference = masks(["##..", "##..", "....", "...."],
                                  ["#...", "##..", "#...", "...."])
    m = case_metrics(prediction, reference)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 11)
    assert m["dice"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert m["jaccard"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert all(isinstance(m[k], int) for k in ("tp", "fp", "fn", "tn"))


def test_asymmetric_precision_recall_and_label_values():
    # prediction as a 0/255 mask, reference as a label map with tooth numbers: nonzero is foreground
    prediction = np.array([[255, 255, 255, 0]], dtype=np.uint8)
    reference = np.array([[11, 0, 0, 0]], dtype=np.uint8)
    m = case_metrics(prediction, reference)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 2, 0, 1)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == 1.0
    assert m["dice"] == pytest.approx(2 / 4)


def test_empty_rule():
    empty = np.zeros((4, 4), bool)
    some = empty.copy()
    some[1, 1:3] = True
    both = case_metrics(empty, empty)
    assert [both[k] for k in ("dice", "jaccard", "precision", "recall")] == [1.0, 1.0, 1.0, 1.0]
    assert both["tn"] == 16
    empty_prediction = case_metrics(empty, some)
    assert [empty_prediction[k] for k in ("dice", "jaccard", "precision", "recall")] == [0.0] * 4
    assert empty_prediction["fn"] == 2
    empty_reference = case_metrics(some, empty)
    assert [empty_reference[k] for k in ("dice", "jaccard", "precision", "recall")] == [0.0] * 4
    assert empty_reference["fp"] == 2


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((4, 4)), np.zeros((4, 5)))


def test_multiclass_scores_each_label():
    prediction = np.array([[1, 1, 2, 0]])
    reference = np.array([[1, 2, 2, 0]])
    by_label = case_metrics_multiclass(prediction, reference, [1, 2, 3])
    assert by_label[1]["dice"] == pytest.approx(2 / 3)  # tp 1, fp 1
    assert by_label[2]["dice"] == pytest.approx(2 / 3)  # tp 1, fn 1
    assert by_label[3]["dice"] == 1.0  # absent on both sides: empty rule


def test_summary_agrees_with_per_case(tmp_path):
    rng = np.random.default_rng(0)
    per_case = []
    for index in range(5):
        reference = rng.random((8, 8)) > 0.5
        prediction = reference ^ (rng.random((8, 8)) > 0.8)
        per_case.append({"case": f"case_{index}", **case_metrics(prediction, reference)})
    summary = write_segmentation_summary(tmp_path, per_case, {"fraction": 0.2, "seed": 7, "model_id": "m", "fold": 1})
    dice = np.array([c["dice"] for c in per_case])
    assert summary["mean"]["dice"] == pytest.approx(dice.mean())
    assert summary["median"]["dice"] == pytest.approx(np.median(dice))
    assert summary["std"]["dice"] == pytest.approx(dice.std(ddof=0))
    assert summary["aggregate"]["tp"] == sum(c["tp"] for c in per_case)
    assert summarize(per_case)["std"] == summary["std"]  # the file holds exactly what training computes
    with pytest.raises(ValueError):
        summarize([])

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["num_cases"] == 5 and on_disk["fraction"] == 0.2 and on_disk["fold"] == 1
    assert on_disk["mean"]["recall"] == pytest.approx(np.mean([c["recall"] for c in per_case]))
    assert [c["case"] for c in on_disk["per_case"]] == [f"case_{i}" for i in range(5)]
    assert "empty" in on_disk["empty_rule"]
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table["case"]) == [f"case_{i}" for i in range(5)] + ["mean", "median", "std", "sum"]
    assert table.set_index("case").loc["mean", "jaccard"] == pytest.approx(summary["mean"]["jaccard"])
    assert table.set_index("case").loc["sum", "fn"] == summary["aggregate"]["fn"]


def test_summary_with_labels_has_per_label_statistics(tmp_path):
    per_case = [{"case": "a", "label": 1, **case_metrics(np.ones((2, 2)), np.ones((2, 2)))},
                {"case": "a", "label": 2, **case_metrics(np.zeros((2, 2)), np.ones((2, 2)))}]
    summary = write_segmentation_summary(tmp_path, per_case)
    assert summary["per_label"]["1"]["mean"]["dice"] == 1.0
    assert summary["per_label"]["2"]["mean"]["dice"] == 0.0
    assert summary["mean"]["dice"] == 0.5
    assert summary["num_cases"] == 1 and summary["per_label"]["2"]["num_cases"] == 1
    assert list(pd.read_csv(tmp_path / "summary.csv").columns[:2]) == ["case", "label"]


def test_crossval_mean_and_std_of_fold_means(tmp_path):
    folds = {k: {"mean": {"dice": d, "jaccard": d - 0.1, "precision": 0.9, "recall": 0.8}, "num_cases": 3,
                 "model_id": "rbm", "seed": k}
             for k, d in zip(range(5), [0.8, 0.9, 0.7, 0.85, 0.75])}
    result = crossval_summary(folds)
    assert result["model_id"] == "rbm" and "seed" not in result  # carried over only when all folds agree
    assert result["folds"] == [0, 1, 2, 3, 4]
    assert result["mean"]["dice"] == pytest.approx(0.8)
    assert result["std"]["dice"] == pytest.approx(np.std([0.8, 0.9, 0.7, 0.85, 0.75]))
    assert result["std"]["precision"] == pytest.approx(0.0)
    written = write_crossval_summary(tmp_path, folds, {"fraction": 0.1})
    on_disk = json.loads((tmp_path / "crossval_summary.json").read_text())
    assert on_disk["mean"]["jaccard"] == pytest.approx(0.7) and on_disk["fraction"] == 0.1
    table = pd.read_csv(tmp_path / "crossval_summary.csv", dtype={"fold": str})
    assert list(table["fold"]) == ["0", "1", "2", "3", "4", "mean", "std"]
    assert table.iloc[2]["dice"] == pytest.approx(0.7)
    assert written["fold_means"]["3"]["dice"] == 0.85
    # an already computed result is written as it is
    assert write_crossval_summary(tmp_path / "again", result)["mean"] == result["mean"]
    assert json.loads((tmp_path / "again" / "crossval_summary.json").read_text())["folds"] == [0, 1, 2, 3, 4]


def test_format_table_aligns_columns():
    text = format_table([{"statistic": "mean", "dice": 0.5}, {"statistic": "std", "dice": 0.123456}],
                        ["statistic", "dice"])
    lines = text.splitlines()
    assert len(lines) == 3 and "0.1235" in lines[2] and "0.5000" in lines[1]
    assert len({len(line) for line in lines}) == 1  # aligned: equal widths


def test_json_ready_turns_nan_into_null():
    assert json_ready({"a": float("nan"), "b": [np.float32(1.5), float("inf")]}) == {"a": None, "b": [1.5, None]}
