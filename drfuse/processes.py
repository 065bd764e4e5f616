"""Whether a process still runs on this machine.

The stages name their temporary files after the writing process's id and, at their next start,
remove the ones whose process is gone (a run that was killed before it could clean up); a file
whose process is alive belongs to a concurrent run and stays."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True if a process with this id runs on this machine, another user's included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
