"""Atomic writes: a file (or folder) appears whole under its name, or not at all.

Every output is written under a temporary name beside its target (same folder, so same file
system and `os.replace` is atomic), then renamed over the target; on any exception the temporary
is removed and the old target is left untouched. The parent folder is created when missing.

    with atomic.writing(path) as tmp:      # one file (or one folder: create it at tmp)
        frame.write_parquet(tmp)
    with atomic.writing_files(out_dir, ["attrition.csv", "stays.parquet"]) as stage:
        ...                                # write stage / name: all or nothing, renamed in order

Temporary names are `.<target name>.<pid>.<random>.tmp<target suffix>`: unique per writer (two
processes or threads never share one), ending in the target's suffix for writers that choose a
format by it (`savefig`, `np.savez`), and carrying the writer's pid so that one left behind by a
killed process is recognised: the next write of the same target removes it, and
`remove_stale(folder)` removes every such leftover in a folder, unless its process still runs on
this machine (`drfuse.processes`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from drfuse.processes import pid_alive

log = logging.getLogger(__name__)

STAGING = "staging"  # the target name in the temporary folder of `writing_files`
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def temp_path(target: Path) -> Path:
    """A fresh temporary name beside `target` (nothing is created)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{target.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _stale(match: re.Match) -> bool:
    pid = int(match["pid"])
    return pid != os.getpid() and not pid_alive(pid)


def remove_stale(folder: Path, target: str | None = None) -> list[Path]:
    """Remove the temporary files and folders in `folder` (only those of `target`, a file name,
    when given) left by processes that no longer run on this machine; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, size = [], 0
    for path in sorted(folder.glob(".*.tmp*")):
        match = TEMP_NAME.match(path.name)
        if not match or (target and match["target"] != target) or not _stale(match):
            continue
        try:
            size += path.stat().st_size
        except FileNotFoundError:  # removed by someone else meanwhile
            continue
        _remove(path)
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) (%.1f MB) left in %s by killed runs", len(removed), size / 2**20, folder)
    return removed


def _replace(tmp: Path, target: Path) -> None:
    """os.replace, also for a folder over an existing folder (which os.replace refuses): the old
    one is renamed aside first, then removed."""
    if tmp.is_dir() and target.is_dir() and not target.is_symlink():
        old = temp_path(target)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextmanager
def writing(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` to write (a file, or a folder the body creates);
    on success it replaces `target`, on an exception it is removed and `target` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, target.name)
    tmp = temp_path(target)
    try:
        yield tmp
        _replace(tmp, target)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


@contextmanager
def writing_files(folder: Path, names: Sequence[str]) -> Iterator[Path]:
    """Yield a temporary folder inside `folder` in which to write the files `names` (and anything
    else the work needs, such as spill files); on success they are renamed into `folder` in the
    given order (put the one that marks completion last). The temporary folder is always removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, STAGING)
    stage = temp_path(folder / STAGING)
    stage.mkdir()
    try:
        yield stage
        for name in names:
            os.replace(stage / name, folder / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with writing(path) as tmp:
        tmp.write_text(text)
