"""Model archives: a round trip onto a fresh results root, and every crafted archive refused with one line
and nothing written (traversal, links, unlisted or tampered members, pickles that would run code, damage)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rbmnet.cli.install_model import main as install_cli
from rbmnet.errors import RbmnetError
from rbmnet.export.archive import MANIFEST, archive_members, install_archive, write_archive
from rbmnet.inference.predictor import predict_folder
from rbmnet.io.images import read_image, write_png
from test_predict import MODEL_ID, make_model_folder


@pytest.fixture
def model(roots):
    return make_model_folder(roots["results"] / "Teeth", folds=(0, 1))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(1)
    for name, shape in {"a.png": (40, 90), "b.png": (33, 70)}.items():
        write_png(folder / name, rng.integers(0, 256, shape, dtype=np.uint8))
    return folder


def install(archive: Path, *args: str):
    return CliRunner().invoke(install_cli, [str(archive), *args])


def test_round_trip_predicts_the_same_masks_from_a_fresh_results_root(model, images, tmp_path, monkeypatch):
    archive = tmp_path / "model.zip"
    manifest = write_archive(model, archive)
    assert {e["path"] for e in manifest["files"]} == {"plans.json", "dataset.json", "fold_0/checkpoint_final.pt",
                                                      "fold_1/checkpoint_final.pt"}
    predict_folder(images, tmp_path / "original", model, progress=False)
    fresh = tmp_path / "elsewhere"
    monkeypatch.setenv("RBMNET_RESULTS", str(fresh))
    result = install(archive)
    assert result.exit_code == 0, result.output
    installed = fresh / "Teeth" / MODEL_ID
    assert f"rbmnet_predict -d Teeth -m {MODEL_ID}" in result.output
    from rbmnet.cli.predict import main as predict_cli

    predicted = CliRunner().invoke(predict_cli, ["-i", str(images), "-o", str(tmp_path / "installed"), "-d", "Teeth"])
    assert predicted.exit_code == 0, predicted.output
    for name in ("a.png", "b.png"):
        assert np.array_equal(read_image(tmp_path / "original" / name), read_image(tmp_path / "installed" / name))
    assert sorted(p.name for p in installed.iterdir()) == ["dataset.json", "fold_0", "fold_1", "plans.json"]


def test_an_installed_model_is_replaced_only_with_overwrite(model, tmp_path, monkeypatch):
    archive = tmp_path / "model.zip"
    write_archive(model, archive)
    monkeypatch.setenv("RBMNET_RESULTS", str(tmp_path / "fresh"))
    assert install(archive).exit_code == 0
    result = install(archive)
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert install(archive, "--overwrite").exit_code == 0
    assert not [p for p in (tmp_path / "fresh" / "Teeth").iterdir() if p.name.startswith(".")], "staging left"


def test_archiving_before_any_training_says_what_to_train(roots):
    (roots["results"] / "Teeth" / MODEL_ID).mkdir(parents=True)
    with pytest.raises(RbmnetError, match="no trained fold.*rbmnet_train seg"):
        archive_members(roots["results"] / "Teeth" / MODEL_ID)


# --- crafted archives ------------------------------------------------------------------------------

def _members_of(model: Path) -> dict[str, bytes]:
    return {name: (model / name).read_bytes() for name in archive_members(model)}


def _craft(path: Path, members: dict[str, bytes], listed: dict[str, bytes] | None = None,
           links: tuple[str, ...] = ()) -> Path:
    """A zip with `members`, and a manifest listing `listed` (default: the members) with their checksums."""
    listed = members if listed is None else listed
    manifest = {"format": "rbmnet-model-archive", "format_version": 1, "rbmnet_version": "0", "dataset": "Teeth",
                "model_id": MODEL_ID, "files": [{"path": n, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                                               for n, b in listed.items()]}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return path


class RunsCode:
    """A pickle whose loading would create a file: weights_only loading must refuse it unexecuted."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_cases(model: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = _members_of(model)
    marker = tmp_path / "code_ran"
    evil = io.BytesIO()
    torch.save({"plan": {}, "network": RunsCode(marker)}, evil)
    tampered = dict(good)
    data = bytearray(good["fold_0/checkpoint_final.pt"])
    data[len(data) // 2] ^= 0xFF  # one byte changed, the manifest's checksum kept
    tampered["fold_0/checkpoint_final.pt"] = bytes(data)
    truncated = tmp_path / "truncated.zip"
    write_archive(model, tmp_path / "whole.zip")
    truncated.write_bytes((tmp_path / "whole.zip").read_bytes()[:-300])
    return {
        "traversal": (_craft(tmp_path / "t.zip", {**good, "../evil.txt": b"x"}), "outside the model folder"),
        "absolute": (_craft(tmp_path / "abs.zip", {**good, "/tmp/evil.txt": b"x"}), "outside the model folder"),
        "link": (_craft(tmp_path / "l.zip", {**good, "fold_0/link": b"/etc/passwd"}, links=("fold_0/link",)),
                 "is a link"),
        "unlisted": (_craft(tmp_path / "u.zip", {**good, "fold_0/extra.pt": b"x"}, listed=good), "not in manifest.json"),
        "tampered": (_craft(tmp_path / "c.zip", tampered, listed=good), "does not match its checksum"),
        "missing": (_craft(tmp_path / "m.zip", {k: v for k, v in good.items() if k != "dataset.json"}, listed=good),
                    "lists 'dataset.json', which the archive lacks"),
        "pickle_runs_code": (_craft(tmp_path / "p.zip", {**good, "fold_0/checkpoint_final.pt": evil.getvalue()}),
                             "cannot load checkpoint"),
        "truncated": (truncated, "not a readable model archive"),
        "no_manifest": (_craft_plain(tmp_path / "n.zip", good), "no manifest.json"),
    }


def _craft_plain(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


CASES = ["traversal", "absolute", "link", "unlisted", "tampered", "missing", "pickle_runs_code", "truncated",
         "no_manifest"]


@pytest.mark.parametrize("case", CASES)
def test_crafted_archives_are_refused_with_one_line_and_nothing_written(case, model, tmp_path, monkeypatch):
    archive, says = _crafted_cases(model, tmp_path)[case]
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("RBMNET_RESULTS", str(fresh))
    result = install(archive)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {archive}") and says in lines[0], result.output
    leftovers = [p for p in fresh.rglob("*")] if fresh.exists() else []
    assert all(p.is_dir() and not any(p.iterdir()) for p in leftovers), leftovers
    assert not (tmp_path / "code_ran").exists(), "a pickle in the archive ran code"
    assert not (tmp_path / "evil.txt").exists()


def test_an_existing_model_is_kept_when_a_replacement_is_refused(model, tmp_path, monkeypatch):
    archive = tmp_path / "model.zip"
    write_archive(model, archive)
    monkeypatch.setenv("RBMNET_RESULTS", str(tmp_path / "fresh"))
    assert install(archive).exit_code == 0
    installed = tmp_path / "fresh" / "Teeth" / MODEL_ID / "fold_0" / "checkpoint_final.pt"
    before = installed.read_bytes()
    bad, _ = _crafted_cases(model, tmp_path)["tampered"]
    with pytest.raises(RbmnetError, match="checksum"):
        install_archive(bad, tmp_path / "fresh", overwrite=True)
    assert installed.read_bytes() == before
