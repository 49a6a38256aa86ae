"""rbmnet_export and rbmnet_predict --backend: verified ONNX graphs of a tiny trained binary model and a
tiny numbered-teeth model, the same masks from both backends, the self-contained copy used without the
results root, and a one-line refusal for each bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rbmnet.cli.export import main as export_cli
from rbmnet.cli.predict import main as predict_cli
from rbmnet.errors import RbmnetError
from rbmnet.export.verification import TOLERANCE
from rbmnet.io.atomic import read_json, write_json
from rbmnet.io.images import read_label, write_png
from training_factory import TINY_PLAN, train_tiny_fold

TEETH_PLAN = {**TINY_PLAN, "segmentation.task": "teeth", "segmentation.numbering_head": "factorized"}
MIN_DICE = 0.999


def _train(root: Path, overrides: dict) -> tuple[dict, Path]:
    """Fold 0 of a tiny model, a few iterations; (environment, model folder)."""
    return train_tiny_fold(root, overrides, num_test=3)


def _export(env: dict, *args: str):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return CliRunner().invoke(export_cli, ["-d", "Tiny", *args])


@pytest.fixture(scope="module", params=["binary", "teeth"])
def exported(request, tmp_path_factory):
    """A tiny trained model of each task, exported with a self-contained copy; (env, model folder, copy, output)."""
    root = tmp_path_factory.mktemp(request.param)
    env, folder = _train(root, TINY_PLAN if request.param == "binary" else TEETH_PLAN)
    result = _export(env, "-o", str(root / "copy"))
    assert result.exit_code == 0, result.output
    return env, folder, root / "copy", result.output


def _predict(env: dict, monkeypatch, out: Path, *args: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    images = Path(env["RBMNET_RAW"]) / "Tiny" / "imagesTs"
    result = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(out), "-np", "0", "--quiet", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two saved maps, a pixel counting only where both give it the same (non-zero) label."""
    both = np.sum((a == b) & (a > 0))
    total = np.sum(a > 0) + np.sum(b > 0)
    return 1.0 if total == 0 else 2.0 * both / total


def _dices(first: Path, second: Path) -> list[float]:
    names = sorted(p.name for p in first.glob("*.png"))
    assert names and names == sorted(p.name for p in second.glob("*.png"))
    return [_dice(read_label(first / name), read_label(second / name)) for name in names]


def test_export_writes_a_verified_graph_and_its_description(exported):
    env, folder, _, output = exported
    assert "max |onnx - torch|" in output and f"tolerance {TOLERANCE:g}" in output
    record = read_json(folder / "fold_0" / "model.json")
    assert (folder / "fold_0" / "model.onnx").is_file()
    print(f"{folder.name}: max |onnx - torch| {record['verification']['max_abs_difference']:.3g}")
    assert record["verification"]["max_abs_difference"] <= TOLERANCE
    assert {tuple(s[:2]) for s in record["verification"]["shapes"]} == {(1, 1), (2, 1)}
    assert len({tuple(s[2:]) for s in record["verification"]["shapes"]}) == 2  # two sizes
    plan = read_json(folder / "plans.json")
    assert record["input_size"] == plan["input_size"] and record["normalization"] == plan["normalization"]
    assert record["task"]["name"] == plan["segmentation"]["task"] and record["folds"] == ["0"]
    assert record["labels"] == read_json(folder / "dataset.json")["labels"]
    decision = folder / "postprocessing.json"  # teeth models decide one; binary models have none
    assert record["postprocessing"] == (read_json(decision) if decision.is_file() else {"chosen": "none"})
    assert record["onnx_opset"] >= 17 and record["rbmnet_version"]
    assert not list(folder.glob("fold_0/.model.onnx*"))  # no temporary files left


def test_onnx_and_torch_probabilities_agree_within_the_tolerance(exported):
    from rbmnet.inference.predictor import load_ensemble

    _, folder, _, _ = exported
    images = np.random.default_rng(5).random((3, 64, 128), dtype=np.float32)
    cpu = torch.device("cpu")
    for tta in (False, True):  # TTA: the task's channel permutation applied to both alike
        by_torch = load_ensemble(folder, ["0"], cpu, "torch").predict(images, tta=tta)
        by_onnx = load_ensemble(folder, ["0"], cpu, "onnx").predict(images, tta=tta)
        assert by_onnx.shape == by_torch.shape
        assert np.abs(by_onnx - by_torch).max() <= TOLERANCE


