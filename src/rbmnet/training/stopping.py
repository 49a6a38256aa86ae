"""Clean stops: SIGTERM and Ctrl-C end a training stage between two writes, never in the middle of one.

While `stop_signals()` is active, either signal raises `StopRequested` in the main thread; inside
`writes_held()` (a checkpoint and its log being written) the stop waits until the block is done, so the
files on disk always describe one finished epoch that `--continue` resumes exactly.
"""
from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

from rbmnet.errors import RbmnetError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """Raised by the signal handler; a BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StageInterrupted(RbmnetError):
    """A stage stopped by a signal: one line saying where it stands and how to go on."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for a death by signal


_held = {"depth": 0, "pending": None}


def _handler(signum, frame) -> None:
    if _held["depth"]:
        _held["pending"] = signum
        return
    raise StopRequested(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Install the handlers (main thread only: elsewhere Python cannot take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def writes_held() -> Iterator[None]:
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        pending, _held["pending"] = _held["pending"], None
        if pending is not None and not _held["depth"]:
            raise StopRequested(pending)


def interrupted(stop: StopRequested, folder: Path, epochs_done: int, epochs: int) -> StageInterrupted:
    """The one line a stopped stage leaves: what is on disk, and the command that continues it."""
    if epochs_done == 0:
        return StageInterrupted(f"stopped by {stop}: no epoch finished in {folder}; run the same command "
                                f"again to start over", stop.signum)
    return StageInterrupted(f"stopped by {stop} after epoch {epochs_done} of {epochs} (saved in {folder}); "
                            f"continue with: {continue_command()}", stop.signum)


def continue_command(argv: list[str] | None = None) -> str:
    """This process's command line with --continue instead of --overwrite."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name
    if program.endswith(".py"):  # python -m rbmnet.cli.<name>
        program = f"python -m rbmnet.cli.{Path(program).stem}"
    arguments = [a for a in argv[1:] if a != "--overwrite"]
    if "--continue" not in arguments:
        arguments.append("--continue")
    return f"{program} {shlex.join(arguments)}"
