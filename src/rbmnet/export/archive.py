"""A trained model as one file: write it on one machine, install it into a results root on another.

An archive is a zip of the model folder's files that prediction needs (plan, dataset.json, each
trained fold's final checkpoint, the post-processing decision, cross-validation summary, ONNX exports
when present) and `manifest.json`: the rbmnet version, dataset, model id, and every file's size and
SHA-256. Installing trusts nothing in the archive: members that would land outside the model folder
(absolute paths, '..', links), files the manifest does not list or whose checksum differs, checkpoints
that do not load with weights_only=True and plans that do not validate are refused with one line, and
the model is unpacked into a staging folder that only replaces the target once everything passed.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from rbmnet import __version__
from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import atomic_path
from rbmnet.layout import (CHECKPOINT_FINAL, CROSSVAL_CSV, CROSSVAL_JSON, DATASET_JSON, FOLD_PREFIX,
                           MODEL_PLANS_JSON, POSTPROCESSING_JSON)
from rbmnet.model.checkpoint import load_checkpoint
from rbmnet.model.folder import trained_folds
from rbmnet.planning.plan import load_plan

MANIFEST = "manifest.json"
ARCHIVE_FORMAT = "rbmnet-model-archive"
ARCHIVE_FORMAT_VERSION = 1
MODEL_FILES = (MODEL_PLANS_JSON, DATASET_JSON, POSTPROCESSING_JSON, CROSSVAL_JSON, CROSSVAL_CSV)
EXPORT_SUFFIXES = (".onnx",)  # per-fold exports, with the JSON written beside them
CHUNK = 1 << 20


def archive_members(model_folder: Path) -> list[str]:
    """Paths (relative, '/'-separated) of the files an archive of `model_folder` holds."""
    model_folder = Path(model_folder)
    folds = trained_folds(model_folder)
    if not folds:
        raise RbmnetError(f"{model_folder}: no trained fold ({FOLD_PREFIX}*/{CHECKPOINT_FINAL}); "
                          f"finish rbmnet_train seg first")
    members = [name for name in MODEL_FILES if (model_folder / name).is_file()]
    for fold in folds:
        folder = model_folder / f"{FOLD_PREFIX}{fold}"
        members.append(f"{folder.name}/{CHECKPOINT_FINAL}")
        for path in sorted(folder.iterdir()):
            if path.suffix in EXPORT_SUFFIXES or (path.suffix == ".json" and path.with_suffix(".onnx").is_file()):
                members.append(f"{folder.name}/{path.name}")
    for path in sorted(model_folder.iterdir()):  # model-level exports, if any
        if path.is_file() and path.suffix in EXPORT_SUFFIXES:
            members.append(path.name)
    return members


def write_archive(model_folder: Path, archive: Path) -> dict:
    """Write `archive` (atomically) from a trained model folder; returns its manifest."""
    model_folder = Path(model_folder)
    members = archive_members(model_folder)
    manifest = {"format": ARCHIVE_FORMAT, "format_version": ARCHIVE_FORMAT_VERSION, "rbmnet_version": __version__,
                "dataset": model_folder.parent.name, "model_id": model_folder.name,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "files": [{"path": name, "bytes": (model_folder / name).stat().st_size,
                           "sha256": _sha256_file(model_folder / name)} for name in members]}
    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for name in members:
                zf.write(model_folder / name, name)
    return manifest


def install_archive(archive: Path, results_root: Path, overwrite: bool = False,
                    dataset: str | None = None) -> Path:
    """Unpack a checked archive into `results_root/<dataset>/<model id>`; returns that folder."""
    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise RbmnetError(f"{archive}: not a readable model archive ({exc})") from None
    with zf:
        manifest = _read_manifest(zf, archive)
        files = {entry["path"]: entry for entry in manifest["files"]}
        _check_members(zf, archive, files)
        dataset = dataset or manifest["dataset"]
        _check_name(archive, "dataset", dataset)
        target = Path(results_root) / dataset / manifest["model_id"]
        if target.exists() and not overwrite:
            raise RbmnetError(f"{target}: a model is installed there already; pass --overwrite to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.installing-", dir=target.parent))
        try:
            for name, entry in files.items():
                _extract_checked(zf, archive, name, entry, staging)
            _check_model(archive, staging)
            _swap_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_manifest(zf: zipfile.ZipFile, archive: Path) -> dict:
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise RbmnetError(f"{archive}: no {MANIFEST}; not an rbmnet model archive") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:  # damaged member or not JSON
        raise RbmnetError(f"{archive}: {MANIFEST} unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise RbmnetError(f"{archive}: {MANIFEST} is not an rbmnet model archive manifest")
    if manifest.get("format_version", 0) > ARCHIVE_FORMAT_VERSION:
        raise RbmnetError(f"{archive}: archive format {manifest['format_version']} is newer than this rbmnet "
                          f"reads ({ARCHIVE_FORMAT_VERSION}); update rbmnet")
    files = manifest.get("files")
    if not isinstance(files, list) or not all(
            isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str)
            and isinstance(e.get("bytes"), int) for e in files):
        raise RbmnetError(f"{archive}: {MANIFEST} lists no valid files")
    _check_name(archive, "model id", manifest.get("model_id"))
    _check_name(archive, "dataset", manifest.get("dataset"))
    for entry in files:
        _check_member_path(archive, entry["path"])
    return manifest


def _check_name(archive: Path, what: str, name) -> None:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise RbmnetError(f"{archive}: {what} {name!r} is not a plain folder name")


def _check_member_path(archive: Path, name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or ":" in path.parts[0] or ".." in path.parts:
        raise RbmnetError(f"{archive}: member {name!r} would be written outside the model folder; refused")


def _check_members(zf: zipfile.ZipFile, archive: Path, files: dict) -> None:
    seen = set()
    for info in zf.infolist():
        name = info.filename
        _check_member_path(archive, name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise RbmnetError(f"{archive}: member {name!r} is a link; refused")
        if info.is_dir():
            continue
        if name in seen:
            raise RbmnetError(f"{archive}: member {name!r} appears twice; refused")
        seen.add(name)
        if name != MANIFEST and name not in files:
            raise RbmnetError(f"{archive}: member {name!r} is not in {MANIFEST}; refused")
    missing = sorted(set(files) - seen)
    if missing:
        raise RbmnetError(f"{archive}: {MANIFEST} lists {missing[0]!r}, which the archive lacks")


def _extract_checked(zf: zipfile.ZipFile, archive: Path, name: str, entry: dict, staging: Path) -> None:
    """Copy one member into the staging folder, reading no more than the manifest's size (a member
    that inflates beyond it is refused), and compare its SHA-256."""
    destination = staging / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with zf.open(name) as source, open(destination, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > entry["bytes"]:
                    break
                digest.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC errors, truncation
        raise RbmnetError(f"{archive}: member {name!r} is damaged ({exc})") from None
    if size != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
        raise RbmnetError(f"{archive}: member {name!r} does not match its checksum in {MANIFEST}; refused")


def _check_model(archive: Path, folder: Path) -> None:
    """What prediction will read must load safely: the plan validates, every checkpoint loads with
    weights_only=True (a pickle that would run code is refused by torch, never executed)."""
    if not (folder / MODEL_PLANS_JSON).is_file():
        raise RbmnetError(f"{archive}: holds no {MODEL_PLANS_JSON}")
    try:
        load_plan(folder / MODEL_PLANS_JSON)
        checkpoints = sorted(folder.glob(f"{FOLD_PREFIX}*/{CHECKPOINT_FINAL}"))
        if not checkpoints:
            raise RbmnetError(f"holds no trained fold ({FOLD_PREFIX}*/{CHECKPOINT_FINAL})")
        for path in checkpoints:
            load_checkpoint(path, mmap=True)
    except RbmnetError as exc:
        shown = str(exc).replace(f"{folder}/", "")  # name the member, not the staging path
        raise RbmnetError(f"{archive}: {shown}") from None


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the checked model onto `target`; an existing one (--overwrite) goes only after."""
    if not target.exists():
        staging.rename(target)
        return
    old = target.with_name(f".{target.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
