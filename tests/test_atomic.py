"""drfuse.atomic on real files: a target is replaced whole or left as it was, and no temporary
file outlives its writer (or, when the writer was killed, the next write)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from drfuse import atomic


class Boom(Exception):
    pass


def test_target_replaced_on_success_and_parent_created(tmp_path):
    target = tmp_path / "new" / "deeper" / "table.csv"  # parents do not exist yet
    with atomic.writing(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".table.csv.") and tmp.suffix == ".csv"
        assert not tmp.exists() and not target.exists()
        tmp.write_text("a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n"
    atomic.write_text(target, "a,b\n3,4\n")
    assert target.read_text() == "a,b\n3,4\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_exception_leaves_old_target_untouched_and_no_temp(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old checkpoint")
    with pytest.raises(Boom):
        with atomic.writing(target) as tmp:
            tmp.write_bytes(b"half of a new one")
            raise Boom
    assert target.read_bytes() == b"old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    with pytest.raises(Boom):  # no old target: none appears
        with atomic.writing(tmp_path / "other.pt") as tmp:
            tmp.write_bytes(b"half")
            raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_suffix_kept_for_writers_that_choose_by_it(tmp_path):
    target = tmp_path / "reps.npz"
    with atomic.writing(target) as tmp:
        np.savez(tmp, x=np.arange(3))  # would write tmp + ".npz" if the name did not end in .npz
    assert np.load(target)["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reps.npz"]


def test_concurrent_writers_do_not_collide(tmp_path):
    target = tmp_path / "out.txt"
    barrier = threading.Barrier(8)
    temps = []

    def write(i):
        with atomic.writing(target) as tmp:
            temps.append(tmp)
            barrier.wait()  # every writer holds its temporary file at the same time
            tmp.write_text(f"writer {i}\n" * 1000)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(temps)) == 8
    text = target.read_text()
    assert text in {f"writer {i}\n" * 1000 for i in range(8)}  # one writer's whole file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_folder_replaced_whole(tmp_path):
    target = tmp_path / "dataset"
    (target / "old").mkdir(parents=True)
    (target / "old" / "f.csv").write_text("old")
    with atomic.writing(target) as tmp:
        (tmp / "new").mkdir(parents=True)
        (tmp / "new" / "f.csv").write_text("new")
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["new", "new/f.csv"]
    with pytest.raises(Boom):
        with atomic.writing(target) as tmp:
            tmp.mkdir()
            (tmp / "partial.csv").write_text("x")
            raise Boom
    assert (target / "new" / "f.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_writing_files_all_or_nothing(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "stays.parquet").write_text("old stays")
    with pytest.raises(Boom):
        with atomic.writing_files(out, ["attrition.csv", "stays.parquet"]) as stage:
            (stage / "attrition.csv").write_text("new attrition")
            (stage / "spill").mkdir()  # work files beside the outputs
            raise Boom
    assert sorted(p.name for p in out.iterdir()) == ["stays.parquet"]
    assert (out / "stays.parquet").read_text() == "old stays"
    with atomic.writing_files(out, ["attrition.csv", "stays.parquet"]) as stage:
        (stage / "attrition.csv").write_text("new attrition")
        (stage / "stays.parquet").write_text("new stays")
        (stage / "spill").mkdir()
    assert sorted(p.name for p in out.iterdir()) == ["attrition.csv", "stays.parquet"]
    assert (out / "stays.parquet").read_text() == "new stays"


def test_a_killed_writers_temp_is_removed_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    alive = subprocess.Popen(["sleep", "60"])
    try:
        killed = tmp_path / f".last.pt.{dead_pid}.0123abcd.tmp.pt"
        killed.write_bytes(os.urandom(10_000))
        killed_stage = tmp_path / f".staging.{dead_pid}.89abcdef.tmp"
        (killed_stage / "duckdb").mkdir(parents=True)
        running = tmp_path / f".last.pt.{alive.pid}.4567cdef.tmp.pt"
        running.write_bytes(b"being written")
        other = tmp_path / ".notes.tmp"  # not a name atomic makes
        other.write_text("not ours")
        with atomic.writing(tmp_path / "best.pt") as tmp:  # another target: its own leftovers only
            tmp.write_bytes(b"x")
        assert killed.exists() and killed_stage.exists()
        with atomic.writing(tmp_path / "last.pt") as tmp:
            tmp.write_bytes(b"x")
        assert not killed.exists() and running.exists() and killed_stage.exists()
        assert atomic.remove_stale(tmp_path) == [killed_stage]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["best.pt", "last.pt", running.name, other.name])
    finally:
        alive.kill()
        alive.wait()
