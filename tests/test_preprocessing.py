"""The preprocessed store written by rbmnet_plan_and_preprocess: round trip, reuse, parallel = serial."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from raw_factory import TOOTH_VALUES, make_raw_dataset
from rbmnet.cli.plan_and_preprocess import main as plan_main
from rbmnet.cli.plan_and_preprocess import plan_and_preprocess
from rbmnet.data.checks import inventory_dataset
from rbmnet.paths import preprocessed_root
from rbmnet.preprocessing.preprocess import preprocess_dataset
from rbmnet.preprocessing.store import PreprocessedDataset
from rbmnet.preprocessing.transforms import preprocess_image

REPO = Path(__file__).resolve().parents[1]


def _store(plan) -> PreprocessedDataset:
    return PreprocessedDataset(preprocessed_root() / plan.dataset_name / plan.configuration)


def test_round_trip_at_raw_size(roots):
    folder = make_raw_dataset(roots["raw"], n_labeled=6, n_unlabeled=2, n_test=1, shape=(32, 64), bits=16)
    plan = plan_and_preprocess("Tiny", num_processes=1, verbose=False)
    assert plan.input_size == [32, 64]  # the raw size: no resampling
    store = _store(plan)
    store.check_matches(plan)
    assert store.images.dtype == np.float16 and store.images.shape == (9, 32, 64)
    assert store.labels.dtype == np.uint8 and store.labels.shape == (6, 32, 64)
    assert store.names("labeled") == [f"lab{i:03d}" for i in range(6)]
    assert store.names("unlabeled") == ["unl000", "unl001"] and store.names("test") == ["tst000"]

    raw_image = np.array(Image.open(folder / "imagesTr" / "lab004.png"))
    raw_label = np.array(Image.open(folder / "labelsTr" / "lab004.png"))
    np.testing.assert_array_equal(store.label("lab004"), raw_label)  # values and positions kept
    expected, properties = preprocess_image(raw_image, plan.input_size, plan.normalization)
    np.testing.assert_allclose(store.image("lab004"), expected, atol=1e-3)  # float16 precision
    assert 0.0 <= float(store.images.min()) and float(store.images.max()) <= 1.0

    record = store.record("lab004")
    assert (record.role, record.index, record.label_index) == ("labeled", 4, 4)
    assert record.source == "imagesTr/lab004.png"
    assert record.original_shape == [32, 64] and record.original_dtype == "uint16"
    assert record.clip_low == pytest.approx(properties["clip_low"]) and record.clip_high > record.clip_low
    test_record = store.record("tst000")
    assert (test_record.role, test_record.index, test_record.label_index) == ("test", 8, None)
    assert test_record.source == "imagesTs/tst000.png"

    copied = json.loads((preprocessed_root() / "Tiny" / "dataset.json").read_text())
    assert copied == json.loads((folder / "dataset.json").read_text())
    leftovers = [p.name for p in (preprocessed_root() / "Tiny" / plan.configuration).iterdir()]
    assert sorted(leftovers) == ["cases.json", "images.npy", "labels.npy"]  # no temporary files


def test_resized_labels_keep_their_values(roots):
    make_raw_dataset(roots["raw"], shape=(40, 72))
    plan = plan_and_preprocess("Tiny", num_processes=1, verbose=False, input_size=[32, 48])
    store = _store(plan)
    assert store.images.shape == (9, 32, 48)
    for name in store.names("labeled"):
        assert set(np.unique(store.label(name)).tolist()) == {0, *TOOTH_VALUES}  # nearest neighbour
    assert store.record("lab000").original_shape == [40, 72]


def test_parallel_equals_serial(roots, tmp_path):
    make_raw_dataset(roots["raw"], n_labeled=6, n_unlabeled=3, n_test=2)
    plan = plan_and_preprocess("Tiny", num_processes=1, verbose=False)
    inventory = inventory_dataset("Tiny")
    assert preprocess_dataset(inventory, plan, tmp_path / "parallel", num_processes=2, verbose=False)
    serial, parallel = _store(plan), PreprocessedDataset(tmp_path / "parallel")
    np.testing.assert_array_equal(serial.images, parallel.images)
    np.testing.assert_array_equal(serial.labels, parallel.labels)
    assert serial.cases == parallel.cases


def test_unchanged_data_are_not_preprocessed_again(roots):
    folder = make_raw_dataset(roots["raw"])
    plan = plan_and_preprocess("Tiny", num_processes=1, verbose=False)
    images_path = preprocessed_root() / "Tiny" / plan.configuration / "images.npy"
    inventory = inventory_dataset("Tiny")
    first = images_path.stat().st_mtime_ns
    assert not preprocess_dataset(inventory, plan, images_path.parent, num_processes=1, verbose=False)
    assert images_path.stat().st_mtime_ns == first

    result = CliRunner().invoke(plan_main, ["-d", "Tiny", "-np", "1"])
    assert "up to date, skipped" in result.output

    assert preprocess_dataset(inventory, plan, images_path.parent, num_processes=1, overwrite=True, verbose=False)
    # a raw file that changed (new mtime) makes the store stale
    path = folder / "imagesUnlabeled" / "unl001.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert preprocess_dataset(inventory_dataset("Tiny"), plan, images_path.parent, 1, verbose=False)
    # so does another normalization in the plan
    plan.normalization.upper_percentile = 99.0
    assert preprocess_dataset(inventory_dataset("Tiny"), plan, images_path.parent, 1, verbose=False)
    assert _store(plan).normalization["upper_percentile"] == 99.0


def test_read_speed_benchmark_writes_both_timings(roots, tmp_path):
    make_raw_dataset(roots["raw"])
    plan_and_preprocess("Tiny", num_processes=1, verbose=False)
    spec = importlib.util.spec_from_file_location("read_speed", REPO / "benchmarks" / "read_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "read_speed.json"
    result = CliRunner().invoke(module.main, ["-d", "Tiny", "--cases", "4", "--repeats", "2", "-o", str(output)])
    assert "decode source:" in result.output and "read preprocessed:" in result.output
    measured = json.loads(output.read_text())
    assert measured["cases"] == 4
    assert measured["decode_source_ms_per_case"] > 0 and measured["read_preprocessed_ms_per_case"] > 0
