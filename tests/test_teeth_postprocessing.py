"""Teeth post-processing variants on constructed label maps, the size rule and the cross-validated choice."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rbmnet.errors import RbmnetError
from rbmnet.data.numbering import NUMBERINGS
from rbmnet.tasks.teeth_postprocessing import (VARIANTS, apply_postprocessing, decide_postprocessing,
                                               drop_small_components, largest_component_per_tooth, min_tooth_size,
                                               one_number_per_tooth)

FDI = NUMBERINGS["FDI"]


def two_teeth(shape=(12, 20)) -> np.ndarray:
    """Reference: tooth 11 and tooth 21 as 5x5 blocks (25 pixels each)."""
    label_map = np.zeros(shape, dtype=np.uint8)
    label_map[0:5, 0:5] = 11
    label_map[0:5, 10:15] = 21
    return label_map


def with_specks(reference: np.ndarray) -> np.ndarray:
    """Tooth 11 found on 20 of its 25 pixels, plus three 3x3 specks of 11 far away (27 pixels)."""
    prediction = reference.copy()
    prediction[0:5, 4] = 0
    for row, column in ((8, 0), (8, 8), (8, 16)):
        prediction[row:row + 3, column:column + 3] = 11
    return prediction


def split_into_three_numbers(reference: np.ndarray) -> np.ndarray:
    """Tooth 11 carries 11 on 10 pixels, 12 on 8 and 13 on 7: 11 holds the plurality but IoU 0.4."""
    prediction = reference.copy()
    prediction[2:4, 0:4] = 12
    prediction[2:4, 4] = 13
    prediction[4, 0:5] = 13
    return prediction


def test_largest_component_per_tooth_removes_stray_blob_and_keeps_diagonal_neighbours():
    label_map = np.zeros((6, 8), dtype=np.uint8)
    label_map[0:2, 0:2] = 11
    label_map[2, 2] = 11  # touches the tooth diagonally: same component under 8-connectivity
    label_map[5, 7] = 11  # stray blob
    label_map[4:6, 0:2] = 21  # a lone tooth stays whatever its size
    result = largest_component_per_tooth(label_map)
    expected = label_map.copy()
    expected[5, 7] = 0
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == label_map.dtype
    np.testing.assert_array_equal(largest_component_per_tooth(np.zeros((3, 3), np.uint8)), 0)


def test_drop_small_components_removes_components_below_min_size():
    label_map = np.zeros((6, 8), dtype=np.uint8)
    label_map[0:2, 0:2] = 11  # 4 pixels: kept at min_size 4
    label_map[4, 0:3] = 11  # 3 pixels: dropped
    label_map[0:3, 5] = 21  # 3 pixels: dropped
    result = drop_small_components(label_map, min_size=4)
    expected = np.zeros_like(label_map)
    expected[0:2, 0:2] = 11
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(drop_small_components(label_map, min_size=3), label_map)


def test_one_number_per_tooth_unifies_a_split_tooth():
    reference = two_teeth()
    np.testing.assert_array_equal(one_number_per_tooth(split_into_three_numbers(reference)), reference)
    # a tie goes to the smaller number; separate regions keep their own numbers
    label_map = np.zeros((3, 8), dtype=np.uint8)
    label_map[0, 0:2] = 12
    label_map[1, 0:2] = 11
    label_map[0:2, 5:7] = 31
    result = one_number_per_tooth(label_map)
    assert set(np.unique(result[0:2, 0:2])) == {11}
    np.testing.assert_array_equal(result[:, 4:], label_map[:, 4:])
    assert result.dtype == np.uint8


def test_min_tooth_size_is_half_the_first_percentile_of_tooth_areas():
    first = np.zeros((10, 10), dtype=np.uint8)
    first[0:2, 0:5] = 11  # 10 pixels
    second = np.zeros((10, 10), dtype=np.uint8)
    second[0:5, 0:6] = 11  # 30 pixels: the same number in another map is another tooth
    second[6:8, 0:4] = 21  # 8 pixels ...
    second[9, 0:4] = 21  # ... and 4 apart: two components, one tooth of 12 pixels
    areas = np.array([10, 30, 12])
    assert min_tooth_size([first, second]) == int(np.floor(0.5 * np.percentile(areas, 1)))
    # by hand: sorted areas 10, 12, 30; 1st percentile = 10 + 0.02 * 2 = 10.04; half = 5.02
    assert min_tooth_size([first, second]) == 5
    assert min_tooth_size([first, second], scale=2.0) == 10
    assert isinstance(min_tooth_size(iter([first])), int)
    with pytest.raises(RbmnetError, match="no teeth"):
        min_tooth_size([np.zeros((4, 4), np.uint8)])


def test_decide_picks_largest_component_for_stray_specks():
    reference = two_teeth()
    cases = [(with_specks(reference), reference), (reference.copy(), reference)]
    candidates = ["largest_component_and_min_size", "largest_component", "one_number_per_tooth"]
    decision = decide_postprocessing(cases, FDI, {"min_size": 22}, candidates)
    assert decision["chosen"] == "largest_component"
    scores = decision["scores"]
    assert list(scores) == ["none", *candidates]
    # none: tooth 11 at IoU 20 / 52, unmatched (1 / 3), and a clean case (1)
    assert scores["none"]["identification_accuracy"] == pytest.approx((1 / 3 + 1) / 2)
    assert scores["largest_component"]["identification_accuracy"] == 1.0
    assert scores["largest_component"]["tooth_dice"] == pytest.approx(((2 * 20 / 45 + 1) / 2 + 1) / 2)
    assert scores["largest_component"]["num_cases"] == 2
    # min_size 22 drops the 20-pixel tooth: worse; one number per tooth ties and comes later
    assert scores["largest_component_and_min_size"]["identification_accuracy"] < 1.0
    assert scores["one_number_per_tooth"] == scores["largest_component"]
    assert decision["params"] == {"min_size": 22} and "strictly" in decision["rule"]
    assert json.loads(json.dumps(decision)) == decision


def test_decide_picks_one_number_per_tooth_for_a_split_tooth():
    reference = two_teeth()
    cases = [(split_into_three_numbers(reference), reference)]
    decision = decide_postprocessing(cases, FDI, {}, ["largest_component", "one_number_per_tooth"])
    assert decision["chosen"] == "one_number_per_tooth"
    # none: 11 at IoU 0.4, 12 and 13 extra: 1 / (4 + 2 - 1); largest component changes nothing
    assert decision["scores"]["none"]["identification_accuracy"] == pytest.approx(1 / 5)
    assert decision["scores"]["largest_component"] == decision["scores"]["none"]
    assert decision["scores"]["one_number_per_tooth"]["identification_accuracy"] == 1.0


def test_decide_keeps_none_when_nothing_improves_strictly():
    reference = two_teeth()
    clean = reference.copy()
    clean[0:5, 4] = 0  # imperfect but clean: post-processing cannot help
    decision = decide_postprocessing([(clean, reference), (reference.copy(), reference)], FDI, {"min_size": 3},
                                     list(VARIANTS))
    assert decision["chosen"] == "none"
    assert set(decision["scores"]) == set(VARIANTS)
    assert all(score == decision["scores"]["none"] for score in decision["scores"].values())


def test_decide_needs_both_metrics_to_improve():
    # a speck far away that does not unmatch the tooth: removing it raises Dice only
    reference = two_teeth()
    prediction = reference.copy()
    prediction[10, 19] = 21
    decision = decide_postprocessing([(prediction, reference)], FDI, {}, ["largest_component"])
    scores = decision["scores"]
    assert scores["largest_component"]["tooth_dice"] > scores["none"]["tooth_dice"]
    assert scores["largest_component"]["identification_accuracy"] == scores["none"]["identification_accuracy"]
    assert decision["chosen"] == "none"


def test_decide_rejects_unknown_variants_missing_params_and_no_cases():
    reference = two_teeth()
    with pytest.raises(RbmnetError, match="unknown"):
        decide_postprocessing([(reference, reference)], FDI, {}, ["fill_holes"])
    with pytest.raises(RbmnetError, match="min_size"):
        decide_postprocessing([(reference, reference)], FDI, {}, ["largest_component_and_min_size"])
    with pytest.raises(RbmnetError, match="no validation cases"):
        decide_postprocessing([], FDI, {}, ["largest_component"])


def test_apply_postprocessing_round_trip_through_json():
    reference = two_teeth()
    prediction = with_specks(reference)
    decision = decide_postprocessing([(prediction, reference)], FDI, {"min_size": 5},
                                     ["largest_component_and_min_size"])
    assert decision["chosen"] == "largest_component_and_min_size"
    stored = json.loads(json.dumps(decision))
    expected = reference.copy()
    expected[0:5, 4] = 0
    np.testing.assert_array_equal(apply_postprocessing(prediction, stored), expected)
    np.testing.assert_array_equal(apply_postprocessing(prediction, {"chosen": "none", "params": {}}), prediction)
    with pytest.raises(RbmnetError, match="unknown"):
        apply_postprocessing(prediction, {"chosen": "fill_holes", "params": {}})
