"""GPU lease: concurrent training jobs on one workstation each take a different GPU.

`snakemake --resources gpu=N` caps how many GPU jobs run at once but never says *which* GPU a job
got. Each job therefore takes a lease: an exclusive `fcntl.flock` (`locks.try_lock`) on one lock
file per GPU id in a lease folder (`$DRFUSE_GPU_LOCK_DIR`, default
`/tmp/drfuse-gpu-leases-$USER`, with `-slurm<job id>` appended inside a SLURM job, whose GPUs the
scheduler already keeps apart from other jobs' and which number from 0 in every job), then
restricts itself to that GPU by setting `CUDA_VISIBLE_DEVICES` before torch initialises CUDA. The
kernel drops the lock when the process exits, however it exits, so a killed job never leaves a
stale lease behind.

Which ids are leased: `$DRFUSE_GPU_IDS` (comma list; lets tests fake a device list), else a preset
`CUDA_VISIBLE_DEVICES` (a lease is taken among those ids only), else every GPU the NVIDIA driver
lists. With no id (no GPU) no lease is taken; with one, jobs take turns on it (two trainings
sharing one GPU risk running out of its memory).

When every id is leased the job waits, polling, for up to `$DRFUSE_GPU_LEASE_TIMEOUT` seconds
(default 3600) and then fails with an error naming the lease folder: with Snakemake's `gpu=N` no
larger than the number of GPUs this wait never happens; it guards runs started by hand beside it.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from drfuse.errors import UserError
from drfuse.train import locks

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def lock_dir() -> Path:
    """The lease folder shared by every job of this user on this machine."""
    configured = os.environ.get("DRFUSE_GPU_LOCK_DIR")
    if configured:
        return Path(configured)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    job = os.environ.get("SLURM_JOB_ID")
    return Path("/tmp") / (f"drfuse-gpu-leases-{user}" + (f"-slurm{job}" if job else ""))


def _driver_gpu_ids() -> list[str]:
    """GPUs the NVIDIA driver lists, found without initialising CUDA in this process (once CUDA
    is initialised, a later CUDA_VISIBLE_DEVICES is ignored)."""
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def candidate_ids() -> list[str]:
    """The GPU ids this process may lease among (see the module docstring for the order)."""
    for var in ("DRFUSE_GPU_IDS", "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(var)
        if value is not None and value.strip():
            return [part.strip() for part in value.split(",") if part.strip()]
    return _driver_gpu_ids()


def _lock_name(gpu_id: str) -> str:
    # ids may be GPU UUIDs ("GPU-1a2b...") or MIG names: keep the file name plain
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", gpu_id) + ".lock"


class GpuLease:
    """An exclusive hold on one GPU id; `release()` (or process exit) frees it."""

    def __init__(self, gpu_id: str | None, fd: int | None, path: Path | None):
        self.gpu_id = gpu_id
        self._fd = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            locks.unlock(self._fd)
            self._fd = None

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"GpuLease(gpu_id={self.gpu_id!r}, path={str(self.path) if self.path else None!r})"


def _cuda_initialised() -> bool:
    return "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()


def acquire(ids: list[str] | None = None, timeout_s: float | None = None, set_env: bool = True) -> GpuLease:
    """Lease one GPU id among `ids` (default: `candidate_ids()`), waiting up to `timeout_s`.

    With `set_env`, CUDA_VISIBLE_DEVICES is set to the leased id; once torch has initialised CUDA
    that is only allowed when it is already the value (checked). Returns a lease with
    `gpu_id None` when there is no GPU.
    """
    ids = candidate_ids() if ids is None else list(ids)
    if not ids:
        return GpuLease(None, None, None)
    if timeout_s is None:
        timeout_s = float(os.environ.get("DRFUSE_GPU_LEASE_TIMEOUT", "3600"))
    folder = lock_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    warned = False
    while True:
        for gpu_id in ids:
            path = folder / _lock_name(gpu_id)
            fd = locks.try_lock(path)
            if fd is None:
                continue
            lease = GpuLease(gpu_id, fd, path)
            if set_env and os.environ.get("CUDA_VISIBLE_DEVICES") != gpu_id:
                if _cuda_initialised():
                    lease.release()
                    raise RuntimeError(
                        "GPU lease taken after torch initialised CUDA: CUDA_VISIBLE_DEVICES would be ignored"
                    )
                os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
            log.info("leased GPU %s (%s)", gpu_id, path)
            return lease
        if time.monotonic() >= deadline:
            raise UserError(
                f"all {len(ids)} GPUs ({', '.join(ids)}) are leased by other jobs (lock files in {folder}); "
                f"gave up after {timeout_s:g} s (DRFUSE_GPU_LEASE_TIMEOUT). Run with --resources gpu=N "
                "no larger than the number of GPUs"
            )
        if not warned:
            holders = "; ".join(f"GPU {i}: {locks.holder(folder / _lock_name(i))}" for i in ids)
            log.warning("all %d GPUs are leased (%s: %s); waiting for one to be released", len(ids), folder, holders)
            warned = True
        time.sleep(POLL_SECONDS)
