"""Dataset checks: every problem is a one-line error naming the case; oddities are fixed with a note."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from raw_factory import make_raw_dataset, radiograph, write_png
from rbmnet.cli.plan_and_preprocess import main as plan_main
from rbmnet.cli.plan_and_preprocess import plan_and_preprocess
from rbmnet.data.checks import check_dataset
from rbmnet.data.dataset_json import make_dataset_json, tooth_labels, write_dataset_json
from rbmnet.errors import RbmnetError
from rbmnet.paths import preprocessed_root
from rbmnet.preprocessing.store import PreprocessedDataset


def _size_mismatch(folder):
    write_png(folder / "labelsTr" / "lab001.png", np.zeros((16, 64), np.uint8))


def _truncated(folder):
    path = folder / "imagesTr" / "lab002.png"
    path.write_bytes(path.read_bytes()[:200])


def _undeclared_label(folder):
    label = np.array(Image.open(folder / "labelsTr" / "lab000.png"))
    label[0, :3] = [99, 100, 200]
    write_png(folder / "labelsTr" / "lab000.png", label)


def _image_without_label(folder):
    (folder / "labelsTr" / "lab003.png").unlink()


def _label_without_image(folder):
    shutil.copy(folder / "labelsTr" / "lab000.png", folder / "labelsTr" / "extra.png")


def _empty(folder):
    for sub in ("imagesTr", "labelsTr", "imagesUnlabeled"):
        shutil.rmtree(folder / sub)


def _json_missing(folder):
    (folder / "dataset.json").unlink()


def _json_malformed(folder):
    (folder / "dataset.json").write_text('{"name": "Tiny", ')


def _duplicate_across_folders(folder):
    shutil.copy(folder / "imagesTr" / "lab000.png", folder / "imagesTs" / "lab000.png")


def _duplicate_in_folder(folder):
    Image.open(folder / "imagesUnlabeled" / "unl000.png").save(folder / "imagesUnlabeled" / "unl000.bmp")


def _non_image(folder):
    (folder / "imagesUnlabeled" / "notes.txt").write_text("not a radiograph")


def _colour_image(folder):
    rgb = np.zeros((32, 64, 3), np.uint8)
    rgb[..., 0] = 200  # red: real colour
    write_png(folder / "imagesUnlabeled" / "unl001.png", rgb)


BREAKERS = {
    "size mismatch": (_size_mismatch, ["case 'lab001'", "32x64", "16x64", "same size"]),
    "truncated": (_truncated, ["lab002.png", "unreadable or truncated"]),
    "undeclared labels": (_undeclared_label, ["case 'lab000'", "99, 100, 200", "not declared", "11-18"]),
    "image without label": (_image_without_label, ["case 'lab003'", "has no label", "imagesUnlabeled"]),
    "label without image": (_label_without_image, ["case 'extra'", "labelsTr/extra.png", "has no image"]),
    "empty": (_empty, ["empty dataset", "Tiny"]),
    "dataset.json missing": (_json_missing, ["dataset.json missing"]),
    "dataset.json malformed": (_json_malformed, ["dataset.json is not valid JSON"]),
    "duplicate across folders": (_duplicate_across_folders, ["case 'lab000'", "imagesTr/", "imagesTs/", "unique"]),
    "duplicate in one folder": (_duplicate_in_folder, ["case 'unl000'", "twice", "unl000.bmp"]),
    "non-image file": (_non_image, ["notes.txt", "not an image file"]),
    "colour image": (_colour_image, ["unl001.png", "colour image"]),
}


@pytest.mark.parametrize("problem", sorted(BREAKERS))
def test_each_problem_is_one_line_naming_the_case(roots, problem):
    breaker, expected = BREAKERS[problem]
    breaker(make_raw_dataset(roots["raw"]))
    with pytest.raises(RbmnetError) as caught:
        check_dataset("Tiny")
    message = str(caught.value)
    assert "\n" not in message
    for part in expected:
        assert part in message

    result = CliRunner().invoke(plan_main, ["-d", "Tiny", "-np", "1", "-q"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    for part in expected:
        assert part in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback


def test_unknown_dataset_lists_existing(roots):
    make_raw_dataset(roots["raw"], "Tiny")
    make_raw_dataset(roots["raw"], "Other", n_labeled=5)
    with pytest.raises(RbmnetError, match=r"unknown dataset 'Nope'.*Other, Tiny"):
        check_dataset("Nope")
    result = CliRunner().invoke(plan_main, ["-d", "Nope", "-q"])
    assert result.exit_code == 2
    assert "unknown dataset 'Nope'" in result.output and "Other, Tiny" in result.output


def test_problem_found_in_a_worker_process_is_reported(roots):
    _undeclared_label(make_raw_dataset(roots["raw"]))
    with pytest.raises(RbmnetError, match="case 'lab000'"):
        check_dataset("Tiny", num_processes=2)


def test_valid_dataset_inventory(roots):
    folder = make_raw_dataset(roots["raw"], n_labeled=6, n_unlabeled=2, n_test=1)
    (folder / "imagesTr" / ".DS_Store").write_bytes(b"\x00\x01junk")  # hidden files are not cases
    (folder / "imagesUnlabeled" / "Thumbs.db").write_bytes(b"junk")
    inventory = check_dataset(None)  # the only dataset: the name may be omitted
    assert inventory.name == "Tiny" and inventory.folder == folder
    assert inventory.dataset_json["tooth_numbering"] == "FDI"
    assert [c for c, _, _ in inventory.labeled] == [f"lab{i:03d}" for i in range(6)]
    case, image, label = inventory.labeled[2]
    assert image == folder / "imagesTr" / "lab002.png" and label == folder / "labelsTr" / "lab002.png"
    assert inventory.unlabeled == [("unl000", folder / "imagesUnlabeled" / "unl000.png"),
                                   ("unl001", folder / "imagesUnlabeled" / "unl001.png")]
    assert inventory.test == [("tst000", folder / "imagesTs" / "tst000.png")]
    assert inventory.notes == []


def test_mask_0_255_and_rgb_gray_are_fixed_with_a_warning(roots):
    folder = roots["raw"] / "Binary"
    for i in range(5):
        mask = np.zeros((32, 48), np.uint8)
        mask[8:20, 4 + i:20 + i] = 255
        gray = radiograph((32, 48), i, mask)
        write_png(folder / "imagesTr" / f"c{i}.png", np.stack([gray] * 3, axis=-1))  # gray stored as RGB
        write_png(folder / "labelsTr" / f"c{i}.png", mask)
    write_dataset_json(folder, make_dataset_json("Binary", tooth_labels(None), 5, 0))

    notes = check_dataset("Binary").notes
    assert any("0/255" in n and "label 1" in n and "5 case(s)" in n for n in notes)
    assert any("RGB" in n and "grayscale" in n for n in notes)

    with pytest.warns(UserWarning) as caught:
        plan = plan_and_preprocess("Binary", num_processes=1, verbose=False)
    messages = [str(w.message) for w in caught]
    assert any("0/255" in m for m in messages) and any("RGB" in m for m in messages)
    store = PreprocessedDataset(preprocessed_root() / "Binary" / plan.configuration)
    label = store.label("c0")
    assert set(np.unique(label).tolist()) == {0, 1}
    assert label.sum() == 12 * 16  # the mask's pixels, now value 1

    result = CliRunner().invoke(plan_main, ["-d", "Binary", "-q"])
    assert result.exit_code == 0
    assert "warning: " in result.output and "0/255" in result.output


def test_mask_0_255_with_many_labels_is_an_error(roots):
    folder = make_raw_dataset(roots["raw"])
    mask = np.zeros((32, 64), np.uint8)
    mask[4:8, 4:8] = 255
    write_png(folder / "labelsTr" / "lab004.png", mask)
    with pytest.raises(RbmnetError, match=r"case 'lab004': label values 255 .* not declared"):
        check_dataset("Tiny")


def test_count_mismatch_in_dataset_json_is_a_note(roots):
    folder = make_raw_dataset(roots["raw"])
    content = json.loads((folder / "dataset.json").read_text())
    content["numTraining"] = 99
    (folder / "dataset.json").write_text(json.dumps(content))
    notes = check_dataset("Tiny").notes
    assert notes == ["dataset.json says numTraining=99 but imagesTr/ holds 6 images; using the files"]
