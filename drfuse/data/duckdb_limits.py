"""Threads and memory of the DuckDB stages (ingest, cohort, features).

Under Snakemake they come from the job (`--threads {threads} --memory-mb {resources.mem_mb}`), so a
job on a shared node uses what SLURM granted it; run by hand they default to the machine's cores
and half its RAM. DuckDB gets half the job's memory: the rest is for Python, Arrow and the arrays
the stage builds, and DuckDB spills to its temporary folder beyond its limit.
"""

from __future__ import annotations

import os

from drfuse.errors import UserError

DUCKDB_MEMORY_SHARE = 0.5
MIN_MEMORY_MB = 256


def machine_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        return 8192


def limits(threads: int | None = None, memory_mb: int | None = None) -> tuple[int, str]:
    """(DuckDB threads, DuckDB memory_limit) for a job of `threads` cores and `memory_mb` MB
    (None or 0: the machine's). The memory is capped at the machine's: a rule's `mem_mb` is a
    cluster request, more than a laptop running the same rule may have."""
    if threads is not None and threads < 0 or memory_mb is not None and memory_mb < 0:
        raise UserError(f"--threads and --memory-mb must be >= 0, got {threads} and {memory_mb}")
    threads = threads or machine_cores()
    memory_mb = min(memory_mb or machine_memory_mb(), machine_memory_mb())
    return threads, f"{max(MIN_MEMORY_MB, int(memory_mb * DUCKDB_MEMORY_SHARE))}MB"


def apply(con, threads: int, memory_limit: str) -> None:
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET memory_limit = ?", [memory_limit])
