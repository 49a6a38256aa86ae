"""Outputs and disks, checkpoints, evaluation: an unwritable or full output is one line naming the path
and leaves no half-written file; a checkpoint that is damaged or not rbmnet's is one line saying what
it is (never a hint to load it unsafely); rbmnet_evaluate refuses probability maps unless --threshold
binarises them."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from rbmnet.cli.evaluate import main as evaluate_cli
from rbmnet.cli.predict import main as predict_cli
from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json
from rbmnet.io.images import write_png
from test_predict import make_model_folder


def one_error_line(result, *expected: str) -> str:
    """The CLI failed with exit 2 and a single 'error: ...' line holding every expected text."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes still lying in the folder tree."""
    return [p.name for p in folder.rglob("*.tmp")] if folder.exists() else []


@pytest.fixture
def model_folder(roots):
    return make_model_folder(roots["results"] / "Teeth", folds=(0,))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_png(folder / name, rng.integers(0, 256, (20, 24), dtype=np.uint8))
    return folder


# --- outputs and disks ---------------------------------------------------------------------------------

def test_predict_into_an_unwritable_output_folder_is_one_line(model_folder, images, tmp_path):
    # before: every case failed, then writing failures.csv raised NotADirectoryError with a traceback
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder's parent should be")
    out = blocker / "out"
    result = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(out), "-d", "Teeth", "--quiet"])
    one_error_line(result, str(out), "not a directory")
    assert "predicted" not in result.stdout  # refused before any prediction


@pytest.mark.parametrize("workers", ["0", "2"])
def test_predict_stops_at_a_full_disk_and_leaves_no_partial_file(model_folder, images, tmp_path, monkeypatch,
                                                                 workers):
    # before: each case became a failure row "OSError: [Errno 28] ..." and the run went on (exit 1)
    def full_disk(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "out"
    result = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(out), "-d", "Teeth", "-np", workers,
                                              "--quiet", "--save-probabilities"])
    one_error_line(result, str(out / "probabilities" / "a.png"), "could not write (no space left on device)")
    assert leftovers(out) == [] and list(out.glob("*.png")) == [] and not (out / "failures.csv").exists()


def test_evaluate_into_an_unwritable_output_folder_is_one_line(tmp_path):
    # before: an OSError (NotADirectoryError) escaped rbmnet_evaluate
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    write_png(reference / "a.png", mask)
    write_png(prediction / "a.png", mask)
    (tmp_path / "blocker").write_text("")
    out = tmp_path / "blocker" / "report"
    result = CliRunner().invoke(evaluate_cli, ["-r", str(reference), "-p", str(prediction), "-o", str(out)])
    one_error_line(result, str(out), "not a directory")


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "no space left on device"),
                                          (errno.EACCES, "permission denied"),
                                          (errno.EROFS, "read-only file system")])
def test_an_atomic_write_failure_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch, code, reason):
    # before: the bare OSError escaped
    def failing_write(self, text, *args, **kwargs):
        Path.write_bytes(self, text.encode()[:3])
        raise OSError(code, "refused")

    monkeypatch.setattr(Path, "write_text", failing_write)
    target = tmp_path / "summary.json"
    with pytest.raises(RbmnetError) as caught:
        write_json(target, {"dice": 1.0})
    assert str(caught.value) == f"{target}: could not write ({reason})"
    assert list(tmp_path.iterdir()) == []


def tiny_network():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.Conv2d(2, 1, 1))


def save_tiny_checkpoint(path: Path) -> None:
    from rbmnet.model.checkpoint import save_checkpoint
    save_checkpoint(path, tiny_network(), None, 1, [], {"dataset_name": "Teeth"}, {}, {"stage": "pretext"})


@pytest.mark.parametrize("failure", ["oserror", "stream_writer"])
def test_a_checkpoint_on_a_full_disk_is_one_line_and_leaves_no_temp(tmp_path, monkeypatch, failure):
    # before: torch's RuntimeError "[enforce fail at inline_container.cc] ... PytorchStreamWriter failed
    # writing file ..." (or the OSError) escaped to the user
    import rbmnet.model.checkpoint as checkpoint

    def full_disk(obj, f, *args, **kwargs):
        Path(getattr(f, "name", f)).write_bytes(b"PK\x03\x04 half a zip")
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
                           "file data/0: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: SimpleNamespace(total=10 << 30, used=10 << 30, free=0))
    target = tmp_path / "fold_0" / "checkpoint_latest.pt"
    with pytest.raises(RbmnetError) as caught:
        save_tiny_checkpoint(target)
    assert str(caught.value) == f"{target}: could not write (no space left on device)"
    assert list(target.parent.iterdir()) == []


def test_a_checkpoint_saved_through_the_file_handle_still_loads_mapped(tmp_path):
    from rbmnet.model.checkpoint import load_checkpoint, read_checkpoint_plan
    path = tmp_path / "checkpoint_final.pt"
    save_tiny_checkpoint(path)
    assert read_checkpoint_plan(path) == {"dataset_name": "Teeth"}
    assert set(load_checkpoint(path)["network"]) == set(tiny_network().state_dict())


# --- checkpoints that are not rbmnet's ------------------------------------------------------------------

