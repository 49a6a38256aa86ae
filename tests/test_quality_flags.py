"""quality.csv: the members' agreement (known answers on hand-made maps, and the real folds of tiny models),
the tooth area, tooth count and duplicated numbers, --flag-below, the single-fold note and --continue."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from rbmnet.cli.predict import main as predict_cli
from rbmnet.inference.predictor import load_ensemble
from rbmnet.inference.quality import AGREEMENT_PIXELS, QUALITY_CSV, duplicated_numbers, member_agreement, pairwise_dice
from rbmnet.io.atomic import read_json, write_json
from rbmnet.io.images import read_image, read_label, write_png
from rbmnet.preprocessing.transforms import preprocess_image
from test_predict import MODEL_ID, make_model_folder
from training_factory import TINY_PLAN, train_tiny_fold

BINARY_COLUMNS = ["file", "flagged", "agreement", "fold_agreement", "tta_agreement", "tooth_pixels",
                  "tooth_fraction"]
TEETH_COLUMNS = ["file", "flagged", "agreement", "fold_agreement", "tta_agreement", "fold_number_agreement",
                 "tta_number_agreement", "tooth_pixels", "tooth_fraction", "teeth", "duplicated_numbers"]


def square(shape, rows, cols, value=1):
    label_map = np.zeros(shape, np.uint8)
    label_map[rows, cols] = value
    return label_map


def test_pairwise_dice_has_the_known_answers():
    a = square((1, 8, 8), slice(0, 4), slice(0, 4))[None]
    b = square((1, 8, 8), slice(4, 8), slice(4, 8))[None]
    half = square((1, 8, 8), slice(0, 4), slice(0, 2))[None]  # half of a
    empty = np.zeros_like(a)
    assert pairwise_dice(np.concatenate([a, a, a])) == pytest.approx([1.0])
    assert pairwise_dice(np.concatenate([a, b])) == pytest.approx([0.0])
    assert pairwise_dice(np.concatenate([a, half])) == pytest.approx([2 * 8 / (16 + 8)])
    assert pairwise_dice(np.concatenate([a, a, b])) == pytest.approx([(1 + 0 + 0) / 3])  # mean over the 3 pairs
    assert pairwise_dice(np.concatenate([empty, empty])) == pytest.approx([1.0])  # the metrics' empty rule
    assert pairwise_dice(np.concatenate([a, empty])) == pytest.approx([0.0])
    assert np.isnan(pairwise_dice(a)).all()  # one member: nothing to compare
    # numbered: the same pixels under another number are tooth agreement but no number agreement
    renumbered = np.where(a > 0, 21, 0).astype(np.uint8)
    numbered_a = np.where(a > 0, 11, 0).astype(np.uint8)
    assert pairwise_dice(np.concatenate([numbered_a, renumbered])) == pytest.approx([1.0])
    assert pairwise_dice(np.concatenate([numbered_a, renumbered]), numbered=True) == pytest.approx([0.0])
    # a batch is scored per image
    both = pairwise_dice(np.stack([np.concatenate([a[0], a[0]]), np.concatenate([a[0], b[0]])]))
    assert both == pytest.approx([1.0, 0.0])


def test_member_agreement_prefers_folds_and_says_nan_without_members():
    a, b = square((1, 8, 8), slice(0, 4), slice(0, 4)), square((1, 8, 8), slice(4, 8), slice(4, 8))
    one_fold_no_tta = member_agreement([a], [[a]], numbered=False)[0]
    assert math.isnan(one_fold_no_tta["fold_agreement"]) and math.isnan(one_fold_no_tta["tta_agreement"])
    assert math.isnan(one_fold_no_tta["agreement"])
    one_fold_tta = member_agreement([a], [[a, b]], numbered=False)[0]
    assert math.isnan(one_fold_tta["fold_agreement"])
    assert one_fold_tta["agreement"] == one_fold_tta["tta_agreement"] == 0
    two_folds_tta = member_agreement([a, a], [[a, b], [a, a]], numbered=True)[0]
    assert two_folds_tta["fold_agreement"] == two_folds_tta["agreement"] == 1.0
    assert two_folds_tta["tta_agreement"] == pytest.approx(0.5)  # the mean of the folds' 0 and 1
    assert set(two_folds_tta) == {"agreement", "fold_agreement", "tta_agreement", "fold_number_agreement",
                                  "tta_number_agreement"}


def test_duplicated_numbers_are_sizeable_components_of_one_number():
    label_map = np.zeros((20, 40), np.uint8)
    label_map[2:10, 2:10] = 11  # 64 px
    label_map[2:8, 20:26] = 11  # 36 px, apart from the first: a second tooth numbered 11
    label_map[12:20, 2:10] = 12  # 64 px
    label_map[12:14, 30:32] = 12  # a 4 px speck: not a tooth
    label_map[12:20, 12:18] = 13
    label_map[12:20, 18:22] = 14  # touches 13: other numbers never join a component
    label_map[0, 39] = 15  # a lone speck is still one component
    assert duplicated_numbers(label_map) == [11]
    assert duplicated_numbers(label_map, sizeable_fraction=0.05) == [11, 12]
    diagonal = np.zeros((6, 6), np.uint8)
    diagonal[0:3, 0:3] = 21
    diagonal[3:6, 3:6] = 21  # touching at a corner: one 8-connected tooth
    assert duplicated_numbers(diagonal) == []


def _read_quality(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / QUALITY_CSV, dtype={"duplicated_numbers": str})


def _cli(*args: str):
    return CliRunner().invoke(predict_cli, [*args, "--quiet", "-np", "0"], catch_exceptions=False)


@pytest.fixture
def binary_setup(roots, tmp_path):
    folder = make_model_folder(roots["results"] / "Teeth", folds=(0, 1, 2))
    images = tmp_path / "in"
    rng = np.random.default_rng(0)
    for i in range(4):
        write_png(images / f"c{i}.png", rng.integers(0, 256, (37 + 3 * i, 91), dtype=np.uint8))
    return folder, images


def test_binary_quality_csv_and_flags(binary_setup, tmp_path):
    folder, images = binary_setup
    out = tmp_path / "out"
    result = _cli("-i", str(images), "-o", str(out), "-d", "Teeth", "--tta", "--flag-below", "0")
    assert result.exit_code == 0, result.output
    assert f"quality: {out / QUALITY_CSV} (flagging off)" in result.output
    quality = _read_quality(out)
    assert list(quality.columns) == BINARY_COLUMNS and list(quality["file"]) == [f"c{i}.png" for i in range(4)]
    assert quality["flagged"].isna().all()
    for row in quality.itertuples():
        mask = read_label(out / row.file)
        assert row.tooth_pixels == np.count_nonzero(mask) and row.tooth_fraction == pytest.approx(mask.mean() / 255)
        assert 0 <= row.fold_agreement <= 1 and 0 <= row.tta_agreement <= 1
        assert row.agreement == row.fold_agreement  # several folds: their agreement is the score

    # the score is the folds' mean pairwise Dice of their (TTA-averaged) masks on the thinned network output
    ensemble = load_ensemble(folder, ["0", "1", "2"], torch.device("cpu"))
    batch = np.stack([preprocess_image(read_image(images / "c0.png"), ensemble.plan.input_size,
                                       ensemble.plan.normalization)[0]])
    masks = [load_ensemble(folder, [f], torch.device("cpu")).predict(batch, tta=True)[AGREEMENT_PIXELS][0, 0] > 0.5
             for f in ("0", "1", "2")]
    dice = [2 * (m & n).sum() / (m.sum() + n.sum()) for m, n in ((masks[0], masks[1]), (masks[0], masks[2]),
                                                                  (masks[1], masks[2]))]
    assert quality.loc[0, "fold_agreement"] == pytest.approx(np.mean(dice))
    probabilities, agreement = ensemble.predict_with_agreement(batch, tta=True)
    np.testing.assert_array_equal(probabilities, ensemble.predict(batch, tta=True))  # measuring changes nothing
    assert agreement[0]["fold_agreement"] == pytest.approx(np.mean(dice))

    scores = sorted(quality["agreement"])
    assert scores[0] < scores[-1]
    between = (scores[0] + scores[-1]) / 2
    result = _cli("-i", str(images), "-o", str(tmp_path / "some"), "-d", "Teeth", "--tta", "--flag-below", f"{between}")
    expected = sum(score < between for score in scores)
    assert f"{expected} of 4 images flagged (agreement below {between:g})" in result.output
    flagged = _read_quality(tmp_path / "some")
    assert list(flagged["flagged"]) == [score < between for score in quality["agreement"]]
    result = _cli("-i", str(images), "-o", str(tmp_path / "none"), "-d", "Teeth", "--tta", "--flag-below",
                  f"{scores[0]}")
    assert "0 of 4 images flagged" in result.output and not _read_quality(tmp_path / "none")["flagged"].any()


def test_one_fold_without_tta_leaves_the_agreement_empty_and_says_so(binary_setup, tmp_path):
    _, images = binary_setup
    out = tmp_path / "out"
    result = _cli("-i", str(images), "-o", str(out), "-d", "Teeth", "-f", "0")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "one fold and no mirrored pass" in notes[0], result.output
    quality = _read_quality(out)
    for column in ("agreement", "fold_agreement", "tta_agreement", "flagged"):
        assert quality[column].isna().all()
    assert (quality["tooth_pixels"] >= 0).all()
    # with TTA the same fold has a score: the agreement of its two passes
    _cli("-i", str(images), "-o", str(tmp_path / "tta"), "-d", "Teeth", "-f", "0", "--tta")
    tta = _read_quality(tmp_path / "tta")
    assert tta["fold_agreement"].isna().all() and (tta["agreement"] == tta["tta_agreement"]).all()


def test_continue_keeps_the_rows_of_skipped_images_and_reflags_them(binary_setup, tmp_path):
    _, images = binary_setup
    out = tmp_path / "out"
    _cli("-i", str(images), "-o", str(out), "-d", "Teeth", "--flag-below", "0")
    first = _read_quality(out)
    (out / "c1.png").unlink()
    threshold = float(first["agreement"].max()) + 1e-9  # flags every image
    result = _cli("-i", str(images), "-o", str(out), "-d", "Teeth", "--continue", "--flag-below", f"{threshold}")
    assert "1 predicted, 3 skipped" in result.output and "4 of 4 images flagged" in result.output
    again = _read_quality(out)
    assert list(again["file"]) == list(first["file"]) and again["flagged"].all()
    pd.testing.assert_series_equal(again["agreement"], first["agreement"])


@pytest.fixture(scope="module")
def teeth_model(tmp_path_factory):
    """A classes-head teeth model, fold 0, a few iterations, no post-processing (saved map = decoded map)."""
    plan = {**TINY_PLAN, "segmentation.task": "teeth", "segmentation.numbering_head": "classes"}
    env, folder = train_tiny_fold(tmp_path_factory.mktemp("teeth"), plan, num_labeled=8, num_test=3)
    write_json(folder / "postprocessing.json", {**read_json(folder / "postprocessing.json"), "chosen": "none"})
    return env, folder


def test_teeth_quality_counts_teeth_and_duplicates(teeth_model, tmp_path, monkeypatch):
    env, _ = teeth_model
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    images = Path(env["RBMNET_RAW"]) / "Tiny" / "imagesTs"
    out = tmp_path / "out"
    result = _cli("-i", str(images), "-o", str(out), "-d", "Tiny", "--tta")
    assert result.exit_code == 0, result.output
    quality = _read_quality(out)
    assert list(quality.columns) == TEETH_COLUMNS and len(quality) == 3
    assert quality["fold_agreement"].isna().all() and quality["fold_number_agreement"].isna().all()
    assert (quality["agreement"] == quality["tta_agreement"]).all()
    assert (quality["tta_number_agreement"] <= quality["tta_agreement"] + 1e-12).all()
    for row in quality.itertuples():
        saved = read_label(out / row.file)
        assert row.teeth == len(np.unique(saved[saved > 0])) and row.tooth_pixels == np.count_nonzero(saved)
        expected = " ".join(str(n) for n in duplicated_numbers(saved))
        assert (row.duplicated_numbers if isinstance(row.duplicated_numbers, str) else "") == expected
    # --binary: 0/255 masks, so no tooth numbers to count, but the numbered members still agree or not
    _cli("-i", str(images), "-o", str(tmp_path / "binary"), "-d", "Tiny", "--tta", "--binary")
    binary = _read_quality(tmp_path / "binary")
    assert "teeth" not in binary and "duplicated_numbers" not in binary
    pd.testing.assert_series_equal(binary["agreement"], quality["agreement"])


def test_flag_below_outside_zero_to_one_is_refused(binary_setup, tmp_path):
    _, images = binary_setup
    result = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(tmp_path / "out"), "-d", "Teeth",
                                              "--flag-below", "1.5"])
    assert result.exit_code == 2 and "--flag-below" in result.output
