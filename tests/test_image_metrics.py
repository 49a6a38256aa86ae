"""Pretext image metrics: the torchvision CPU workaround, SSIM/FSIM/PSNR whole and masked, LPIPS weights."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import LPIPS_WEIGHTS_DIR, REPO, require
from rbmnet.compat.torchvision_cpu import import_lpips, import_piq
from rbmnet.evaluation.image_metrics import (downsample_factor, reconstruction_metrics,
                                             summarize_reconstruction)
from rbmnet.evaluation.lpips_metric import HUB_CHECKPOINT, LpipsMetric, LpipsUnavailable, load_lpips
from rbmnet.evaluation.reports import json_ready

ALEXNET_FEATURES = LPIPS_WEIGHTS_DIR / "alexnet_features.pth"


# --- torchvision on a CPU torch -------------------------------------------------------------

def test_piq_and_lpips_import_and_compute():
    piq, lpips = import_piq(), import_lpips()
    x = torch.rand(1, 1, 32, 32)
    assert float(piq.ssim(x, x, data_range=1.0)) == pytest.approx(1.0)
    assert float(piq.ssim(x, 1 - x, data_range=1.0)) < 0.5
    # a random backbone only proves lpips runs here; real LPIPS numbers come from load_lpips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecation notes about 'pretrained'
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert float(model(image, image)) == pytest.approx(0.0, abs=1e-6)


def run_python(code: str, pythonpath: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


def fake_torchvision(root, meta_error: str | None, has_ops: bool):
    """A package named torchvision that fails like the real one when its extension is unusable."""
    package = root / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from . import extension\nfrom torchvision import _meta_registrations\n")
    (package / "extension.py").write_text(f"def _has_ops():\n    return {has_ops}\n")
    (package / "_meta_registrations.py").write_text(f"raise RuntimeError({meta_error!r})\n" if meta_error else "")
    return root


PROBE = """
    from rbmnet.compat import torchvision_cpu
    try:
        torchvision_cpu.ensure_torchvision()
        print("applied", torchvision_cpu.workaround_applied)
    except RuntimeError as exc:
        print("raised", exc)
