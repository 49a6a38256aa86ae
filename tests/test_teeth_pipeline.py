"""Numbered teeth end to end on the tiny synthetic set: train a few iterations, validation reports and
the post-processing decision in the model folder, predictions whose values are tooth numbers, the
decision applied at prediction, --binary masks, numbered overlays; and models written before the teeth
task existed still predict."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from rbmnet.data.numbering import NUMBERINGS
from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json, write_json
from rbmnet.io.images import read_image, read_label, write_png
from training_factory import TINY_PLAN, train_tiny_fold

# the factorized head: it has every post-processing candidate (the classes head, the default, is
# trained through the command line in test_device_batches.py and test_benchmark.py)
TEETH_PLAN = {**TINY_PLAN, "segmentation.task": "teeth", "segmentation.numbering_head": "factorized",
              "segmentation.epochs": 3}
MODEL_ID = "seg__resunet__scratch__frac0.2__plans__teeth-factorized"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A factorized teeth model, fold 0, a few iterations; (environment, model folder)."""
    return train_tiny_fold(tmp_path_factory.mktemp("teeth"), TEETH_PLAN)


def test_fold_reports_numbering_metrics_and_a_postprocessing_decision(trained):
    _, folder = trained
    assert folder.name == MODEL_ID
    summary = read_json(folder / "fold_0" / "validation" / "summary.json")
    for metric in ("tooth_dice", "identification_accuracy", "wrong_side_rate", "binary_dice"):
        assert 0.0 <= summary["mean"][metric] <= 1.0
    assert summary["mean"]["binary_dice"] > 0.3  # a few iterations already find teeth
    assert (folder / "fold_0" / "dental_chart.png").is_file()
    decision = read_json(folder / "postprocessing.json")
    assert decision["chosen"] in decision["scores"] and decision["folds"] == [0]
    assert set(decision["scores"]) == {"none", "largest_component", "largest_component_and_min_size",
                                       "one_number_per_tooth"}
    assert decision["params"]["min_size"] >= 0
    fdi = set(NUMBERINGS["FDI"].numbers()) | {0}
    for path in (folder / "fold_0" / "validation").glob("*.png"):
        assert set(np.unique(read_label(path)).tolist()) <= fdi


def _predict(env, monkeypatch, out: Path, *extra: str):
    from click.testing import CliRunner

    from rbmnet.cli.predict import main as predict_cli

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    images = Path(env["RBMNET_RAW"]) / "Tiny" / "imagesTs"
    result = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(out), "-d", "Tiny", "-np", "0",
                                              "--quiet", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return images


def test_predictions_are_tooth_numbers_at_the_original_size(trained, tmp_path, monkeypatch):
    env, _ = trained
    images = _predict(env, monkeypatch, tmp_path / "out", "--overlay", "--tta")
    fdi = set(NUMBERINGS["FDI"].numbers()) | {0}
    for image in sorted(images.iterdir()):
        prediction = read_label(tmp_path / "out" / f"{image.stem}.png")
        assert prediction.shape == read_image(image).shape and prediction.dtype == np.uint8
        assert set(np.unique(prediction).tolist()) <= fdi and prediction.max() > 0
        picture = np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{image.stem}.png"))
        assert picture.shape == (*prediction.shape, 3)
        tinted = picture[prediction > 0].astype(int)
        assert np.abs(tinted[:, 0] - tinted[:, 2]).mean() > 5  # teeth in colour on the grey radiograph


def test_binary_flag_gives_masks_of_the_teeth_union(trained, tmp_path, monkeypatch):
    env, _ = trained
    _predict(env, monkeypatch, tmp_path / "numbers")
    _predict(env, monkeypatch, tmp_path / "masks", "--binary")
    for path in (tmp_path / "numbers").glob("*.png"):
        mask = read_label(tmp_path / "masks" / path.name)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert np.array_equal(mask > 0, read_label(path) > 0)


def _split_numbers(folder: Path) -> int:
    """How many (map, tooth number) pairs of a folder of predictions lie in more than one component."""
    split = 0
    for path in folder.glob("*.png"):
        prediction = read_label(path)
        for number in np.unique(prediction[prediction > 0]):
            _, components = ndimage.label(prediction == number, structure=np.ones((3, 3)))
            split += components > 1
    return split