@pytest.mark.parametrize("content", ["numpy_pickle", "truncated", "text"])
def test_an_unloadable_checkpoint_never_suggests_unsafe_loading(tmp_path, content):
    # before: "cannot load checkpoint (UnpicklingError: Weights only load failed ... Re-running `torch.load`
    # with `weights_only` set to `False` will likely succeed" over several lines, with terminal escapes
    from rbmnet.model.checkpoint import load_checkpoint
    path = tmp_path / "model.pt"
    if content == "numpy_pickle":
        torch.save({"network": {"w": np.zeros(3)}}, path)
    elif content == "truncated":
        save_tiny_checkpoint(path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_text("not a checkpoint\n")
    with pytest.raises(RbmnetError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "\x1b" not in message
    assert "weights_only" not in message and "trust" not in message
    assert "not an rbmnet checkpoint" in message or "damaged" in message


@pytest.mark.parametrize("payload, described", [
    ("state_dict", "a bare state_dict with 4 tensors"),
    ("other_program", "a dict with keys 'model', 'epoch', 'optimizer'"),
    ("tensor", "a single tensor of shape (3, 4)"),
])
def test_a_foreign_checkpoint_is_described_in_one_line(tmp_path, payload, described):
    # before: load_checkpoint returned it, and the caller failed later with "a unknown checkpoint" or KeyError
    from rbmnet.model.checkpoint import describe_foreign_checkpoint, load_checkpoint
    state = tiny_network().state_dict()
    content = {"state_dict": state, "other_program": {"model": state, "epoch": 3, "optimizer": {}},
               "tensor": torch.zeros(3, 4)}[payload]
    path = tmp_path / "weights.pt"
    torch.save(content, path)
    assert describe_foreign_checkpoint(content).startswith(described)
    with pytest.raises(RbmnetError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not an rbmnet checkpoint: it holds {described}") and "\n" not in message
    assert "rbmnet_train" in message  # what rbmnet expects instead


def test_predict_with_a_bare_state_dict_as_fold_says_what_it_is(model_folder, images, tmp_path):
    # before: "a unknown checkpoint, not a segmentation model"
    final = model_folder / "fold_0" / "checkpoint_final.pt"
    torch.save(tiny_network().state_dict(), final)
    result = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(tmp_path / "out"), "-d", "Teeth",
                                              "--quiet"])
    one_error_line(result, str(final), "a bare state_dict with 4 tensors")


# --- evaluation of probability maps ---------------------------------------------------------------------

def gradient(size: int = 16) -> np.ndarray:
    """A probability map as rbmnet_predict --save-probabilities writes it: 0..255, left to right."""
    return np.tile(np.linspace(0, 255, size).round().astype(np.uint8), (size, 1))


@pytest.fixture
def probability_folders(tmp_path):
    """Reference: the right half is tooth (0/255). Prediction: a left-to-right gradient of probabilities."""
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255
    write_png(reference / "a.png", mask)
    write_png(prediction / "a.png", gradient())
    return reference, prediction


@pytest.mark.parametrize("extra", [["--binary"], []])
def test_probability_maps_are_refused_as_label_maps(probability_folders, extra):
    # before, with --binary: exit 0 and a Dice of 0.67 from "any value > 0 is tooth"
    reference, prediction = probability_folders
    result = CliRunner().invoke(evaluate_cli, ["-r", str(reference), "-p", str(prediction), *extra])
    one_error_line(result, str(prediction / "a.png"), "--threshold")
    assert not (prediction / "summary.json").exists()


def test_probability_maps_against_numbered_teeth_are_refused(tmp_path):
    # before: exit 0, the gradient's values scored as tooth numbers
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    label_map = np.zeros((16, 16), np.uint8)
    label_map[:8, 8:], label_map[8:, 8:] = 11, 21
    write_png(reference / "a.png", label_map)
    write_png(prediction / "a.png", gradient())
    result = CliRunner().invoke(evaluate_cli, ["-r", str(reference), "-p", str(prediction)])
    one_error_line(result, str(prediction / "a.png"), "--threshold")


@pytest.mark.parametrize("stored", ["8bit_png", "float_tiff"])
def test_threshold_binarises_probability_maps(probability_folders, stored):
    # before: no such option (exit 2)
    reference, prediction = probability_folders
    if stored == "float_tiff":
        (prediction / "a.png").unlink()
        Image.fromarray(gradient().astype(np.float32) / 255).save(prediction / "a.tif")
    result = CliRunner().invoke(evaluate_cli, ["-r", str(reference), "-p", str(prediction), "--threshold", "0.5"])
    assert result.exit_code == 0, result.output
    summary = json.loads((prediction / "summary.json").read_text())
    # probability > 0.5 is columns 8..15 (values 136..255), exactly the reference
    assert summary["per_case"][0]["dice"] == 1.0 and summary["threshold"] == 0.5
    assert summary["evaluation"] == "binary" and "0.5" in summary["foreground"]
    high = CliRunner().invoke(evaluate_cli, ["-r", str(reference), "-p", str(prediction), "--threshold", "0.9"])
    assert high.exit_code == 0, high.output
    dice = json.loads((prediction / "summary.json").read_text())["per_case"][0]["dice"]
    assert 0 < dice < 1  # fewer columns above 0.9: a lower but meaningful score


@pytest.mark.parametrize("args, expected", [(["--threshold", "1.5"], "--threshold"),
                                            (["--threshold", "0.5", "--labels", "1"], "--threshold")])
def test_threshold_bad_values_are_refused(probability_folders, args, expected):
    reference, prediction = probability_folders
    result = CliRunner().invoke(evaluate_cli, ["-r", str(reference), "-p", str(prediction), *args])
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output
    assert "No such option" not in result.output  # before: the option did not exist
