"""rbmnet_convert: Supervisely rasterisation, folder conversion, the synthetic generator, the CLI."""
from __future__ import annotations

import base64
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import FORMATS_DIR, require
from rbmnet.cli.convert import main
from rbmnet.conversion.folder import convert_folder
from rbmnet.conversion.supervisely import (bitmap_mask, class_values, convert_supervisely, polygon_mask,
                                           rasterise_annotation, universal_to_fdi)
from rbmnet.conversion.synthetic import generate_synthetic_case, write_synthetic_dataset
from rbmnet.conversion.writer import detect_tooth_numbering
from rbmnet.data.dataset_json import FDI_TEETH, load_dataset_json
from rbmnet.errors import RbmnetError


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def radiograph(seed: int, shape=(24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def bitmap_string(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(zlib.compress(buffer.getvalue())).decode()


def polygon_object(title: str, exterior, interior=()) -> dict:
    return {"geometryType": "polygon", "classTitle": title,
            "points": {"exterior": [list(p) for p in exterior], "interior": [list(map(list, h)) for h in interior]}}


def square(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# --- Supervisely ---------------------------------------------------------------------------------


def test_polygon_points_are_column_row_and_boundary_is_included():
    mask = polygon_mask(square(10, 5, 39, 14), [], (40, 60))  # x 10..39 (30 columns), y 5..14 (10 rows)
    assert mask.sum() == 300
    assert mask[5:15, 10:40].all()


def test_polygon_hole_removes_its_area_only():
    annotation = {"objects": [polygon_object("3", square(0, 0, 19, 19)),
                              polygon_object("4", square(5, 5, 24, 24), interior=[square(10, 10, 14, 14)])]}
    label = rasterise_annotation(annotation, {"3": 3, "4": 4}, (30, 30))
    assert (label == 4).sum() == 400 - 25
    # the hole shows what lies beneath: the earlier object, not background
    assert label[12, 12] == 3 and label[22, 22] == 4 and label[2, 2] == 3


def test_later_objects_are_drawn_over_earlier_ones():
    annotation = {"objects": [polygon_object("1", square(0, 0, 9, 9)), polygon_object("2", square(5, 5, 14, 14))]}
    label = rasterise_annotation(annotation, {"1": 1, "2": 2}, (20, 20))
    assert label[7, 7] == 2
    assert (label == 1).sum() == 100 - 25


def test_bitmap_is_placed_at_its_origin_and_clipped():
    small = np.zeros((5, 7), bool)
    small[1:4, 2:6] = True
    mask = bitmap_mask({"data": bitmap_string(small), "origin": [3, 4]}, (20, 20))
    assert mask.sum() == 12
    assert mask[5:8, 5:9].all()
    clipped = bitmap_mask({"data": bitmap_string(small), "origin": [-3, 17]}, (20, 20))
    assert clipped.sum() == 2 * 3  # rows 18..19 inside, columns 0..2 inside


def test_universal_to_fdi_matches_the_format_note():
    assert [universal_to_fdi(n) for n in (1, 8, 9, 16, 17, 24, 25, 32)] == [18, 11, 21, 28, 38, 31, 41, 48]
    values, numbering = class_values([str(n) for n in range(1, 33)], to_fdi=True)
    assert numbering == "FDI" and sorted(values.values()) == FDI_TEETH


def test_real_sample_annotation_gives_two_teeth_of_plausible_area():
    path = require(FORMATS_DIR / "sample_ann_1.jpg.json")
    annotation = json.loads(path.read_text())
    shape = (annotation["size"]["height"], annotation["size"]["width"])
    values, numbering = class_values(["8", "9"], to_fdi=True)
    label = rasterise_annotation(annotation, values, shape)
    assert numbering == "FDI" and set(np.unique(label)) == {0, 11, 21}
    for obj, value in zip(annotation["objects"], (11, 21)):
        ring = np.asarray(obj["points"]["exterior"], float)
        x, y = ring[:, 0], ring[:, 1]
        shoelace = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        area = (label == value).sum()
        assert 0.97 * shoelace < area < 1.1 * shoelace  # boundary pixels add a little
        assert 5000 < area < 20000  # an incisor on a 2041 x 1024 panoramic
    # the upper right central incisor (Universal 8) lies left of the upper left one (9) on the image
    assert np.nonzero(label == 11)[1].mean() < np.nonzero(label == 21)[1].mean()


def make_supervisely_project(root: Path) -> Path:
    project = root / "Teeth Segmentation JSON"
    dataset = project / "d2"
    (dataset / "ann").mkdir(parents=True)
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        save(dataset / "img" / name, np.full((30, 40), 100, np.uint8))
    annotations = {
        "1.jpg": {"size": {"height": 30, "width": 40},
                  "objects": [polygon_object("8", square(2, 2, 11, 11)),
                              {"geometryType": "bitmap", "classTitle": "25",
                               "bitmap": {"data": bitmap_string(np.ones((4, 5), bool)), "origin": [20, 20]}},
                              {"geometryType": "point", "classTitle": "8", "points": {"exterior": [[1, 1]]}}]},
        "2.jpg": {"size": {"height": 30, "width": 40}, "objects": []},
    }
    for name, content in annotations.items():
        (dataset / "ann" / f"{name}.json").write_text(json.dumps(content))
    return project


def test_supervisely_project_conversion(roots, tmp_path):
    project = make_supervisely_project(tmp_path)
    result = convert_supervisely(project, "Public", progress=False)
    content = load_dataset_json(result.dataset_dir)
    assert content["tooth_numbering"] == "universal" and content["numTraining"] == 1
    assert content["numUnlabeled"] == 2  # no objects, and no annotation at all
    assert any("imagesUnlabeled" in note and "2.jpg" in note for note in result.notes)
    assert any("skipped" in note for note in result.notes)
    label = np.asarray(Image.open(result.dataset_dir / "labelsTr" / "1.png"))
    assert (label == 8).sum() == 100 and (label == 25).sum() == 20
    fdi = convert_supervisely(project, "PublicFDI", to_fdi=True, progress=False)
    label = np.asarray(Image.open(fdi.dataset_dir / "labelsTr" / "1.png"))
    assert set(np.unique(label)) == {0, 11, 41}
    assert load_dataset_json(fdi.dataset_dir)["tooth_numbering"] == "FDI"


def test_supervisely_meta_json_lists_the_classes(roots, tmp_path):
    project = make_supervisely_project(tmp_path)
    classes = [{"title": str(n), "shape": "polygon"} for n in range(1, 33)]
    (project / "meta.json").write_text(json.dumps({"classes": classes}))
    content = convert_supervisely(project, "WithMeta", progress=False).dataset_json
    assert content["labels"]["tooth_32"] == 32 and len(content["labels"]) == 33
    (project / "meta.json").write_text(json.dumps({"classes": [{"title": "8"}]}))
    with pytest.raises(RbmnetError, match=r"\['25'\].*not in meta.json"):
        convert_supervisely(project, "BadMeta", progress=False)


def test_supervisely_size_mismatch_names_the_annotation(roots, tmp_path):
    project = make_supervisely_project(tmp_path)
    ann = project / "d2" / "ann" / "1.jpg.json"
    content = json.loads(ann.read_text())
    content["size"] = {"height": 31, "width": 40}
    ann.write_text(json.dumps(content))
    with pytest.raises(RbmnetError, match=r"1\.jpg\.json.*differs"):
        convert_supervisely(project, "Bad", progress=False)
    assert not (roots["raw"] / "Bad").exists()  # nothing half-written is left behind


# --- folder --------------------------------------------------------------------------------------


def test_numbering_detection_rule():
    assert detect_tooth_numbering({0, 1}) is None  # a binary mask is not universal
    assert detect_tooth_numbering({0, 1, 2}) is None
    assert detect_tooth_numbering({0, 1, 2, 3}) == "universal"
    assert detect_tooth_numbering({0, 11, 21, 38, 48}) == "FDI"
    assert detect_tooth_numbering({0, 11, 50}) is None


def test_binary_masks_0_255_become_0_1_with_a_note(roots, tmp_path):
    for i in range(2):
        save(tmp_path / "img" / f"c{i}.png", radiograph(i))
        mask = np.zeros((24, 32), np.uint8)
        mask[5:10, 3:20] = 255
        save(tmp_path / "lab" / f"c{i}.png", mask)
    result = convert_folder("Masks", tmp_path / "img", tmp_path / "lab", progress=False)
    label = np.asarray(Image.open(result.dataset_dir / "labelsTr" / "c0.png"))
    assert set(np.unique(label)) == {0, 1} and label.sum() == 5 * 17
    assert any("0/255" in note for note in result.notes)
    content = load_dataset_json(result.dataset_dir)
    assert content["labels"] == {"background": 0, "tooth": 1} and content["tooth_numbering"] is None


def test_rgb_gray_collapsed_and_16_bit_kept_and_fdi_detected(roots, tmp_path):
    gray = radiograph(0)
    save(tmp_path / "img" / "rgb.jpg", np.stack([gray] * 3, axis=-1))
    deep = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80)
    save(tmp_path / "img" / "deep.tif", deep)
    label = np.zeros((24, 32), np.uint8)
    label[2:6, 2:6], label[10:14, 10:14] = 11, 46
    save(tmp_path / "lab" / "rgb.png", label)
    save(tmp_path / "lab" / "deep.bmp", label)
    result = convert_folder("Mixed", tmp_path / "img", tmp_path / "lab", progress=False)
    with Image.open(result.dataset_dir / "imagesTr" / "rgb.png") as img:
        assert img.mode == "L"
        assert np.abs(np.asarray(img).astype(int) - gray).mean() < 8  # JPEG is lossy
    with Image.open(result.dataset_dir / "imagesTr" / "deep.png") as img:
        assert np.array_equal(np.asarray(img), deep) and np.asarray(img).dtype == np.uint16
    assert any("RGB" in note for note in result.notes) and any("16-bit" in note for note in result.notes)
    content = load_dataset_json(result.dataset_dir)
    assert content["tooth_numbering"] == "FDI" and len(content["labels"]) == 33
    stored = np.asarray(Image.open(result.dataset_dir / "labelsTr" / "deep.png"))
    assert np.array_equal(stored, label)  # tooth numbers stay tooth numbers


def test_jpeg_masks_are_thresholded_and_explicit_numbering_is_checked(roots, tmp_path):
    mask = np.zeros((24, 32), np.uint8)
    mask[4:16, 6:22] = 255
    save(tmp_path / "img" / "a.png", radiograph(0))
    save(tmp_path / "lab" / "a.jpg", mask)  # lossy: values smeared around 0 and 255
    result = convert_folder("Jpeg", tmp_path / "img", tmp_path / "lab", progress=False)
    label = np.asarray(Image.open(result.dataset_dir / "labelsTr" / "a.png"))
    assert set(np.unique(label)) == {0, 1} and abs(int(label.sum()) - 12 * 16) <= 4
    assert any("JPEG" in note for note in result.notes)
    with pytest.raises(RbmnetError, match=r"a\.jpg: label value\(s\) \[1\] are not FDI tooth numbers"):
        convert_folder("Fdi", tmp_path / "img", tmp_path / "lab", numbering="FDI", progress=False)


def make_folder_dataset(root: Path, n: int = 3) -> tuple[Path, Path]:
    for i in range(n):
        save(root / "img" / f"case{i}.png", radiograph(i))
        label = np.zeros((24, 32), np.uint8)
        label[3:9, 4:12] = 1
        save(root / "lab" / f"case{i}.png", label)
    return root / "img", root / "lab"


def test_image_without_label_is_an_error_unless_sent_to_unlabeled(roots, tmp_path):
    images, labels = make_folder_dataset(tmp_path)
    save(images / "lonely.png", radiograph(9))
    save(tmp_path / "extra" / "more.png", radiograph(10))
    with pytest.raises(RbmnetError, match="lonely.png: image without label"):
        convert_folder("D", images, labels, progress=False)
    result = convert_folder("D", images, labels, unlabeled_dir=tmp_path / "extra",
                            unmatched_to_unlabeled=True, progress=False)
    content = load_dataset_json(result.dataset_dir)
    assert (content["numTraining"], content["numUnlabeled"]) == (3, 2)
    assert (result.dataset_dir / "imagesUnlabeled" / "lonely.png").is_file()
    assert not (result.dataset_dir / "labelsTr" / "lonely.png").exists()


@pytest.mark.parametrize("problem, message", [
    ("size", r"case0\.png: label size 32x20 differs"),
    ("no_image", r"orphan\.png: label without image"),
    ("not_image", r"notes\.txt: not an image file"),
    ("duplicate", r"case1\.png: duplicate case name 'case1' \(also case1\.jpg\)"),
    ("unreadable", r"case2\.png: unreadable"),
])
def test_bad_inputs_are_one_line_errors_naming_the_file(roots, tmp_path, problem, message):
    images, labels = make_folder_dataset(tmp_path)
    if problem == "size":
        save(labels / "case0.png", np.zeros((20, 32), np.uint8))
    elif problem == "no_image":
        save(labels / "orphan.png", np.zeros((24, 32), np.uint8))
    elif problem == "not_image":
        (images / "notes.txt").write_text("hello")
    elif problem == "duplicate":
        save(images / "case1.jpg", radiograph(1))
    elif problem == "unreadable":
        (images / "case2.png").write_bytes(b"not a png")
    (images / ".DS_Store").write_bytes(b"\0")  # ignored, never an error
    (images / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(RbmnetError, match=message):
        convert_folder("Bad", images, labels, num_processes=2 if problem == "size" else 1, progress=False)
    assert not (roots["raw"] / "Bad").exists()


def test_existing_dataset_is_refused_unless_overwrite(roots, tmp_path):
    images, labels = make_folder_dataset(tmp_path)
    convert_folder("D", images, labels, progress=False)
    with pytest.raises(RbmnetError, match="exists already"):
        convert_folder("D", images, labels, progress=False)
    (images / "case0.png").unlink()
    (labels / "case0.png").unlink()
    result = convert_folder("D", images, labels, overwrite=True, progress=False)
    assert load_dataset_json(result.dataset_dir)["numTraining"] == 2
    assert sorted(p.name for p in (result.dataset_dir / "imagesTr").iterdir()) == ["case1.png", "case2.png"]
    assert [p.name for p in roots["raw"].iterdir()] == ["D"]  # no staging folders left


# --- synthetic -----------------------------------------------------------------------------------


def test_synthetic_cases_are_seeded():
    a_image, a_label = generate_synthetic_case(np.random.default_rng(5), 96, 192)
    b_image, b_label = generate_synthetic_case(np.random.default_rng(5), 96, 192)
    c_image, _ = generate_synthetic_case(np.random.default_rng(6), 96, 192)
    assert np.array_equal(a_image, b_image) and np.array_equal(a_label, b_label)
    assert not np.array_equal(a_image, c_image)
    assert a_image.dtype == np.uint8 and a_image.shape == (96, 192) and a_label.shape == (96, 192)


def test_synthetic_labels_are_fdi_teeth_covering_a_plausible_fraction():
    for seed in range(4):
        image, label = generate_synthetic_case(np.random.default_rng(seed), 128, 256)
        values = set(np.unique(label).tolist()) - {0}
        assert values <= set(FDI_TEETH) and len(values) >= 16
        assert 0.05 < (label > 0).mean() < 0.40
        # teeth are visible (brighter on average) yet not separable by one global threshold
        teeth, rest = image[label > 0].astype(float), image[label == 0].astype(float)
        assert teeth.mean() > rest.mean() + 10
        best_dice = max(2 * ((image >= t) & (label > 0)).sum() / ((image >= t).sum() + (label > 0).sum())
                        for t in range(0, 256, 4))
        assert best_dice < 0.9
        # upper right quadrant (1x) is on the image's left, upper teeth above lower ones
        rows_1, cols_1 = np.nonzero((label >= 11) & (label <= 18))
        rows_4, cols_4 = np.nonzero((label >= 41) & (label <= 48))
        _, cols_2 = np.nonzero((label >= 21) & (label <= 28))
        assert cols_1.mean() < cols_2.mean() and rows_1.mean() < rows_4.mean()


def test_synthetic_dataset_is_byte_identical_for_one_seed(tmp_path, monkeypatch):
    folders = []
    for run in ("a", "b"):
        monkeypatch.setenv("RBMNET_RAW", str(tmp_path / run))
        result = write_synthetic_dataset("Teeth", num_labeled=2, num_unlabeled=1, num_test=1, height=64,
                                         width=128, seed=3, progress=False)
        folders.append(result.dataset_dir)
    files_a = sorted(p.relative_to(folders[0]) for p in folders[0].rglob("*.png"))
    assert len(files_a) == 2 * 2 + 1 + 2  # imagesTr+labelsTr, imagesUnlabeled, imagesTs+labelsTs
    for relative in files_a:
        assert (folders[0] / relative).read_bytes() == (folders[1] / relative).read_bytes()
    content = load_dataset_json(folders[0])
    assert (content["numTraining"], content["numUnlabeled"], content["numTest"]) == (2, 1, 1)
    assert content["tooth_numbering"] == "FDI"


# --- command line --------------------------------------------------------------------------------


def test_cli_bad_input_exits_2_with_one_line(roots, tmp_path):
    images, labels = make_folder_dataset(tmp_path)
    save(labels / "case0.png", np.zeros((20, 32), np.uint8))
    result = CliRunner().invoke(main, ["folder", "--images", str(images), "--labels", str(labels), "-d", "X"])
    assert result.exit_code == 2
    assert "error:" in result.output and "case0.png" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_synthetic_then_refuses_to_overwrite(roots):
    runner = CliRunner()
    args = ["synthetic", "-d", "Tiny", "--num-labeled", "1", "--num-unlabeled", "1", "--num-test", "0",
            "--height", "64", "--width", "128", "-np", "1"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "1 labeled, 1 unlabeled" in first.output
    assert (roots["raw"] / "Tiny" / "labelsTr" / "synthetic_0000.png").is_file()
    second = runner.invoke(main, args)
    assert second.exit_code == 2 and "--overwrite" in second.output
    assert runner.invoke(main, args + ["--overwrite"]).exit_code == 0