def test_both_backends_predict_the_same_masks(exported, tmp_path, monkeypatch):
    env, folder, _, _ = exported
    for tta in ([], ["--tta"]):
        torch_output = _predict(env, monkeypatch, tmp_path / f"torch{tta}", "-d", "Tiny", "--backend", "torch", *tta)
        onnx_output = _predict(env, monkeypatch, tmp_path / f"onnx{tta}", "-d", "Tiny", "--backend", "onnx", *tta)
        assert "backend: torch" in torch_output and "backend: onnx on cpu" in onnx_output
        dices = _dices(tmp_path / f"torch{tta}", tmp_path / f"onnx{tta}")
        print(f"{folder.name}: per-image Dice torch vs onnx (tta={bool(tta)}): {[round(d, 6) for d in dices]}")
        assert min(dices) >= MIN_DICE
    # on a CPU with an up-to-date export for every fold, auto chooses onnx
    assert "backend: onnx" in _predict(env, monkeypatch, tmp_path / "auto", "-d", "Tiny")


def test_the_copy_predicts_without_the_results_root(exported, tmp_path, monkeypatch):
    env, _, copy, _ = exported
    assert sorted(p.name for p in (copy / "fold_0").iterdir()) == ["model.json", "model.onnx"]  # no checkpoint
    _predict(env, monkeypatch, tmp_path / "torch", "-d", "Tiny", "--backend", "torch")
    monkeypatch.setenv("RBMNET_RESULTS", str(tmp_path / "no_results_here"))
    output = _predict(env, monkeypatch, tmp_path / "copy", "-m", str(copy))
    assert "backend: onnx" in output and not (tmp_path / "no_results_here").exists()
    assert min(_dices(tmp_path / "torch", tmp_path / "copy")) >= MIN_DICE
    # the copy has no checkpoints: torch cannot predict from it, and says what can
    result = CliRunner().invoke(predict_cli, ["-i", str(Path(env["RBMNET_RAW"]) / "Tiny" / "imagesTs"),
                                              "-o", str(tmp_path / "t"), "-m", str(copy), "--backend", "torch"])
    assert result.exit_code == 2 and "--backend onnx" in result.output and len(result.output.splitlines()) == 2


def test_a_stale_export_is_not_used(exported, tmp_path, monkeypatch):
    """An export made from an earlier checkpoint (the fold was trained on): auto uses torch, onnx refuses."""
    env, folder, _, _ = exported
    path = folder / "fold_0" / "model.json"
    kept = read_json(path)
    try:
        write_json(path, {**kept, "checkpoint_sha256": "0" * 64})
        assert "backend: torch" in _predict(env, monkeypatch, tmp_path / "auto", "-d", "Tiny")
        result = CliRunner().invoke(predict_cli, ["-i", str(Path(env["RBMNET_RAW"]) / "Tiny" / "imagesTs"),
                                                  "-o", str(tmp_path / "o"), "-d", "Tiny", "--backend", "onnx"])
        assert result.exit_code == 2 and "earlier checkpoint_final.pt; run rbmnet_export" in result.output
    finally:
        write_json(path, kept)


# --- bad input: one line, nothing half-written ----------------------------------------------------------------


def _one_line_error(result) -> str:
    """The error: one line, the last; before it at most the line naming the model."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and len(lines) <= 2 and not lines[0].startswith("Traceback"), \
        result.output
    return lines[-1]


def test_export_before_any_training_says_what_to_train(roots):
    line = _one_line_error(CliRunner().invoke(export_cli, ["-d", "Tiny"]))
    assert "train one first: rbmnet_train seg 0 -d Tiny" in line


@pytest.fixture(scope="module")
def small_exported(tmp_path_factory):
    """A tiny trained-looking binary model (random weights, 32 x 64), fold 0 only, exported once."""
    from rbmnet.export.model_export import export_model
    from test_predict import make_model_folder

    folder = make_model_folder(tmp_path_factory.mktemp("small") / "Teeth", folds=(0,))
    export_model(folder)
    return folder


@pytest.fixture
def small_model(roots, small_exported):
    """That model in this test's results root, without its export."""
    target = roots["results"] / "Teeth" / small_exported.name
    shutil.copytree(small_exported, target, ignore=shutil.ignore_patterns("model.onnx", "model.json"))
    return target


@pytest.fixture
def small_exported_model(roots, small_exported):
    """That model in this test's results root, with its export."""
    target = roots["results"] / "Teeth" / small_exported.name
    shutil.copytree(small_exported, target)
    return target


