"""GPU lease: concurrent processes never hold the same GPU id; a full house waits, then fails."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from drfuse.errors import UserError
from drfuse.train import gpu_lease


def _hold(lock_dir: str, ids: list[str], results, release) -> None:
    """Child process: lease one id, report it and the CUDA_VISIBLE_DEVICES it set, hold until told."""
    os.environ["DRFUSE_GPU_LOCK_DIR"] = lock_dir
    lease = gpu_lease.acquire(ids=ids, timeout_s=30)
    results.put((lease.gpu_id, os.environ.get("CUDA_VISIBLE_DEVICES")))
    release.wait(60)
    lease.release()


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    folder = tmp_path / "leases"
    monkeypatch.setenv("DRFUSE_GPU_LOCK_DIR", str(folder))
    return folder


def test_concurrent_processes_never_share_an_id(lock_dir):
    ctx = mp.get_context("spawn")
    results, release = ctx.Queue(), ctx.Event()
    ids = ["0", "1"]
    procs = [ctx.Process(target=_hold, args=(str(lock_dir), ids, results, release)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=60) for _ in procs]
        leased = sorted(gpu for gpu, _ in got)
        assert leased == ids
        # each process restricted itself to the GPU it leased
        assert all(gpu == visible for gpu, visible in got)
        # a third taker finds both ids leased: it waits, then fails with an error naming the lock folder
        with pytest.raises(UserError, match=str(lock_dir)):
            gpu_lease.acquire(ids=ids, timeout_s=1.0, set_env=False)
    finally:
        release.set()
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    # the holders are gone: their leases went with them
    with gpu_lease.acquire(ids=ids, timeout_s=1.0, set_env=False) as lease:
        assert lease.gpu_id == "0"


def test_lease_is_freed_when_the_holder_is_killed(lock_dir):
    ctx = mp.get_context("spawn")
    results, release = ctx.Queue(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(lock_dir), ["0", "1"], results, release))
    holder.start()
    assert results.get(timeout=60)[0] == "0"
    with gpu_lease.acquire(ids=["0", "1"], timeout_s=1.0, set_env=False) as lease:
        assert lease.gpu_id == "1"  # 0 is held
    holder.kill()
    holder.join(60)
    with gpu_lease.acquire(ids=["0", "1"], timeout_s=1.0, set_env=False) as lease:
        assert lease.gpu_id == "0"


def test_preset_visible_devices_are_respected(lock_dir, monkeypatch):
    monkeypatch.delenv("DRFUSE_GPU_IDS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    first = gpu_lease.acquire(timeout_s=1.0)
    try:
        assert first.gpu_id == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        # the next taker in another job sees the same preset list; id 3 is held
        second = gpu_lease.acquire(ids=["3", "5"], timeout_s=1.0, set_env=False)
        assert second.gpu_id == "5"
        second.release()
    finally:
        first.release()
    assert sorted(p.name for p in lock_dir.iterdir()) == ["gpu-3.lock", "gpu-5.lock"]


def test_fake_id_list_from_the_environment(monkeypatch):
    monkeypatch.setenv("DRFUSE_GPU_IDS", "2, 7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert gpu_lease.candidate_ids() == ["2", "7"]


def test_one_gpu_is_taken_in_turns(lock_dir, monkeypatch, caplog):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    first = gpu_lease.acquire(ids=["4"], timeout_s=0)
    try:
        assert first.gpu_id == "4" and first.path == lock_dir / "gpu-4.lock"
        # a second job on the same single GPU waits (here 0.6 s), told who holds it, then gives up
        with pytest.raises(UserError, match="leased by other jobs"):
            gpu_lease.acquire(ids=["4"], timeout_s=0.6, set_env=False)
        assert f"pid {os.getpid()} on host" in caplog.text
    finally:
        first.release()
    with gpu_lease.acquire(ids=["4"], timeout_s=0, set_env=False) as second:
        assert second.gpu_id == "4"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4"


def test_nothing_to_lease_without_a_gpu(lock_dir):
    lease = gpu_lease.acquire(ids=[], timeout_s=0)
    assert lease.gpu_id is None and lease.path is None
    lease.release()
    assert not lock_dir.exists()


def test_each_slurm_job_has_its_own_lease_folder(monkeypatch):
    """SLURM numbers every job's GPUs from 0: jobs sharing a node must not queue on each other's ids."""
    monkeypatch.delenv("DRFUSE_GPU_LOCK_DIR", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    plain = gpu_lease.lock_dir()
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    assert gpu_lease.lock_dir() == plain.with_name(plain.name + "-slurm4711")
