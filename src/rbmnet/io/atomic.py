"""Atomic writes: write next to the target, then rename, so an interruption never leaves half a file.

A write the system refuses (disk full, read-only, no permission) is a one-line RbmnetError naming the
target, and its temporary file is removed.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from rbmnet.errors import RbmnetError


def _default_file_mode() -> int:
    # mkstemp creates 0600 files, which os.replace would keep; a plain open() gives 0666 minus the umask
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, _FILE_MODE)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.errno is None:  # not the system refusing a write (PIL says "cannot write mode X" so)
            raise
        raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):  # a temp we cannot remove must not hide the error above
            tmp_path.unlink(missing_ok=True)


def write_error(path: str | os.PathLike, exc: OSError) -> RbmnetError:
    """'PATH: could not write (no space left on device)' from the system's error."""
    return RbmnetError(f"{path}: could not write ({_system_reason(exc)})")


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and write a small file there, so an output that cannot be written is
    refused before any work rather than after it (root passes permission checks: only a write tells)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".rbmnet-write-test.", dir=folder) as probe:
            probe.write(bytes(4096))  # a full disk often still creates empty files
            probe.flush()
    except OSError as exc:
        raise RbmnetError(f"{folder}: cannot write into this folder ({_system_reason(exc)})") from None
    return folder


def _system_reason(exc: OSError) -> str:
    # the plain strerror ("no space left on device"): the path is named once, in front of the message
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def _json_default(obj):
    # numpy scalars and arrays appear in fingerprints and metrics
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
