"""rbmnet_predict: masks at the original size, failures that do not stop the rest, resume, fold ensembling."""
from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from rbmnet.cli.predict import main as predict_cli
from rbmnet.data.dataset_json import make_dataset_json, tooth_labels
from rbmnet.errors import RbmnetError
from rbmnet.inference.model_selection import choose_model
from rbmnet.inference.overlay import display_gray, overlay
from rbmnet.inference.predictor import load_ensemble, predict_folder
from rbmnet.io.atomic import write_json
from rbmnet.io.images import read_image, write_png
from rbmnet.networks import build_network
from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
from rbmnet.planning.plan import NetworkConfig, Plan
from rbmnet.model.checkpoint import save_checkpoint

MODEL_ID = "seg__resunet__scratch__frac0.2__plans"
VALID_SHAPES = {"plain.png": (37, 91), "scan16.png": (53, 41), "rgbgray.bmp": (29, 75)}


def make_model_folder(dataset_dir, model_id=MODEL_ID, folds=(0, 1), dataset_name="Teeth", stage="segmentation"):
    """A tiny trained-looking model: each fold with its own random weights."""
    plan = Plan(dataset_name=dataset_name, input_size=[32, 64],
                network=NetworkConfig(features_per_stage=[4, 8, 16, 32, 64]))
    dataset_json = make_dataset_json(dataset_name, tooth_labels(None), 4, 0)
    folder = dataset_dir / model_id
    write_json(folder / "plans.json", plan.to_dict())
    write_json(folder / "dataset.json", dataset_json)
    for fold in folds:
        torch.manual_seed(100 + fold)
        network = build_network(plan.network, 1, input_channels=NETWORK_INPUT_CHANNELS)
        with torch.no_grad():  # BatchNorm running stats != identity, so folds differ clearly at eval time
            for module in network.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
        meta = {"stage": stage, "architecture": "resunet", "model_id": model_id, "fold": str(fold),
                "output_channels": 1, "task": "binary", "labels": dataset_json["labels"]}
        save_checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pt", network, None, 1, [],
                        plan.to_dict(), dataset_json, meta)
    return folder


@pytest.fixture
def model_folder(roots):
    return make_model_folder(roots["results"] / "Teeth")


