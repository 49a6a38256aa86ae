"""Reliability of the data stages: damaged stores, gradient label maps, degenerate polygons,
decompression bombs and leftovers of killed processes each give one line naming the file."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raw_factory import make_raw_dataset, radiograph, write_png
from rbmnet.cli.plan_and_preprocess import plan_and_preprocess
from rbmnet.conversion.folder import convert_folder
from rbmnet.conversion.supervisely import convert_supervisely
from rbmnet.data.checks import inventory_dataset
from rbmnet.data.dataset_json import FDI_TEETH, make_dataset_json, write_dataset_json
from rbmnet.errors import RbmnetError
from rbmnet.io.images import read_image
from rbmnet.paths import preprocessed_root
from rbmnet.preprocessing.preprocess import preprocess_dataset
from rbmnet.preprocessing.store import PreprocessedDataset


def dead_pid() -> int:
    """The pid of a process that has exited (reuse within a test is very unlikely)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- 1. damaged preprocessed arrays --------------------------------------------------------------


def _preprocessed(roots):
    make_raw_dataset(roots["raw"], n_labeled=5, n_unlabeled=1, n_test=0)
    plan = plan_and_preprocess("Tiny", num_processes=1, verbose=False)
    return plan, preprocessed_root() / "Tiny" / plan.configuration


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _garble_header(path: Path) -> None:
    path.write_bytes(b"not an npy file" + path.read_bytes()[15:])


def _append(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 64)


@pytest.mark.parametrize("file_name, damage", [("images.npy", _truncate), ("labels.npy", _truncate),
                                               ("images.npy", _garble_header), ("labels.npy", _append),
                                               ("labels.npy", Path.unlink)])
def test_damaged_store_is_a_one_line_error_naming_the_file(roots, file_name, damage):
    _, folder = _preprocessed(roots)
    damage(folder / file_name)
    with pytest.raises(RbmnetError) as caught:
        PreprocessedDataset(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder / file_name) in message and "damaged" in message
    assert "run rbmnet_plan_and_preprocess -d Tiny again to rebuild it" in message


def test_the_rebuild_hint_names_the_plan_that_uses_the_configuration(roots):
    _, folder = _preprocessed(roots)
    plans = folder.parent / "plans.json"
    plans.rename(folder.parent / "cpu_small.json")  # only another plans name uses this configuration
    _truncate(folder / "images.npy")
    with pytest.raises(RbmnetError, match="run rbmnet_plan_and_preprocess -d Tiny -p cpu_small again"):
        PreprocessedDataset(folder)


def test_planning_again_rebuilds_a_damaged_store(roots):
    plan, folder = _preprocessed(roots)
    _truncate(folder / "images.npy")
    assert preprocess_dataset(inventory_dataset("Tiny"), plan, folder, num_processes=1, verbose=False)
    store = PreprocessedDataset(folder)  # intact again
    assert store.images.shape == (6, *plan.input_size)
    # and an intact store is still up to date
    assert not preprocess_dataset(inventory_dataset("Tiny"), plan, folder, num_processes=1, verbose=False)


# --- 2. gradient label maps and stray values -----------------------------------------------------