def test_export_refuses_graphs_that_differ_and_writes_nothing(small_model, monkeypatch, tmp_path):
    monkeypatch.setattr("rbmnet.export.model_export.TOLERANCE", -1.0)  # any measured difference is too much
    before = sorted(p.name for p in (small_model / "fold_0").iterdir())
    line = _one_line_error(CliRunner().invoke(export_cli, ["-d", "Teeth", "-o", str(tmp_path / "copy")]))
    assert "ONNX Runtime and PyTorch differ by up to" in line and "nothing exported" in line
    assert sorted(p.name for p in (small_model / "fold_0").iterdir()) == before  # no graph, no temporary file
    assert not (tmp_path / "copy").exists() and not list(tmp_path.glob(".copy*"))


def test_export_refuses_a_copy_target_that_holds_files_before_any_work(small_model, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    line = _one_line_error(CliRunner().invoke(export_cli, ["-d", "Teeth", "-o", str(tmp_path / "busy")]))
    assert "is not an empty folder" in line and not (small_model / "fold_0" / "model.onnx").exists()


def test_export_of_an_untrained_fold_is_refused(small_model):
    line = _one_line_error(CliRunner().invoke(export_cli, ["-d", "Teeth", "-f", "3"]))
    assert "3 not trained" in line


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_png(folder / f"{name}.png", rng.integers(0, 256, (40, 70), dtype=np.uint8))
    return folder


def test_backend_onnx_without_an_export_says_what_to_run(small_model, images, tmp_path):
    line = _one_line_error(CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(tmp_path / "out"),
                                                            "-d", "Teeth", "--backend", "onnx"]))
    assert "fold 0 has no ONNX export; run rbmnet_export" in line


def test_backend_onnx_without_onnxruntime_says_what_to_install(small_exported_model, images, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails as if not installed
    line = _one_line_error(CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(tmp_path / "out"),
                                                            "-d", "Teeth", "--backend", "onnx"]))
    assert "onnxruntime is not installed" in line
    # auto quietly uses torch instead
    result = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(tmp_path / "auto"), "-d", "Teeth"])
    assert result.exit_code == 0 and "backend: torch" in result.output


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_an_image_the_backend_cannot_take_costs_only_that_image(backend, small_exported_model, images, tmp_path,
                                                                 monkeypatch):
    from rbmnet.inference import backends
    from rbmnet.inference.predictor import predict_folder

    write_png(images / "blank.png", np.full((40, 70), 7, np.uint8))  # normalizes to all zeros
    original = backends.BACKENDS[backend]

    def load(model_folder, fold, device):
        loaded = original.load(model_folder, fold, device)
        predict = loaded.predict

        def refusing(batch):
            if any(image.max() == 0 for image in batch):
                raise RuntimeError("this backend cannot take a blank image")
            return predict(batch)

        loaded.predict = refusing
        return loaded

    monkeypatch.setitem(backends.BACKENDS, backend, backends.Backend(load, original.unusable))
    report = predict_folder(images, tmp_path / "out", small_exported_model, backend=backend, batch_size=4,
                            progress=False)
    assert sorted(report.predicted) == ["a.png", "b.png", "c.png"]
    assert [(f.file, f.reason) for f in report.failures] == [
        ("blank.png", "RuntimeError: this backend cannot take a blank image")]


def test_the_graph_refuses_sizes_the_network_refuses(small_exported_model):
    from rbmnet.inference.backends import BACKENDS

    bad = np.zeros((1, 1, 40, 48), np.float32)  # not a multiple of 16
    messages = []
    for backend in ("torch", "onnx"):
        with pytest.raises(RbmnetError) as caught:
            BACKENDS[backend].load(small_exported_model, "0", torch.device("cpu")).predict(bad)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and "not a multiple of 16" in messages[0]


def test_the_command_offers_every_backend():
    from rbmnet.inference.backends import BACKEND_NAMES

    option = next(p for p in predict_cli.params if p.name == "backend")
    assert tuple(option.type.choices) == BACKEND_NAMES


def test_archive_option_packs_the_new_exports(small_model, tmp_path):
    import zipfile

    result = CliRunner().invoke(export_cli, ["-d", "Teeth", "--archive", str(tmp_path / "model.zip")])
    assert result.exit_code == 0, result.output
    names = zipfile.ZipFile(tmp_path / "model.zip").namelist()
    assert {"fold_0/model.onnx", "fold_0/model.json", "fold_0/checkpoint_final.pt"} <= set(names)
