"""Worker processes: an ordered parallel map whose workers do not outlive their parent.

A process pool's workers block on a queue whose write end they hold themselves, so when the parent
is killed (SIGKILL, the OOM killer, a cancelled SLURM job) they would wait forever. Each worker
runs `exit_with_parent` as its initializer: a daemon thread that ends the worker once it has been
re-parented, i.e. its parent is gone. (Linux's PR_SET_PDEATHSIG is not used: it fires when the
*thread* that started the worker ends, which need not be the parent's death.)
Used by the images stage (decoding) and `drfuse synth` (drawing images).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from drfuse.errors import UserError

POLL_SECONDS = 0.5


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)


def exit_with_parent(parent_pid: int) -> None:
    """Process-pool initializer: end this worker when `parent_pid` dies."""
    if os.getppid() != parent_pid:  # the parent died while this worker started
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="exit-with-parent").start()


def ordered_map(fn: Callable, tasks: list, workers: int) -> Iterator:
    """fn over the tasks, results in task order; in `workers` spawned processes (1: in this one).
    `fn` must be a module-level function; spawn keeps the workers free of whatever threads or
    state the parent holds. A consumer that stops early (an error) cancels what is still queued."""
    if workers == 1:
        yield from map(fn, tasks)
        return
    # small chunks keep every core busy to the end
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    pool = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),)
    )
    try:
        yield from pool.map(fn, tasks, chunksize=chunk)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def worker_count(requested: int, n_tasks: int, setting: str) -> int:
    """Processes for n_tasks: `requested`, 0 = every core this process may use; no more than the
    tasks. `setting` names where `requested` came from, for the error."""
    if requested < 0:
        raise UserError(f"{setting} must be >= 0 (0 = all cores), got {requested}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, n_tasks))