def test_prediction_applies_the_models_postprocessing(trained, tmp_path, monkeypatch):
    env, folder = trained
    decision_path = folder / "postprocessing.json"
    kept = read_json(decision_path)
    try:
        write_json(decision_path, {**kept, "chosen": "none"})
        _predict(env, monkeypatch, tmp_path / "raw")
        assert _split_numbers(tmp_path / "raw") > 0  # without post-processing some numbers are scattered
        write_json(decision_path, {**kept, "chosen": "largest_component"})
        _predict(env, monkeypatch, tmp_path / "post")
        assert _split_numbers(tmp_path / "post") == 0
    finally:
        write_json(decision_path, kept)


def test_a_label_value_missing_from_dataset_json_is_named_before_anything_is_written(trained, monkeypatch):
    from rbmnet.training.segmentation import run_segmentation
    from rbmnet.training.setup import load_stage_inputs

    env, _ = trained
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    inputs = load_stage_inputs("Tiny", "plans", {})
    writable = np.load(inputs.data.folder / "labels.npy", mmap_mode="r+")
    original = writable[:, 0, 0].copy()
    writable[:, 0, 0] = 99  # a value dataset.json does not declare, in every label map
    writable.flush()
    try:
        inputs = load_stage_inputs("Tiny", "plans", {"segmentation.numbering_head": "classes"})
        with pytest.raises(RbmnetError, match=r"labelsTr/synthetic_\d+\.png: label value\(s\) \[99\]"):
            run_segmentation(inputs, "0", init="scratch", device_name="cpu", num_workers=0)
        model = Path(env["RBMNET_RESULTS"]) / "Tiny" / "seg__resunet__scratch__frac0.2__plans__teeth-classes"
        assert not model.exists()
    finally:
        writable[:, 0, 0] = original
        writable.flush()


def test_teeth_task_on_a_dataset_with_one_foreground_label_is_refused(tmp_path):
    from rbmnet.planning.plan import Plan
    from rbmnet.tasks import build_task

    plan = Plan("B")
    plan.segmentation.task = "teeth"
    with pytest.raises(RbmnetError, match="use task binary"):
        build_task(plan, {"labels": {"background": 0, "tooth": 1}, "tooth_numbering": None})


def test_a_model_folder_written_before_the_teeth_task_still_predicts(tmp_path, monkeypatch):
    """Plans of the earlier layout: no numbering_head / laterality_swap keys, the since-removed
    augmentation.num_workers and network.input_channels keys, and checkpoint meta without a head."""
    from rbmnet.data.dataset_json import make_dataset_json, tooth_labels
    from rbmnet.inference.predictor import predict_folder
    from rbmnet.model.checkpoint import save_checkpoint
    from rbmnet.networks import build_network
    from rbmnet.planning.plan import NetworkConfig, Plan

    plan = Plan(dataset_name="Old", input_size=[32, 64], network=NetworkConfig(features_per_stage=[4, 8, 16, 32, 64]))
    old = plan.to_dict()
    old["segmentation"].pop("numbering_head")
    old["augmentation"].pop("laterality_swap")
    old["augmentation"]["num_workers"] = 2
    old["network"]["input_channels"] = 2
    dataset_json = make_dataset_json("Old", tooth_labels("FDI"), 4, 0, tooth_numbering="FDI")
    folder = tmp_path / "seg__resunet__scratch__frac0.2__plans"
    write_json(folder / "plans.json", old)
    write_json(folder / "dataset.json", dataset_json)
    network = build_network(plan.network, 1, input_channels=2)
    meta = {"stage": "segmentation", "architecture": "resunet", "model_id": folder.name, "fold": "0",
            "output_channels": 1, "task": "binary", "labels": dataset_json["labels"]}
    save_checkpoint(folder / "fold_0" / "checkpoint_final.pt", network, None, 1, [], old, dataset_json, meta)
    images = tmp_path / "images"
    write_png(images / "a.png", (np.random.default_rng(0).random((40, 70)) * 255).astype(np.uint8))
    report = predict_folder(images, tmp_path / "out", folder, progress=False, num_workers=0)
    assert report.predicted == ["a.png"] and not report.failures
    assert set(np.unique(read_label(tmp_path / "out" / "a.png")).tolist()) <= {0, 255}
