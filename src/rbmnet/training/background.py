"""Making batches in worker processes, ahead of the training loop, in order.

`BatchStream(make_batch_fn, indices, num_workers)` yields make_batch_fn(*index) for each index.
With num_workers == 0 everything runs inline (debugging, tests). Otherwise a ProcessPoolExecutor
works on at most `prefetch` batches ahead, so memory stays bounded. `make_batch_fn` must be
picklable (a functools.partial of a module-level function) so that the spawn start method works too.

Workers live only as long as the loop's process: they ignore Ctrl-C (the parent stops them, see
stopping.py; SIGTERM keeps its default, the pool stops broken workers with it) and each watches its
parent, exiting within a second of the parent's death, SIGKILL included, so no orphan keeps its memory.

Failures never hang the loop: an exception in a worker is re-raised here as a RuntimeError whose
message holds the worker's own traceback, and a worker that dies (killed, out of memory, os._exit)
raises BrokenProcessPool as soon as the pool notices.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable

_END = object()


def default_start_method() -> str:
    # fork starts workers in milliseconds and shares the parent's open memory maps; spawn elsewhere
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class BatchStream:
    def __init__(self, make_batch_fn: Callable, indices: Iterable, num_workers: int,
                 prefetch: int | None = None, start_method: str | None = None):
        if num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        self.make_batch_fn = make_batch_fn
        self.indices = iter(indices)
        self.num_workers = num_workers
        self.prefetch = max(1, prefetch if prefetch is not None else 2 * num_workers)
        self.pending: collections.deque[tuple[tuple, Future]] = collections.deque()
        self.executor = None
        self.closed = False
        if num_workers > 0:
            context = multiprocessing.get_context(start_method or default_start_method())
            self.executor = ProcessPoolExecutor(max_workers=num_workers, mp_context=context,
                                                initializer=_bind_to_parent, initargs=(os.getpid(),))

    def __iter__(self):
        return self

    def __next__(self):
        if self.closed:
            raise StopIteration
        if self.executor is None:
            return self.make_batch_fn(*next(self.indices))
        self._fill()
        if not self.pending:
            raise StopIteration
        index, future = self.pending.popleft()
        try:
            result = future.result()
        except BrokenProcessPool as exc:
            self.close()
            raise BrokenProcessPool(
                f"a batch worker process died before batch {index} was made (killed by the system, out "
                f"of memory, or exited); rerun with fewer workers, or 0 to make batches inline and see the error") from exc
        except Exception as exc:
            self.close()
            raise RuntimeError(f"batch worker failed while making batch {index}:\n{_worker_traceback(exc)}") from exc
        self._fill()  # keep the workers busy while the caller uses this batch
        return result

    def _fill(self) -> None:
        while len(self.pending) < self.prefetch:
            index = next(self.indices, _END)
            if index is _END:
                return
            self.pending.append((tuple(index), self.executor.submit(self.make_batch_fn, *index)))

    def close(self) -> None:
        self.closed = True
        executor, self.executor = getattr(self, "executor", None), None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
            self.pending.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        self.close()


PARENT_POLL_SECONDS = 0.5


def _bind_to_parent(parent_pid: int) -> None:
    """Worker start: leave Ctrl-C to the parent, and exit when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent_pid:  # an orphan is re-parented (to init or a subreaper)
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="rbmnet-parent-watch", daemon=True).start()


def _worker_traceback(exc: BaseException) -> str:
    # ProcessPoolExecutor attaches the worker's formatted traceback as a _RemoteTraceback __cause__
    remote = getattr(exc.__cause__, "tb", None)
    if remote:
        return remote.strip().removeprefix('"""').removesuffix('"""').strip()  # wrapped in triple quotes
    return f"{type(exc).__name__}: {exc}"
