"""Temporary files and folders named after the process that writes them, so that a later run can tell
which ones a killed process left behind.

`owned_name` puts "<host>-<pid>-<random>" between a prefix and a suffix. At its next start a step calls
`remove_leftovers`, which deletes those whose owner is gone: written on this host by a pid that no
longer runs. Files of a running process (another run of the same step, working at the same time) are
kept, and so are another host's, as a pid says nothing there (a shared file system). A pid reused since
only delays the clean-up to a later run.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import uuid
from pathlib import Path


def owned_name(prefix: str, suffix: str = "") -> str:
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def remove_leftovers(folder: Path, prefix: str, suffix: str = "", pid_only_names: bool = False) -> list[Path]:
    """Delete folder/<prefix>...<suffix> (files or folders) whose owner is gone; returns those deleted.

    `pid_only_names`: also judge names holding just "<pid>", as this host's (what older versions wrote).
    """
    removed = []
    for path in Path(folder).glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        owner = path.name[len(prefix):len(path.name) - len(suffix)]
        if _owner_is_gone(owner, pid_only_names):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _owner_is_gone(owner: str, pid_only_names: bool) -> bool:
    parts = owner.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        host, pid = parts[0], int(parts[1])
    elif pid_only_names and owner.isdigit():
        host, pid = socket.gethostname(), int(owner)
    else:
        return False  # not a name this module gave: not ours to judge
    return host == socket.gethostname() and not _is_running(pid)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, under another user
    return True
