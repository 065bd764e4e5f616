"""Worker processes that do not outlive their parent.

A process pool's workers block on a queue whose write end they hold themselves, so when the parent
is killed (SIGKILL, the OOM killer, a cancelled SLURM job) they would wait forever. Each worker
runs `exit_with_parent` as its initializer: a daemon thread that ends the worker once it has been
re-parented, i.e. its parent is gone. (Linux's PR_SET_PDEATHSIG is not used: it fires when the
*thread* that started the worker ends, which need not be the parent's death.)
"""

from __future__ import annotations

import os
import threading
import time

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
