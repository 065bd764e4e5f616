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
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=_env(CUDA_VISIBLE_DEVICES=""), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA device" in proc.stderr and "--cpu" in proc.stderr


def test_cpu_mode_passes_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out), "--workdir", str(tmp_path / "work")],
                          env=_env(), capture_output=True, text=True, timeout=900, cwd=tmp_path)
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
    # the printed table: one PASS line per part, and the log beside the JSON
    assert sum(line.startswith("PASS ") for line in proc.stdout.splitlines()) == 6
    for i in range(2):  # each training process took the (fake) GPU's lease once
        assert (tmp_path / "work" / f"lease-{i}.log").read_text().count("leased GPU cpu-check") == 1