"""


def test_workaround_applies_only_to_the_missing_operator_error(tmp_path):
    source = str(REPO / "src")
    matching = fake_torchvision(tmp_path / "ok", None, has_ops=True)  # like the GPU machine's torchvision
    assert run_python(PROBE, f"{matching}:{source}").stdout.strip() == "applied False"
    missing_op = fake_torchvision(tmp_path / "a", "operator torchvision::nms does not exist", has_ops=False)
    assert run_python(PROBE, f"{missing_op}:{source}").stdout.strip() == "applied True"
    other_error = fake_torchvision(tmp_path / "b", "something else broke", has_ops=False)
    assert run_python(PROBE, f"{other_error}:{source}").stdout.strip() == "raised something else broke"
    ops_loaded = fake_torchvision(tmp_path / "c", "operator torchvision::nms does not exist", has_ops=True)
    assert run_python(PROBE, f"{ops_loaded}:{source}").stdout.strip().startswith("raised")


def test_real_torchvision_is_left_alone_where_it_imports():
    """On this machine's real torchvision: the workaround is used exactly when a plain import fails
    (the plain attempt first also leaves the half-imported modules a failed import leaves behind)."""
    code = textwrap.dedent("""
        try:
            import torchvision
            print("plain ok")
        except RuntimeError as exc:
            print("plain failed:", exc)
    """) + textwrap.dedent(PROBE)
    completed = run_python(code, f"{REPO / 'src'}:{':'.join(p for p in sys.path if p)}")
    lines = completed.stdout.splitlines()
    assert len(lines) == 2, completed.stderr
    if lines[0] == "plain ok":
        assert lines[1] == "applied False"
    else:
        assert "does not exist" in lines[0]
        assert lines[1] == "applied True"


# --- SSIM, FSIM, PSNR -------------------------------------------------------------------------

def radiograph_like(size=(96, 128), seed=0):
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size[0], 0:size[1]]
    image = 0.5 + 0.3 * np.sin(rows / 7.0) * np.cos(cols / 11.0) + 0.05 * rng.standard_normal(size)
    return np.clip(image, 0, 1).astype(np.float32)


def block_mask(shape, boxes):
    mask = np.zeros(shape, bool)
    for top, left, height, width in boxes:
        mask[top:top + height, left:left + width] = True
    return mask


def test_identical_images_score_perfectly():
    image = radiograph_like()
    mask = block_mask(image.shape, [(10, 10, 30, 40), (50, 70, 30, 40)])
    result = reconstruction_metrics(image, image, mask)
    for key in ("ssim", "ssim_masked", "fsim", "fsim_masked"):
        assert result[key] == pytest.approx(1.0, abs=1e-5), key
    # piq floors the MSE at 1e-8: identical images give 80 dB, a documented cap rather than infinity
    assert result["psnr"] == pytest.approx(80.0) and result["psnr_masked"] == pytest.approx(80.0)
    assert result["downsample_factor"] == 1
    assert "lpips" not in result


def test_corruption_inside_the_mask_shows_more_in_masked_metrics():
    target = radiograph_like()
    mask = block_mask(target.shape, [(10, 10, 30, 40), (20, 40, 30, 30), (60, 90, 5, 5)])  # overlap + tiny block
    noise = np.random.default_rng(1).normal(0, 0.2, target.shape).astype(np.float32)
    prediction = np.where(mask, np.clip(target + noise, 0, 1), target)
    result = reconstruction_metrics(prediction, target, mask)
    assert result["ssim_masked"] < result["ssim"] < 1.0
    assert result["fsim_masked"] < result["fsim"] < 1.0
    assert result["psnr_masked"] < result["psnr"]
    exact_mse = np.mean((prediction[mask] - target[mask]) ** 2)
    assert result["psnr_masked"] == pytest.approx(-10 * np.log10(exact_mse + 1e-8), rel=1e-4)


def test_downsampling_rule_and_pooled_masked_metrics():
    assert downsample_factor(255, 600) == 1 and downsample_factor(384, 512) == 2 and downsample_factor(800, 900) == 3
    target = radiograph_like(size=(384, 400))
    mask = block_mask(target.shape, [(40, 40, 120, 150)])
    prediction = np.where(mask, 1.0 - target, target) + 0.1  # out of range too: clipped to [0, 1]
    result = reconstruction_metrics(prediction, target, mask)
    assert result["downsample_factor"] == 2
    assert -1 <= result["ssim_masked"] < result["ssim"] <= 1  # SSIM of an inverted area is negative


def test_empty_mask_gives_nan_and_summary_skips_it():
    target = radiograph_like()
    noisy = np.clip(target + 0.1, 0, 1)
    rows = [reconstruction_metrics(noisy, target, np.zeros(target.shape, bool)),
            reconstruction_metrics(noisy, target, block_mask(target.shape, [(0, 0, 40, 40)]))]
    assert np.isnan(rows[0]["ssim_masked"]) and np.isnan(rows[0]["psnr_masked"])
    summary = summarize_reconstruction(rows)
    assert summary["mean"]["ssim"] == pytest.approx((rows[0]["ssim"] + rows[1]["ssim"]) / 2)
    assert summary["mean"]["ssim_masked"] == pytest.approx(rows[1]["ssim_masked"])
    assert summary["std"]["psnr"] == pytest.approx(np.std([rows[0]["psnr"], rows[1]["psnr"]]))
    assert summary["downsample_factors"] == [1]
    assert json.loads(json.dumps(json_ready(rows)))[0]["ssim_masked"] is None  # NaN is written as null


# --- LPIPS --------------------------------------------------------------------------------------

def check_triplet_distances(metric: LpipsMetric) -> list[float]:
    def load(name):
        rgb = np.asarray(Image.open(LPIPS_WEIGHTS_DIR / "check" / name).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(rgb / 127.5 - 1.0).permute(2, 0, 1)[None]
    reference = load("ex_ref.png")
    with torch.no_grad():
        return [float(metric.model(reference, load(name))) for name in ("ex_p0.png", "ex_p1.png")]


def test_lpips_from_features_file_matches_published_values(monkeypatch):
    require(ALEXNET_FEATURES)
    monkeypatch.delenv("RBMNET_LPIPS_WEIGHTS", raising=False)
    metric = load_lpips(ALEXNET_FEATURES)
    assert isinstance(metric, LpipsMetric), metric
    assert check_triplet_distances(metric) == pytest.approx([0.722, 0.138], abs=0.002)
    target = radiograph_like(size=(64, 64))
    noisy = np.clip(target + np.random.default_rng(2).normal(0, 0.2, target.shape), 0, 1)
    assert metric(target, target) == pytest.approx(0.0, abs=1e-6)
    whole = metric(noisy, target)
    assert whole > 0.01
    assert metric.masked(noisy, target, np.ones(target.shape, bool)) == pytest.approx(whole, rel=0.02)
    result = reconstruction_metrics(noisy, target, block_mask(target.shape, [(8, 8, 24, 24)]), metric)
    assert result["lpips"] == pytest.approx(whole) and result["lpips_masked"] > 0


def test_lpips_from_environment_and_hub_cache(monkeypatch, tmp_path):
    require(ALEXNET_FEATURES)
    monkeypatch.setenv("RBMNET_LPIPS_WEIGHTS", str(ALEXNET_FEATURES))
    assert load_lpips().source == str(ALEXNET_FEATURES)
    # the official torchvision checkpoint layout: features.* plus the classifier
    monkeypatch.delenv("RBMNET_LPIPS_WEIGHTS")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    features = torch.load(ALEXNET_FEATURES, weights_only=True)
    checkpoint = {f"features.{key}": value for key, value in features.items()}
    checkpoint["classifier.1.weight"] = torch.zeros(2, 2)
    hub_file = tmp_path / "hub" / "checkpoints" / HUB_CHECKPOINT
    hub_file.parent.mkdir(parents=True)
    torch.save(checkpoint, hub_file)
    metric = load_lpips()
    assert isinstance(metric, LpipsMetric) and metric.source == str(hub_file)
    assert check_triplet_distances(metric) == pytest.approx([0.722, 0.138], abs=0.002)


def test_lpips_unavailable_never_random(monkeypatch, tmp_path):
    monkeypatch.delenv("RBMNET_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    nothing = load_lpips()
    assert isinstance(nothing, LpipsUnavailable) and not nothing
    assert "alexnet-owt-7be5be79.pth" in nothing.reason
    missing = tmp_path / "missing_features.pth"
    unavailable = load_lpips(missing)
    assert isinstance(unavailable, LpipsUnavailable) and str(missing) in unavailable.reason
    # a file lacking one backbone tensor would leave that layer random: refused
    incomplete = tmp_path / "incomplete.pth"
    state = {"0.weight": torch.zeros(64, 3, 11, 11), "0.bias": torch.zeros(64)}
    torch.save(state, incomplete)
    refused = load_lpips(incomplete)
    assert isinstance(refused, LpipsUnavailable) and "not AlexNet features" in refused.reason
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert isinstance(load_lpips(garbage), LpipsUnavailable)
