"""Numbered-teeth metrics on hand-made label maps with answers worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from rbmnet.evaluation.numbering_metrics import TEETH_COUNTS, TEETH_METRICS, summarize_teeth, teeth_case_metrics
from rbmnet.data.numbering import NUMBERINGS

FDI = NUMBERINGS["FDI"]
UNIVERSAL = NUMBERINGS["universal"]


def teeth_map(*teeth: tuple[int, slice, slice], shape=(8, 12)) -> np.ndarray:
    """A uint8 label map with each (number, rows, columns) block painted in."""
    label_map = np.zeros(shape, dtype=np.uint8)
    for number, rows, columns in teeth:
        label_map[rows, columns] = number
    return label_map


# three 2x2 teeth (4 pixels each) in a row: 11, 21, 31
THREE_TEETH = teeth_map((11, slice(0, 2), slice(0, 2)), (21, slice(0, 2), slice(4, 6)), (31, slice(0, 2), slice(8, 10)))


def test_perfect_prediction_scores_one_everywhere():
    m = teeth_case_metrics(THREE_TEETH, THREE_TEETH, FDI)
    assert m["per_tooth_dice"] == {11: 1.0, 21: 1.0, 31: 1.0}
    assert m["tooth_dice"] == 1.0 and m["identification_accuracy"] == 1.0 and m["binary_dice"] == 1.0
    assert (m["matched"], m["predicted_teeth"], m["reference_teeth"]) == (3, 3, 3)
    assert (m["wrong_side"], m["wrong_side_rate"], m["missed"], m["extra"]) == (0, 0.0, 0, 0)
    assert set(TEETH_METRICS) | set(TEETH_COUNTS) <= set(m)


def test_contralateral_number_is_wrong_side_and_unmatched():
    # reference tooth 11 predicted as 21 (its contralateral) where nothing else is 21
    reference = teeth_map((11, slice(0, 2), slice(0, 2)), (31, slice(0, 2), slice(8, 10)))
    prediction = teeth_map((21, slice(0, 2), slice(0, 2)), (31, slice(0, 2), slice(8, 10)))
    m = teeth_case_metrics(prediction, reference, FDI)
    assert (m["wrong_side"], m["wrong_side_rate"]) == (1, 0.5)
    assert m["matched"] == 1  # only 31
    # union of teeth: predicted {21, 31} + reference {11, 31} - matched {31} = 3
    assert m["identification_accuracy"] == pytest.approx(1 / 3)
    assert m["per_tooth_dice"] == {11: 0.0, 21: 0.0, 31: 1.0}
    assert m["tooth_dice"] == pytest.approx(1 / 3)
    # the mislabelled tooth is still found as a tooth: neither missed nor extra
    assert (m["missed"], m["extra"]) == (0, 0)
    assert m["binary_dice"] == 1.0


def test_wrong_side_needs_the_contralateral_number_to_hold_the_plurality():
    reference = teeth_map((11, slice(0, 2), slice(0, 4)))  # 8 pixels
    # 3 pixels as 21 (contralateral), 5 as 12: the plurality is 12, not the wrong side
    prediction = teeth_map((21, slice(0, 2), slice(0, 1)), (21, slice(0, 1), slice(1, 2)),
                           (12, slice(1, 2), slice(1, 4)), (12, slice(0, 1), slice(2, 4)))
    assert np.count_nonzero(prediction == 21) == 3 and np.count_nonzero(prediction == 12) == 5
    assert teeth_case_metrics(prediction, reference, FDI)["wrong_side"] == 0
    # background pixels do not vote: 3 as 21 and 5 as background is the wrong side
    prediction[prediction == 12] = 0
    assert teeth_case_metrics(prediction, reference, FDI)["wrong_side"] == 1


def test_wrong_side_in_universal_numbering():
    # Universal 3 (upper right first molar) and 14 (upper left first molar) are contralateral
    assert UNIVERSAL.contralateral(3) == 14
    reference = teeth_map((3, slice(0, 2), slice(0, 2)), (30, slice(4, 6), slice(0, 2)))
    prediction = teeth_map((14, slice(0, 2), slice(0, 2)), (30, slice(4, 6), slice(0, 2)))
    m = teeth_case_metrics(prediction, reference, UNIVERSAL)
    assert (m["wrong_side"], m["wrong_side_rate"], m["matched"]) == (1, 0.5, 1)
    assert m["identification_accuracy"] == pytest.approx(1 / 3)
    # a neighbour's number (3 -> 4) is a wrong number but not the wrong side
    prediction[prediction == 14] = 4
    assert teeth_case_metrics(prediction, reference, UNIVERSAL)["wrong_side"] == 0


def test_missed_tooth():
    prediction = teeth_map((11, slice(0, 2), slice(0, 2)), (21, slice(0, 2), slice(4, 6)))
    m = teeth_case_metrics(prediction, THREE_TEETH, FDI)
    assert (m["missed"], m["extra"], m["matched"]) == (1, 0, 2)
    assert (m["predicted_teeth"], m["reference_teeth"]) == (2, 3)
    assert m["identification_accuracy"] == pytest.approx(2 / 3)  # 2 / (2 + 3 - 2)
    assert m["per_tooth_dice"] == {11: 1.0, 21: 1.0, 31: 0.0}
    assert m["tooth_dice"] == pytest.approx(2 / 3)
    assert m["binary_dice"] == pytest.approx(2 * 8 / (8 + 12))
    assert m["binary_recall"] == pytest.approx(8 / 12) and m["binary_precision"] == 1.0


def test_extra_tooth():
    prediction = THREE_TEETH.copy()
    prediction[5:7, 0:2] = 41
    m = teeth_case_metrics(prediction, THREE_TEETH, FDI)
    assert (m["missed"], m["extra"], m["matched"]) == (0, 1, 3)
    assert m["identification_accuracy"] == pytest.approx(3 / 4)  # 3 / (4 + 3 - 3)
    assert m["per_tooth_dice"][41] == 0.0 and m["tooth_dice"] == pytest.approx(3 / 4)
    assert m["wrong_side"] == 0


def test_two_reference_teeth_merged_into_one_predicted_number():
    # reference: 11 on 6 pixels, 12 on 2 pixels; prediction: all 8 pixels as 11
    reference = teeth_map((11, slice(0, 2), slice(0, 3)), (12, slice(0, 2), slice(3, 4)))
    prediction = teeth_map((11, slice(0, 2), slice(0, 4)))
    m = teeth_case_metrics(prediction, reference, FDI)
    # IoU(11, 11) = 6 / 8 >= 0.5: matched; IoU(pred 11, ref 12) = 2 / 8: ref 12 missed
    assert (m["matched"], m["missed"], m["extra"]) == (1, 1, 0)
    assert (m["predicted_teeth"], m["reference_teeth"]) == (1, 2)
    assert m["identification_accuracy"] == pytest.approx(1 / 2)  # 1 / (1 + 2 - 1)
    assert m["per_tooth_dice"] == pytest.approx({11: 2 * 6 / (8 + 6), 12: 0.0})
    assert m["tooth_dice"] == pytest.approx(3 / 7)
    assert m["binary_dice"] == 1.0


def test_iou_of_exactly_one_half_matches():
    # reference 11 and 12 on 4 pixels each, prediction 11 on all 8: IoU 4 / 8 with both
    reference = teeth_map((11, slice(0, 2), slice(0, 2)), (12, slice(0, 2), slice(2, 4)))
    prediction = teeth_map((11, slice(0, 2), slice(0, 4)))
    m = teeth_case_metrics(prediction, reference, FDI)
    assert (m["matched"], m["missed"], m["extra"]) == (1, 0, 0)
    assert m["identification_accuracy"] == pytest.approx(1 / 2)


def test_both_empty_is_perfect_agreement():
    empty = np.zeros((4, 4), dtype=np.uint8)
    m = teeth_case_metrics(empty, empty, FDI)
    assert m["per_tooth_dice"] == {}
    assert m["tooth_dice"] == 1.0 and m["identification_accuracy"] == 1.0 and m["binary_dice"] == 1.0
    assert (m["matched"], m["predicted_teeth"], m["reference_teeth"]) == (0, 0, 0)
    assert (m["wrong_side"], m["wrong_side_rate"], m["missed"], m["extra"]) == (0, 0.0, 0, 0)


def test_one_side_empty_scores_zero():
    empty = np.zeros_like(THREE_TEETH)
    m = teeth_case_metrics(empty, THREE_TEETH, FDI)
    assert (m["tooth_dice"], m["identification_accuracy"], m["binary_dice"]) == (0.0, 0.0, 0.0)
    assert (m["missed"], m["extra"]) == (3, 0)
    m = teeth_case_metrics(THREE_TEETH, empty, FDI)
    assert (m["tooth_dice"], m["identification_accuracy"], m["wrong_side_rate"]) == (0.0, 0.0, 0.0)
    assert (m["missed"], m["extra"]) == (0, 3)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        teeth_case_metrics(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), FDI)


def test_summary_means_counts_and_per_tooth():
    perfect = teeth_case_metrics(THREE_TEETH, THREE_TEETH, FDI)
    only_11 = teeth_map((11, slice(0, 2), slice(0, 2)))
    half = teeth_map((11, slice(0, 1), slice(0, 2)))  # 11 at Dice 2/3, IoU 1/2: matched
    partial = teeth_case_metrics(half, only_11, FDI)  # 21 and 31 absent on both sides
    summary = summarize_teeth([perfect, partial])
    assert summary["num_cases"] == 2
    assert summary["mean"]["tooth_dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert summary["median"]["identification_accuracy"] == 1.0
    assert summary["std"]["tooth_dice"] == pytest.approx((1 - 2 / 3) / 2)
    assert set(summary["mean"]) == set(TEETH_METRICS)
    assert summary["sums"] == {"matched": 4, "predicted_teeth": 4, "reference_teeth": 4,
                                    "wrong_side": 0, "missed": 0, "extra": 0}
    assert summary["pooled_identification_accuracy"] == 1.0
    # 21 and 31 average over the one case that has them, not over both
    assert summary["per_tooth"] == {"11": {"dice_mean": pytest.approx((1 + 2 / 3) / 2), "cases": 2},
                                    "21": {"dice_mean": 1.0, "cases": 1},
                                    "31": {"dice_mean": 1.0, "cases": 1}}


def test_summary_pools_identification_over_all_teeth():
    missed = teeth_case_metrics(teeth_map((11, slice(0, 2), slice(0, 2))), THREE_TEETH, FDI)  # 1 / 3
    perfect = teeth_case_metrics(THREE_TEETH, THREE_TEETH, FDI)
    summary = summarize_teeth([missed, perfect])
    assert summary["mean"]["identification_accuracy"] == pytest.approx((1 / 3 + 1) / 2)
    assert summary["pooled_identification_accuracy"] == pytest.approx(4 / (4 + 6 - 4))
    # per-case dicts read back from JSON carry str keys
    as_json = [{**case, "per_tooth_dice": {str(k): v for k, v in case["per_tooth_dice"].items()}}
               for case in (missed, perfect)]
    assert summarize_teeth(as_json)["per_tooth"] == summary["per_tooth"]
