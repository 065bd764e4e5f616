"""Exclusive lock files held with `fcntl.flock`, and the one that guards a training folder.

The kernel drops a flock when its holder exits, however it exits (killed, out of memory, power
cut of a node aside), so a lock is never stale: a leftover lock *file* means nothing by itself.
While held, the file names its holder (pid, host, start time) for the next taker's message.

`train_dir_lock(out_dir)`: `drfuse train` holds `out_dir/.train.lock` for the whole run, so a
second `drfuse train` into the same folder fails at once, naming the first, instead of both
silently replacing each other's checkpoints.

`take_results_lock(results_dir)`: a Snakemake run holds `results_dir/.workflow.lock` from its start
(common.smk's `onstart`, never in a dry run) to its end, so a second run into the same results
folder (another checkout with the same absolute `data.results_dir`) fails before its first job,
naming the first, instead of re-ingesting under its feet. Snakemake's own lock covers one working
directory only.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from pathlib import Path

from drfuse.errors import UserError

TRAIN_LOCK = ".train.lock"
WORKFLOW_LOCK = ".workflow.lock"


def holder_note() -> str:
    """Who is taking a lock now: pid, host and start time."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()}, started {started}"


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on `path` (created if needed), or None when
    another process holds it. The file then names this process (`holder_note`)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{holder_note()}\n".encode())
    return fd


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def holder(path: Path) -> str:
    """The note the current holder of `path` wrote (best effort: it may be mid-write)."""
    try:
        return Path(path).read_text().strip() or "holder unknown"
    except OSError:
        return "holder unknown"


@contextlib.contextmanager
def train_dir_lock(out_dir: Path):
    """Hold `out_dir/.train.lock` for the block; a UserError naming the holder if it is taken."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TRAIN_LOCK
    fd = try_lock(path)
    if fd is None:
        raise UserError(
            f"{out_dir} is being trained by another `drfuse train` ({holder(path)}; lock file {path}): "
            "wait for it to finish or train into another --out"
        )
    try:
        yield path
    finally:
        unlock(fd)


def take_results_lock(results_dir: Path) -> int:
    """Hold `results_dir/.workflow.lock` until `unlock` or the end of this process (the descriptor
    returned); a UserError naming the holder if another workflow run has it."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / WORKFLOW_LOCK
    fd = try_lock(path)
    if fd is None:
        raise UserError(
            f"data.results_dir {results_dir} is in use by another workflow run ({holder(path)}; lock file {path}): "
            "wait for it to finish or give this run another data.results_dir"
        )
    return fd