@pytest.fixture
def inputs(tmp_path):
    """Three valid images of odd sizes (8-bit, 16-bit, RGB-gray), a truncated PNG and a text file."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_png(folder / "plain.png", rng.integers(0, 256, VALID_SHAPES["plain.png"], dtype=np.uint8))
    write_png(folder / "scan16.png", rng.integers(0, 65536, VALID_SHAPES["scan16.png"], dtype=np.uint16))
    gray = rng.integers(0, 256, VALID_SHAPES["rgbgray.bmp"], dtype=np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(folder / "rgbgray.bmp")
    write_png(folder / "broken.png", rng.integers(0, 256, (40, 40), dtype=np.uint8))
    data = (folder / "broken.png").read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not a radiograph\n")
    return folder


def test_cli_predicts_valid_images_and_reports_each_failure(model_folder, inputs, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(predict_cli, ["-i", str(inputs), "-o", str(out), "-d", "Teeth", "-f", "0,1",
                                               "--quiet"])
    assert result.exit_code == 1, result.output
    assert f"{MODEL_ID} (newest segmentation model of Teeth); folds 0, 1" in result.output
    assert "2 of 5 inputs failed" in result.output and "failures.csv" in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("failed: ")]) == 2
    for name, shape in VALID_SHAPES.items():
        mask = read_image(out / f"{name.rsplit('.', 1)[0]}.png")
        assert mask.shape == shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
    assert sorted(p.name for p in out.glob("*.png")) == ["plain.png", "rgbgray.png", "scan16.png"]
    with open(out / "failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["file"] for row in rows} == {"broken.png", "notes.txt"}
    assert all(row["reason"] for row in rows)


def test_continue_skips_finished_outputs(model_folder, inputs, tmp_path):
    out = tmp_path / "out"
    first = predict_folder(inputs, out, model_folder, num_workers=0, progress=False)
    assert sorted(first.predicted) == sorted(VALID_SHAPES) and len(first.failures) == 2
    masks = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    inline_plain = read_image(out / "plain.png")
    (out / "plain.png").unlink()
    again = predict_folder(inputs, out, model_folder, resume=True, progress=False)
    assert again.predicted == ["plain.png"]
    assert sorted(again.skipped) == ["rgbgray.bmp", "scan16.png"]
    for name in ("rgbgray.png", "scan16.png"):
        assert (out / name).stat().st_mtime_ns == masks[name]
    # the threaded run (num_workers=2) rewrote plain.png exactly as the inline run (num_workers=0) had
    assert np.array_equal(read_image(out / "plain.png"), inline_plain) and len(again.failures) == 2


def test_ensemble_averages_fold_probabilities_before_threshold(model_folder, inputs, tmp_path):
    probabilities = {}
    for tag, folds in (("0", ["0"]), ("1", ["1"]), ("01", ["0", "1"])):
        out = tmp_path / f"out{tag}"
        predict_folder(inputs, out, model_folder, folds=folds, save_probabilities=True, progress=False)
        probabilities[tag] = read_image(out / "probabilities" / "plain.png").astype(np.float32)
        mask = read_image(out / "plain.png")
        assert probabilities[tag].shape == mask.shape == VALID_SHAPES["plain.png"]
    p0, p1, ensemble = probabilities["0"], probabilities["1"], probabilities["01"]
    assert np.abs(p0 - p1).max() > 20  # the folds really differ
    assert np.abs(ensemble - p0).max() > 10 and np.abs(ensemble - p1).max() > 10
    assert np.abs(ensemble - (p0 + p1) / 2).max() <= 1.0  # 8-bit rounding only
    average = (p0 + p1) / 2
    disagree = (p0 > 128) != (p1 > 128)
    clear = disagree & (np.abs(average - 127.5) > 2)
    assert clear.sum() > 0  # pixels where a mask vote could not decide but the average can
    ensemble_mask = read_image(tmp_path / "out01" / "plain.png") > 0
    assert np.array_equal(ensemble_mask[clear], average[clear] > 127.5)

    # exactly, before any resizing or rounding
    device = torch.device("cpu")
    images = np.random.default_rng(1).random((3, 32, 64), dtype=np.float32)
    both = load_ensemble(model_folder, ["0", "1"], device).predict(images)
    single = [load_ensemble(model_folder, [f], device).predict(images) for f in ("0", "1")]
    np.testing.assert_allclose(both, (single[0] + single[1]) / 2, atol=1e-6)
    # TTA is the mean of the image's and the mirrored image's probabilities (mirrored back), width only
    fold0 = load_ensemble(model_folder, ["0"], device)
    mirrored = fold0.predict(images[..., ::-1])[..., ::-1]
    np.testing.assert_allclose(fold0.predict(images, tta=True), (single[0] + mirrored) / 2, atol=1e-5)


def test_overlay_tta_and_name_clash(model_folder, inputs, tmp_path):
    shutil.copy(inputs / "plain.png", inputs / "plain.tif")  # both would write plain.png
    plain = predict_folder(inputs, tmp_path / "a", model_folder, folds=["0"], save_probabilities=True,
                           progress=False)
    flipped = predict_folder(inputs, tmp_path / "b", model_folder, folds=["0"], save_probabilities=True,
                             tta=True, overlay=True, progress=False)
    assert [f.file for f in plain.failures] == ["plain.tif", "broken.png", "notes.txt"]
    assert "plain.png" in plain.failures[0].reason
    without = read_image(tmp_path / "a" / "probabilities" / "plain.png")
    with_tta = read_image(tmp_path / "b" / "probabilities" / "plain.png")
    assert not np.array_equal(without, with_tta)
    for name, shape in VALID_SHAPES.items():
        picture = np.asarray(Image.open(tmp_path / "b" / "overlays" / f"{name.rsplit('.', 1)[0]}.png"))
        assert picture.shape == (*shape, 3)
    mask = read_image(tmp_path / "b" / "plain.png") > 0
    picture = np.asarray(Image.open(tmp_path / "b" / "overlays" / "plain.png")).astype(int)
    tinted = picture[..., 2] > picture[..., 0]  # teeth: blue tint or yellow outline, never plain gray
    outlined = (picture[..., 0] > picture[..., 2])
    assert np.array_equal(tinted | outlined, mask)


def test_overlay_tints_teeth_outlines_them_and_keeps_background_gray():
    gray = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    mask = np.zeros((30, 40), np.uint8)
    mask[5:25, 10:30] = 255
    picture = overlay(gray, mask)
    assert picture.shape == (30, 40, 3) and picture.dtype == np.uint8
    picture = picture.astype(int)
    background = mask == 0
    assert np.all(picture[background] == gray[background][:, None])
    assert np.all(picture[5, 10:30] == [255, 220, 0]) and np.all(picture[24, 10:30] == [255, 220, 0])
    inside = picture[6:24, 11:29]
    assert np.all(inside[..., 2] > inside[..., 0])
    assert np.all(display_gray(np.array([[100, 600, 1100]], np.uint16), 600, 1100) == [[0, 0, 255]])


def test_default_model_is_the_newest_segmentation_model(roots):
    dataset_dir = roots["results"] / "Teeth"
    old = make_model_folder(dataset_dir, "seg__unet__scratch__frac0.2__plans", folds=(0,))
    new = make_model_folder(dataset_dir, MODEL_ID, folds=(0, 1, 2))
    make_model_folder(dataset_dir, "pretext__resunet__plans", folds=(0,), stage="pretext")
    os.utime(old / "fold_0" / "checkpoint_final.pt", (1e9, 1e9))
    (new / "fold_3").mkdir()  # a fold still training (no final checkpoint) is not used
    choice = choose_model("Teeth", None)
    assert choice.folder == new and choice.folds == ["0", "1", "2"]
    os.utime(old / "fold_0" / "checkpoint_final.pt", None)
    for checkpoint in new.glob("fold_*/checkpoint_final.pt"):
        os.utime(checkpoint, (1e9, 1e9))
    assert choose_model("Teeth", None).folder == old
    assert choose_model(None, MODEL_ID, ["2", "0"]).folds == ["2", "0"]
    with pytest.raises(RbmnetError, match="fold.* 3 not trained"):
        choose_model("Teeth", MODEL_ID, ["3"])


@pytest.mark.parametrize("case", ["output_inside_input", "missing_model", "other_dataset_path",
                                  "other_dataset_id", "empty_input", "missing_input", "pretext_model",
                                  "fold_folder", "output_is_file"])
def test_bad_arguments_exit_2_with_one_line(case, roots, model_folder, inputs, tmp_path):
    args = {"-i": str(inputs), "-o": str(tmp_path / "out"), "-d": "Teeth"}
    expected = {
        "output_inside_input": "inside the input folder",
        "missing_model": "neither a folder nor a model id",
        "other_dataset_path": "trained on dataset 'Teeth', not 'Other'",
        "other_dataset_id": "trained on dataset 'Teeth', not 'Other'",
        "empty_input": "no images to predict",
        "missing_input": "input folder does not exist",
        "pretext_model": "not a segmentation model",
        "fold_folder": "pass its parent folder and -f 1",
        "output_is_file": "is not a folder",
    }[case]
    if case == "output_inside_input":
        args["-o"] = str(inputs / "masks")
    elif case == "missing_model":
        args["--model"] = "seg__nothing__here"
    elif case == "other_dataset_path":
        args.update({"-d": "Other", "--model": str(model_folder)})
    elif case == "other_dataset_id":
        shutil.copytree(model_folder, roots["results"] / "Other" / MODEL_ID)
        args["-d"] = "Other"
    elif case == "empty_input":
        args["-i"] = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "readme.txt").write_text("no images here")
    elif case == "missing_input":
        args["-i"] = str(tmp_path / "nowhere")
    elif case == "pretext_model":
        pretext = make_model_folder(tmp_path / "models", "seg__looks__right", folds=(0,), stage="pretext")
        args["--model"] = str(pretext)
    elif case == "fold_folder":
        args["--model"] = str(model_folder / "fold_1")
    elif case == "output_is_file":
        args["-o"] = str(tmp_path / "out.png")
        (tmp_path / "out.png").write_bytes(b"")
    result = CliRunner().invoke(predict_cli, [item for pair in args.items() for item in pair] + ["--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.output
    assert not any("Traceback" in line for line in lines)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.png"))
