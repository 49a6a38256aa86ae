"""One run per run folder: an advisory lock held by the training process for as long as it lives.

The operating system releases the lock when its holder exits however it exits (SIGKILL included), so a
lock left by a dead run is never in the way. The holder's pid is written into the lock file for the
message a second run gets.
"""
from __future__ import annotations

import os
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.layout import RUN_LOCK

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class RunLock:
    def __init__(self, folder: Path):
        self.path = Path(folder) / RUN_LOCK
        self.handle = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # not "w": a refused run must not erase the holder's pid
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RbmnetError(f"{self.path.parent}: another rbmnet run (pid {holder}) is training here; "
                              f"wait for it to finish or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing drops the lock
            self.handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