def _gradient_mask(shape=(64, 96)) -> np.ndarray:
    """A 0/255 mask smoothed as resizing or antialiasing does: a ramp of values at its edge."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    distance = np.hypot((rows - shape[0] / 2) / 12, (cols - shape[1] / 2) / 20)
    return (np.clip(1.6 - distance, 0, 1) * 255).astype(np.uint8)


def _folder_dataset(root: Path, labels: list[np.ndarray]) -> tuple[Path, Path]:
    for i, label in enumerate(labels):
        write_png(root / "img" / f"c{i}.png", radiograph(label.shape, i))
        write_png(root / "lab" / f"c{i}.png", label)
    return root / "img", root / "lab"


def _binary(shape=(64, 96)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[10:30, 12:40] = 1
    return label


def test_gradient_label_map_is_refused_naming_the_file(roots, tmp_path):
    gradient = _gradient_mask()
    assert len(np.unique(gradient)) > 60
    images, labels = _folder_dataset(tmp_path, [_binary(), gradient])
    with pytest.raises(RbmnetError, match=r"c1\.png: \d+ distinct label values") as caught:
        convert_folder("Grad", images, labels, progress=False)
    assert "\n" not in str(caught.value) and not (roots["raw"] / "Grad").exists()


def test_stray_value_in_a_binary_dataset_is_warned_naming_file_and_value(roots, tmp_path):
    stray = _binary()
    stray[50:51, 60:63] = 7  # three pixels of a value no other map has
    images, labels = _folder_dataset(tmp_path, [_binary(), _binary(), stray])
    result = convert_folder("Stray", images, labels, progress=False)
    warned = [note for note in result.notes if "c2.png" in note and "7" in note]
    assert len(warned) == 1 and "3 pixel" in warned[0]


def test_numbered_teeth_with_every_fdi_tooth_are_not_a_gradient(roots, tmp_path):
    label = np.zeros((64, 128), np.uint8)
    for k, tooth in enumerate(FDI_TEETH):  # 32 teeth of 4 x 8 pixels + background: 33 values
        label[(k // 16) * 32 + 8:(k // 16) * 32 + 16, (k % 16) * 8:(k % 16) * 8 + 4] = tooth
    images, labels = _folder_dataset(tmp_path, [label, label])
    result = convert_folder("Fdi", images, labels, progress=False)
    assert result.dataset_json["tooth_numbering"] == "FDI"
    assert not any("stray" in note for note in result.notes)


def _plain_class_dataset(raw: Path, labels: list[np.ndarray], declared: dict[str, int]) -> None:
    """rbmnet_raw/Plain/: plain binary maps first (five cases, as five folds need), then `labels`."""
    folder = raw / "Plain"
    labels = [_binary()] * 4 + labels
    for i, label in enumerate(labels):
        write_png(folder / "imagesTr" / f"lab{i:03d}.png", radiograph(label.shape, i, label))
        write_png(folder / "labelsTr" / f"lab{i:03d}.png", label)
    write_dataset_json(folder, make_dataset_json("Plain", declared, len(labels), 0))


def test_planning_refuses_a_gradient_label_map_even_when_declared(roots):
    declared = {"background": 0, **{f"label_{v}": v for v in range(1, 256)}}  # as an old converter wrote
    _plain_class_dataset(roots["raw"], [_gradient_mask()], declared)
    with pytest.raises(RbmnetError, match=r"labelsTr/lab004\.png: \d+ distinct label values"):
        plan_and_preprocess("Plain", num_processes=1, verbose=False)


def test_planning_warns_about_a_stray_value_naming_file_and_value(roots):
    stray = _binary()
    stray[50, 60:62] = 7
    _plain_class_dataset(roots["raw"], [stray],
                         {"background": 0, "tooth": 1, "label_7": 7})
    with pytest.warns(UserWarning, match=r"labelsTr/lab004\.png: label value 7 .*2 pixel"):
        plan_and_preprocess("Plain", num_processes=1, verbose=False)


# --- 3. degenerate Supervisely polygons ----------------------------------------------------------


def test_degenerate_polygons_are_skipped_with_a_note_naming_file_and_object(roots, tmp_path):
    dataset = tmp_path / "project" / "d1"
    (dataset / "ann").mkdir(parents=True)
    write_png(dataset / "img" / "1.png", np.full((30, 40), 100, np.uint8))
    good = {"id": 1, "geometryType": "polygon", "classTitle": "8",
            "points": {"exterior": [[2, 2], [11, 2], [11, 11], [2, 11]], "interior": []}}
    line = {"id": 2, "geometryType": "polygon", "classTitle": "9",
            "points": {"exterior": [[20, 20], [25, 25]], "interior": []}}
    nan = {"id": 3, "geometryType": "polygon", "classTitle": "10",
           "points": {"exterior": [[30, 2], [float("nan"), 2], [38, 9], [30, 9]], "interior": []}}
    annotation = {"size": {"height": 30, "width": 40}, "objects": [good, line, nan]}
    (dataset / "ann" / "1.png.json").write_text(json.dumps(annotation))  # json writes NaN as NaN
    result = convert_supervisely(tmp_path / "project", "Sly", progress=False)
    label = np.asarray(Image.open(result.dataset_dir / "labelsTr" / "1.png"))
    assert set(np.unique(label).tolist()) == {0, 8}  # the two-point 'polygon' drew nothing
    notes = [note for note in result.notes if "1.png.json" in note]
    assert any("'9'" in note and "id 2" in note and "fewer than 3 points" in note for note in notes)
    assert any("'10'" in note and "id 3" in note and "NaN" in note for note in notes)


# --- 4. decompression bombs ----------------------------------------------------------------------


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims width x height (CRC fixed, so PIL trusts the header)."""
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def test_png_declaring_a_huge_size_is_a_one_line_error_naming_the_file(tmp_path):
    path = _png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(RbmnetError, match=r"bomb\.png: .*pixels") as caught:
        read_image(path)
    assert "\n" not in str(caught.value)


def test_image_over_a_lowered_pixel_limit_is_a_one_line_error(tmp_path, monkeypatch):
    path = write_png(tmp_path / "big.png", np.zeros((24, 32), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 768 pixels: over twice the limit
    with pytest.raises(RbmnetError, match=r"big\.png: .*pixels"):
        read_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # between the limit and twice it: PIL warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. python -W error
        with pytest.raises(RbmnetError, match=r"big\.png: .*pixels"):
            read_image(path)


# --- 5. leftovers of killed processes ------------------------------------------------------------


def test_preprocessing_removes_temporary_arrays_of_dead_processes_only(roots):
    plan, folder = _preprocessed(roots)
    host, gone, alive = socket.gethostname(), dead_pid(), os.getppid()
    stale = [folder / f".images.{gone}.npy.tmp", folder / f".labels.{gone}.npy.tmp",
             folder / f".images.{host}-{gone}-0a1b2c3d.npy.tmp"]
    kept = [folder / f".images.{host}-{alive}-0a1b2c3d.npy.tmp",  # another run, still working
            folder / f".images.otherhost-{gone}-0a1b2c3d.npy.tmp"]  # a pid says nothing on another host
    for path in stale + kept:
        path.write_bytes(b"x")
    preprocess_dataset(inventory_dataset("Tiny"), plan, folder, num_processes=1, verbose=False)
    assert [p.exists() for p in stale] == [False] * len(stale)
    assert [p.exists() for p in kept] == [True] * len(kept)


def test_conversion_removes_staging_folders_of_dead_processes_only(roots, tmp_path):
    raw = roots["raw"]
    host, gone, alive = socket.gethostname(), dead_pid(), os.getppid()
    stale = [raw / f".Conv.partial-{host}-{gone}-0a1b2c3d", raw / f".Conv.old-{host}-{gone}-0a1b2c3d"]
    kept = [raw / f".Conv.partial-{host}-{alive}-0a1b2c3d", raw / f".Other.partial-{host}-{gone}-0a1b2c3d"]
    for path in stale + kept:
        (path / "imagesTr").mkdir(parents=True)
    images, labels = _folder_dataset(tmp_path, [_binary(), _binary()])
    convert_folder("Conv", images, labels, progress=False)
    assert [p.exists() for p in stale] == [False] * len(stale)
    assert [p.exists() for p in kept] == [True] * len(kept)
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".Conv.") and p not in kept]
