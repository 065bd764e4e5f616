"""benchmarks/gpu_check.py: `--cpu` runs every part it can on the CPU and passes; without CUDA and
without `--cpu` it says so and exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.update(extra)
    return env


def test_without_cuda_it_says_so_and_exits_2():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], env=_env(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA device" in proc.stderr and "--cpu" in proc.stderr


def test_cpu_mode_passes_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--out", str(out), "--workdir", str(tmp_path / "work")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert out.is_file(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and list(result["parts"]) == ["data", "graph", "throughput", "train", "amp", "lease"]
    failed = {name: part for name, part in result["parts"].items() if part["status"] != "PASS"}
    assert not failed and result["passed"] and proc.returncode == 0, (failed, proc.stdout[-3000:])
    parts = result["parts"]
    assert parts["graph"]["details"]["graph_breaks_padded"] == 0
    assert len(parts["throughput"]["rows"]) == parts["throughput"]["planned_rows"] >= 2
    assert {row["pad_images"] for row in parts["throughput"]["rows"]} == {True, False}
    runs = {(r["model"], r["variant"]): r["prauc"] for r in parts["train"]["runs"]}
    assert set(runs) == {(m, v) for m in ("drfuse", "medfuse") for v in ("device", "cpu")}
    assert all(0 < p <= 1 for p in runs.values())
    # on the CPU, padded (the "device" runs) and unpadded training end within float rounding
    assert abs(runs[("drfuse", "device")] - runs[("drfuse", "cpu")]) < 1e-3
    assert parts["amp"]["details"]["max_abs_diff"] == 0.0
    lease = parts["lease"]["details"]
    assert lease["exit_codes"] == [0, 0] and lease["waited"] == [0, 1] and lease["took_turns"] is True
    # what each part trains: DrFuse's image warm-up, then its joint epoch
    assert "DrFuse 20 warm-up + 1 joint epoch x 2 (device, cpu)" in parts["train"]["trains"]
    assert all(part["trains"] for part in parts.values()) and parts["train"]["runs"][0]["cudagraphs"] is None
    # the printed table: one PASS line per part, and the log beside the JSON
    assert sum(line.startswith("PASS ") for line in proc.stdout.splitlines()) == 6
    for i in range(2):  # each training process took the (fake) GPU's lease once
        assert (tmp_path / "work" / f"lease-{i}.log").read_text().count("leased GPU cpu-check") == 1


def _gpu_check_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gpu_check


def test_cuda_plan_fits_8_minutes_with_drfuse_image_warmup(tmp_path):
    """`--plan`: each part's CUDA budget and what it trains; DrFuse's epochs are those `drfuse
    train` resolves (the 20-epoch image warm-up, then the joint epochs), and all fits 480 s."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--plan"],
        env=_env(CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(lines) == {"data", "graph", "throughput", "train", "amp", "lease", "total"}
    budgets = {name: float(line.split()[1]) for name, line in lines.items()}
    assert budgets["total"] == sum(v for k, v in budgets.items() if k != "total") <= 480
    assert "DrFuse 20 warm-up + 4 joint epochs x 3 (device, cpu, reduce-overhead)" in lines["train"]
    assert "MedFuse 4 epochs x 2" in lines["train"] and "Transformer 2 epochs x 2 processes" in lines["lease"]


def test_budgets_follow_the_epochs_resolve_run_gives(tmp_path, monkeypatch):
    """The warm-up a DrFuse run trains is read through drfuse.experiments.resolve_run (where a
    recipe may set it), not from the config's `train:` section: the budget follows it."""
    from drfuse import experiments

    gpu_check = _gpu_check_module()
    ck = gpu_check.Check("cuda", tmp_path)
    ck.write_base_config()
    before = gpu_check.part_budget(ck, "train")
    resolve_run = experiments.resolve_run

    def ten_more_warmup_epochs(run_name, cfg):
        model, run_cfg = resolve_run(run_name, cfg)
        run_cfg["train"]["cxr_warmup_epochs"] += 10
        return model, run_cfg

    monkeypatch.setattr(experiments, "resolve_run", ten_more_warmup_epochs)
    assert ck.epochs("drfuse") == (30, 4) and ck.epochs("medfuse") == (0, 4)
    per_warmup = sum(
        gpu_check.EPOCH_S["cuda"][where][0] for where in ("gpu", "cpu", "gpu")
    )  # device, cpu, reduce-overhead
    assert gpu_check.part_budget(ck, "train") == before + 10 * per_warmup
    assert "DrFuse 30 warm-up + 4 joint epochs" in gpu_check.trains(ck, "train")


def test_cudagraph_skips_are_counted_with_their_reasons():
    """What the check reports for torch.compile's reduce-overhead runs: how many graphs ran without
    CUDA graphs and why (inductor's counter and warning)."""
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    gpu_check = _gpu_check_module()
    report: dict = {}
    with gpu_check.cudagraph_skips(report):
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to mutated inputs (1 instances)")
    assert report["cudagraphs"] == {
        "skipped": 1,
        "reasons": ["skipping cudagraphs due to mutated inputs (1 instances)"],
    }
    assert (
        gpu_check.cudagraph_text(report["cudagraphs"])
        == "CUDA graphs skipped 1x: skipping cudagraphs due to mutated inputs (1 instances)"
    )
    with gpu_check.cudagraph_skips(report):
        pass
    assert gpu_check.cudagraph_text(report["cudagraphs"]) == "CUDA graphs used"
