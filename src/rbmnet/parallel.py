"""One way to run a per-case function over many cases in worker processes, with a progress bar."""
from __future__ import annotations

import multiprocessing
from typing import Callable, Iterator

from tqdm import tqdm


def map_cases(function: Callable, tasks: list, num_processes: int, description: str,
              verbose: bool = True) -> Iterator:
    """Yield function(task) for every task, in order, from worker processes, with a progress bar.

    A generator, so a caller can write each result away (e.g. into a memory map) before the next
    arrives; the first error from a worker is raised here and stops the rest. The bar is drawn on a
    terminal only, so logs and pipes stay clean.
    """
    bar = tqdm(total=len(tasks), desc=description, unit="case", disable=None if verbose else True, leave=False)
    try:
        if num_processes <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield function(task)
                bar.update()
            return
        with multiprocessing.Pool(min(num_processes, len(tasks))) as pool:
            chunk = max(1, min(8, len(tasks) // (4 * num_processes)))
            for result in pool.imap(function, tasks, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()
