"""The GPU path, proven by one command: `python benchmarks/gpu_check.py` (writes gpu_check.json).

Run once on a machine with one CUDA GPU, from a fresh clone with the README's install; it builds
its own data in a temporary folder and fits 8 minutes on one H100 (each part has a time budget,
enforced: a part that runs over stops and FAILs with what it measured so far). A part's budget
covers what it trains: DrFuse's epochs are those `drfuse train` resolves for the check's config
(`drfuse.experiments.resolve_run`: the 20-epoch image warm-up, then the joint epochs), and the
check prints them beside each part (`--plan` prints budgets and training without running).
Parts, each printing PASS/FAIL with its figure:

1. data        `drfuse synth` + ingest, cohort, features, images at the built-in demo's size
               (2,500 subjects; `--cpu`: 240). Trains nothing.
2. graph       the padded DrFuse forward traces as one graph (no graph break: what CUDA graphs
               need); the gathered (unpadded) forward's breaks are the figure beside it.
3. throughput  DrFuse train steps at the paper's sizes (ResNet50, d = 256, crop 224, 7,600
               matched stays resident on the GPU, 30 % CXR drop) at batch 16, 64 and 128: eager
               bf16 and fp32, eager padded, and at batch 16 torch.compile reduce-overhead
               (padded); stays/s, images/s and the ratio to the bare two-trunk ResNet50 forward +
               backward + Adam ceiling measured beside each row, and whether CUDA graphs were
               skipped (and why). PASS: every row measured and, on CUDA, reduce-overhead beats
               eager at batch 16. Trains steps, not epochs.
4. train       real `drfuse train` + `drfuse predict` (matched test set) of DrFuse (its image
               warm-up, then the joint epochs) and MedFuse on the device (amp on, image padding
               on), the same runs on the CPU, and DrFuse with `train.compile: reduce-overhead` on
               the device (CUDA graphs skipped or not, and why). PASS: each device run's macro
               PRAUC within 0.05 of the CPU run's (same seed: close, not equal).
5. amp         `drfuse predict` of the device DrFuse run with train.amp on and off: scores agree
               to 1e-3 and have no more ties than with amp off (predictions are float32 whatever
               train.amp says); the ties a bf16-autocast forward would give are the figure beside.
6. lease       two `drfuse train` processes (the Transformer: the lease is what is checked)
               started while the check holds the one visible GPU's lease: both wait; once it is
               released they take turns (the later one starts after the earlier one finished, by
               their run.json) and both finish; peak GPU memory of each.

Without CUDA it says so and exits 2; `--cpu` runs every part at toy sizes on the CPU (graph,
throughput without the compiled rows, train with padding on vs off, amp, and the lease on a fake
GPU id), which tests/test_gpu_check.py does. Exit 0 when every part passes, else 1.

    python benchmarks/gpu_check.py                       # on a CUDA machine
    python benchmarks/gpu_check.py --plan                # its budgets and what each part trains
    python benchmarks/gpu_check.py --cpu                 # anywhere, about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import train_throughput as tp  # benchmarks/ is on sys.path when this file runs
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("data", "graph", "throughput", "train", "amp", "lease")
# Time budgets. A part's budget is its fixed work plus, for each DrFuse run it trains, that run's
# epochs at the seconds per epoch below (`part_budget`). CUDA: estimates for one H100 with a margin
# (no GPU has run the check yet: docs/performance.md, "GPU"), within TOTAL_CUDA_S with the 20-epoch
# warm-up; CPU: toy sizes on a busy 2-core machine.
FIXED_S = {
    # throughput: eager rows ~40 s, compiling DrFuse (paper sizes) and the two-trunk ceiling with
    # reduce-overhead ~100 + ~60 s; train: compiling the demo DrFuse (training and evaluation
    # graphs) ~70 s, MedFuse on the device and the CPU, five predictions ~40 s
    "cuda": {"data": 20, "graph": 20, "throughput": 220, "train": 110, "amp": 10, "lease": 30},
    "cpu": {"data": 60, "graph": 60, "throughput": 60, "train": 50, "amp": 30, "lease": 90},
}
# Seconds per DrFuse epoch (image warm-up epoch, joint epoch with its validation) of the check's
# data by where the run trains. CUDA check, demo data (295 matched training stays, batch 16): on the
# GPU an eager step is launch-bound, ~10 ms for the image branch and ~25 ms for the whole model (19
# steps an epoch); on the host's CPU, this project's one-thread figures (docs/performance.md: the
# 20-epoch warm-up job 25 s, ~8 s of it start-up; a joint epoch 3.1 s), no gain assumed from threads.
EPOCH_S = {"cuda": {"gpu": (0.5, 1.5), "cpu": (1.0, 3.0)}, "cpu": {"cpu": (0.5, 1.0)}}
TOTAL_CUDA_S = 480  # the whole check on one H100
# Data and training settings, merged into config.yaml's builtin_overrides (the demo's).
DATA = {
    "cuda": {"train": {"epochs": 4, "patience": 4, "num_threads": 0}, "model": {"dropout": 0.0}},
    "cpu": {
        "synth": {"n_subjects": 240, "seed": 7, "image_size": [96, 80]},
        "images": {"cache_size": 40},
        "model": {"d_model": 32, "n_heads": 2, "ff_dim": 64, "dropout": 0.0, "image_size": 36},
        "train": {"batch_size": 32, "epochs": 1, "patience": 1, "num_threads": 1},
    },
}
# Throughput sizes: the paper's on CUDA, toy ones on the CPU.
THROUGHPUT = {
    "cuda": {
        **tp.FULL,
        "batches": [16, 64, 128],
        "fp32_batches": [16, 128],
        "compile_batches": [16],
        "steps": 20,
        "warmup": 5,
        "small": False,
    },
    "cpu": {
        **tp.SMALL,
        "n": 32,
        "batches": [8],
        "fp32_batches": [],
        "compile_batches": [],
        "steps": 2,
        "warmup": 1,
        "small": True,
    },
}
TRAIN_MODELS = ("drfuse", "medfuse")
LEASE_MODEL, LEASE_EPOCHS = "transformer", 2
PRAUC_TOLERANCE = 0.05
AMP_TOLERANCE = 1e-3
LEASE_WAIT = "waiting for one to be released"  # what drfuse.train.gpu_lease logs when it queues
log = logging.getLogger("gpu_check")


class PartTimeout(Exception):
    pass


@dataclass
class Check:
    mode: str  # "cuda" | "cpu"
    work: Path
    budget_scale: float = 1.0
    parts: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.mode == "cuda"

    @property
    def results(self) -> Path:
        return self.work / "results"

    def write_base_config(self) -> Path:
        """config.yaml with the check's data and training settings (`DATA`) and its results folder."""
        from drfuse import config as config_mod

        cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
        cfg = config_mod.deep_merge(
            cfg, {"data": {"results_dir": str(self.results)}, "builtin_overrides": DATA[self.mode]}
        )
        # every model trains by the check's few epochs: the baselines' own recipes (per_model) would
        # give them other epochs and an AUROC selection that float rounding can tip between epochs
        cfg["per_model"] = {}
        cfg["builtin_overrides"].pop("per_model", None)
        path = self.work / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def raw_config(self, **train) -> dict:
        base = yaml.safe_load((self.work / "config.yaml").read_text())
        base["builtin_overrides"].setdefault("train", {}).update(train)
        return base

    def config(self, name: str, **train) -> Path:
        """A config file for `drfuse --config`: the check's base config with `train` settings."""
        path = self.work / f"config-{name}.yaml"
        path.write_text(yaml.safe_dump(self.raw_config(**train)))
        return path

    def epochs(self, model: str, **train) -> tuple[int, int]:
        """(image warm-up epochs, joint epochs) of a `drfuse train --model model` run of the check's
        config with `train` settings, resolved as `drfuse train` resolves them (resolve_run; the
        warm-up is 0 for models without one)."""
        from drfuse import config as config_mod
        from drfuse.experiments import in_drfuse_family, resolve_run

        run = resolve_run(model, config_mod.checked_resolve(self.raw_config(**train), "gpu_check config"))[1]["train"]
        return (int(run["cxr_warmup_epochs"]) if in_drfuse_family(model) else 0), int(run["epochs"])


@contextlib.contextmanager
def budget(seconds: float):
    """Raise PartTimeout in this (main) thread once `seconds` have passed."""

    def expire(signum, frame):
        raise PartTimeout(f"budget of {seconds:.0f} s exceeded")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def drfuse(config: Path, *args) -> None:
    """`drfuse --config config args...` in this process; an exception when it fails."""
    from drfuse import cli

    code = cli.main(["--config", str(config), *[str(a) for a in args]])
    if code:
        raise RuntimeError(f"`drfuse {args[0]}` exited {code} (its error is in the log beside the JSON)")


def _drfuse_runs(ck: Check, name: str) -> list[tuple[str, int, int]]:
    """(where it trains: gpu | cpu, warm-up epochs, joint epochs) of each DrFuse run of a part."""
    runs = []
    if name == "train":
        for model, variant, train in _variants(ck):
            if model == "drfuse":
                runs.append(("gpu" if ck.cuda and variant != "cpu" else "cpu", *ck.epochs(model, **train)))
    return runs


def _epochs(n: int, kind: str = "") -> str:
    return f"{n} {kind}epoch{'' if n == 1 else 's'}"


def trains(ck: Check, name: str) -> str:
    """What a part trains, in words, with the epochs `drfuse train` resolves for its config."""
    if name == "throughput":
        size = THROUGHPUT[ck.mode]
        return (
            f"DrFuse train steps, no epochs: {len(_throughput_plan(ck))} rows of "
            f"{size['warmup']} + {size['steps']} steps"
        )
    if name == "train":
        by_model: dict[str, list[str]] = {}
        for model, variant, _ in _variants(ck):
            by_model.setdefault(model, []).append(variant)
        parts = []
        for model, variants in by_model.items():
            warmup, joint = ck.epochs(model)
            epochs = f"{warmup} warm-up + {_epochs(joint, 'joint ')}" if warmup else _epochs(joint)
            parts.append(
                f"{'DrFuse' if model == 'drfuse' else 'MedFuse'} {epochs} x {len(variants)} ({', '.join(variants)})"
            )
        return "; ".join(parts)
    if name == "lease":
        _, joint = ck.epochs(LEASE_MODEL, epochs=LEASE_EPOCHS)
        return f"Transformer {_epochs(joint)} x 2 processes, one after the other"
    return {
        "data": "nothing (builds the data)",
        "graph": "nothing (traces the DrFuse forward)",
        "amp": "nothing (predicts with the train part's DrFuse)",
    }[name]


def part_budget(ck: Check, name: str) -> float:
    """A part's time budget: its fixed work plus its DrFuse runs' epochs (`FIXED_S`, `EPOCH_S`)."""
    seconds = FIXED_S[ck.mode][name]
    for where, warmup, joint in _drfuse_runs(ck, name):
        per_warmup, per_joint = EPOCH_S[ck.mode][where]
        seconds += warmup * per_warmup + joint * per_joint
    return seconds * ck.budget_scale


class _Collect(logging.Handler):
    def __init__(self, into: list):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record):
        self.into.append(record.getMessage())


# torch.compile's reduce-overhead mode says here (a warning) why it ran a graph without CUDA graphs
CUDAGRAPH_LOG = "torch._inductor.cudagraph_utils.__cudagraphs"


@contextlib.contextmanager
def cudagraph_skips(report: dict):
    """Counts the graphs torch.compile ran without CUDA graphs while the block runs (inductor's
    `cudagraph_skips` counter) and the reasons it logged, into report["cudagraphs"]."""
    from torch._dynamo.utils import counters

    reasons: list[str] = []
    handler = _Collect(reasons)
    logger = logging.getLogger(CUDAGRAPH_LOG)
    logger.addHandler(handler)
    before = counters["inductor"]["cudagraph_skips"]
    try:
        yield
    finally:
        logger.removeHandler(handler)
        report["cudagraphs"] = {
            "skipped": counters["inductor"]["cudagraph_skips"] - before,
            "reasons": sorted(set(reasons)),
        }


def cudagraph_text(info: dict | None) -> str:
    if info is None:
        return ""
    if not info["skipped"]:
        return "CUDA graphs used"
    why = "; ".join(info["reasons"]) or "no reason logged (a graph not on the GPU)"
    return f"CUDA graphs skipped {info['skipped']}x: {why}"


# --------------------------------------------------------------------------------------------
# parts: each fills `report` (figure, details) as it goes and returns whether it passed


def part_data(ck: Check, report: dict) -> bool:
    from drfuse import config as config_mod

    config = ck.work / "config.yaml"  # Check.write_base_config
    synth, r = ck.work / "synth", ck.results
    drfuse(config, "synth", "--out", synth)
    drfuse(
        config,
        "ingest",
        "--mimic-iv",
        synth / "mimic-iv",
        "--mimic-cxr",
        synth / "mimic-cxr-jpg",
        "--db",
        r / "mimiciv.duckdb",
        "--manifest",
        r / "ingest" / "manifest.json",
    )
    drfuse(config, "cohort", "--db", r / "mimiciv.duckdb", "--out", r / "cohort")
    drfuse(
        config,
        "features",
        "--db",
        r / "mimiciv.duckdb",
        "--stays",
        r / "cohort" / "stays.parquet",
        "--out",
        r / "features",
    )
    threads = [] if ck.cuda else ["--threads", "1"]  # the CPU check shares a small machine
    drfuse(
        config,
        "images",
        "--stays",
        r / "cohort" / "stays.parquet",
        "--cxr-root",
        synth / "mimic-cxr-jpg",
        "--out",
        r / "images",
        *threads,
    )
    stays = pl.read_parquet(r / "cohort" / "stays.parquet")
    n_subjects = config_mod.load(config)["synth"]["n_subjects"]
    matched = stays.filter(pl.col("has_cxr") & (pl.col("split") == "train")).height
    report["figure"] = f"{n_subjects} subjects, {stays.height} stays, {matched} matched training stays"
    return True


def part_graph(ck: Check, report: dict) -> bool:
    import torch

    from drfuse import config as config_mod
    from drfuse.models import build_model
    from drfuse.models.encoders import padded_image_batches

    model_cfg = config_mod.load(ck.work / "config.yaml")["model"]
    device = torch.device(ck.mode)
    model = build_model("drfuse", model_cfg).to(device).train()
    b, crop = 16, model_cfg["image_size"]
    args = (
        torch.randn(b, 48, 76, device=device),
        torch.full((b,), 48, device=device),
        torch.randn(b, 3, crop, crop, device=device),
        torch.arange(b, device=device) % 3 != 0,
    )
    breaks = {}
    for pad in (True, False) if ck.cuda else (True,):  # on the CPU a unit test traces the other
        torch._dynamo.reset()
        with padded_image_batches(pad):
            breaks[pad] = torch._dynamo.explain(model)(*args).graph_break_count
    torch._dynamo.reset()
    report["details"] = {"graph_breaks_padded": breaks[True], "graph_breaks_unpadded": breaks.get(False)}
    report["figure"] = f"DrFuse forward graph breaks: padded {breaks[True]}" + (
        f", unpadded {breaks[False]}" if False in breaks else ""
    )
    return breaks[True] == 0


def part_throughput(ck: Check, report: dict) -> bool:
    import torch

    from drfuse.train.engine import DeviceData

    size = THROUGHPUT[ck.mode]
    cfg = tp.paper_cfg(size, size["small"])
    device = torch.device(ck.mode)
    if not ck.cuda:
        torch.set_num_threads(1)
    data = DeviceData(tp.synthetic_split(size["n"], size["cache"]), device, with_images=True)
    plan = _throughput_plan(ck)
    rows = report.setdefault("rows", [])
    report["planned_rows"] = len(plan)
    ceilings = {}  # one per batch, precision and eager/compiled
    for batch, amp, mode, pad in plan:
        settings = tp.engine_settings(cfg, device, batch, amp, mode, pad)
        key = (batch, amp, mode is not None)
        graphs: dict = {}  # the row's CUDA-graph skips, DrFuse's and the ceiling's, when compiled so
        with cudagraph_skips(graphs) if mode == "reduce-overhead" else contextlib.nullcontext():
            row = tp.measure_row(cfg, data, settings, size["warmup"], size["steps"], ceilings.get(key))
        row["cudagraphs"] = graphs.get("cudagraphs")
        ceilings.setdefault(key, (row["ceiling_stays_s"], row["ceiling_compile"]))
        rows.append(row)
        log.info("throughput row %s", row)
    by = {(r["batch"], r["precision"], r["compile"], r["pad_images"]): r for r in rows}
    b16 = size["batches"][0]
    eager = by[(b16, "bf16" if ck.cuda else "fp32", "eager", False)]
    figure = f"batch {b16}: eager {eager['stays_s']:.0f} stays/s ({eager['ratio']:.2f} of ceiling)"
    graphs = by.get((b16, "bf16", "reduce-overhead", True))
    if graphs:
        figure += (
            f", reduce-overhead {graphs['stays_s']:.0f} ({graphs['ratio']:.2f}; {cudagraph_text(graphs['cudagraphs'])})"
        )
    best = max(rows, key=lambda r: r["stays_s"])
    report["figure"] = (
        figure + f"; best {best['stays_s']:.0f} stays/s at batch {best['batch']} {best['compile']} {best['precision']}"
    )
    return len(rows) == len(plan) and (graphs is None or graphs["stays_s"] > eager["stays_s"])


def _throughput_plan(ck: Check) -> list[tuple[int, bool, str | None, bool]]:
    """(batch, amp, compile mode, pad) of each throughput row, the most telling first. The compiled
    row is reduce-overhead alone (CUDA graphs: what padding is for); with `default` too the part
    compiled DrFuse twice at the paper's sizes, over a minute more than the 8 minutes allow."""
    size = THROUGHPUT[ck.mode]
    plan = [(b, True, None, False) for b in size["batches"]]
    plan += [(size["batches"][0], True, None, True)]
    plan += [(b, False, None, False) for b in size["fp32_batches"]]
    plan += [(b, True, "reduce-overhead", True) for b in size["compile_batches"]]
    return plan


def _variants(ck: Check) -> list[tuple[str, str, dict]]:
    """(model, variant, train settings) of the train part."""
    device = {"device": ck.mode, "amp": True, "pad_images": True, "compile": False}
    cpu = {"device": "cpu", "amp": True, "pad_images": False, "compile": False}
    runs = [(m, "device", device) for m in TRAIN_MODELS] + [(m, "cpu", cpu) for m in TRAIN_MODELS]
    if ck.cuda:  # compiling on the CPU takes minutes: only on the device
        runs.append(("drfuse", "reduce-overhead", {**device, "compile": "reduce-overhead", "pad_images": "auto"}))
    return runs


def _prauc(predictions: Path) -> float:
    from drfuse.phenotypes import PHENOTYPES
    from drfuse.train.metrics import macro_scores

    frame = pl.read_parquet(predictions)
    y = frame.select(f"y:{c}" for c in PHENOTYPES).to_numpy()
    p = frame.select(f"p:{c}" for c in PHENOTYPES).to_numpy()
    return macro_scores(y, p)["prauc"]


def part_train(ck: Check, report: dict) -> bool:
    runs = report.setdefault("runs", [])
    for model, variant, train in _variants(ck):
        t0 = time.perf_counter()
        config = ck.config(variant, **train)
        run_dir = ck.work / "train" / f"{model}-{variant}"
        out_dir = ck.work / "predict" / f"{model}-{variant}"
        out = out_dir / "matched.parquet"
        graphs: dict = {}
        with cudagraph_skips(graphs) if train["compile"] == "reduce-overhead" else contextlib.nullcontext():
            drfuse(
                config,
                "train",
                "--model",
                model,
                "--train-set",
                "matched",
                "--seed",
                0,
                "--results",
                ck.results,
                "--out",
                run_dir,
            )
        drfuse(
            config, "predict", "--run", run_dir, "--test-set", "matched", "--results", ck.results, "--out-dir", out_dir
        )
        run = json.loads((run_dir / "run.json").read_text())
        runs.append(
            {
                "model": model,
                "variant": variant,
                "prauc": _prauc(out),
                "seconds": time.perf_counter() - t0,
                "epochs": run["epochs_run"],
                "device": run["device"],
                "peak_gpu_memory_mb": run["peak_gpu_memory_mb"],
                "cudagraphs": graphs.get("cudagraphs"),
            }
        )
        log.info("train run %s", runs[-1])
    cpu = {r["model"]: r["prauc"] for r in runs if r["variant"] == "cpu"}
    gaps = {f"{r['model']} {r['variant']}": r["prauc"] - cpu[r["model"]] for r in runs if r["variant"] != "cpu"}
    report["figure"] = (
        "PRAUC device - CPU: "
        + ", ".join(f"{k} {v:+.3f}" for k, v in gaps.items())
        + " (CPU: "
        + ", ".join(f"{m} {v:.3f}" for m, v in cpu.items())
        + ")"
        + "".join(f"; {r['model']} {r['variant']}: {cudagraph_text(r['cudagraphs'])}" for r in runs if r["cudagraphs"])
    )
    return len(runs) == len(_variants(ck)) and all(abs(g) <= PRAUC_TOLERANCE for g in gaps.values())


def _ties(p: np.ndarray) -> int:
    """Scores equal to another score of the same label, over all labels."""
    return int(sum(p.shape[0] - np.unique(p[:, c]).size for c in range(p.shape[1])))


def _autocast_probs(ck: Check, run_dir: Path) -> np.ndarray:
    """What `predict` computed before it left autocast: bf16-autocast forward of best.pt."""
    import torch

    from drfuse import config as config_mod
    from drfuse.models import build_model
    from drfuse.train import checkpoint
    from drfuse.train.data import load_split
    from drfuse.train.engine import DeviceData, EngineSettings, make_batch, run_forward

    state = checkpoint.load(run_dir / "best.pt")
    meta = json.loads(state["meta"])
    device = torch.device(ck.mode)
    model = build_model(meta["model_name"], meta["model_cfg"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    cfg = config_mod.load(ck.work / "config-device.yaml")
    settings = EngineSettings.from_cfg({"train": cfg["train"], "model": meta["model_cfg"]}, device, 0.0)
    data = DeviceData(load_split(ck.results, "test", "matched"), device, True)
    probs = []
    with torch.no_grad(), torch.autocast(ck.mode, dtype=torch.bfloat16):
        for start in range(0, data.n, settings.batch_size):
            batch = make_batch(
                data, torch.arange(start, min(start + settings.batch_size, data.n)), settings, False, None, True
            )
            logits = run_forward(model, batch.ehr, batch.lengths, batch.images, batch.has_cxr, settings)["logits"]
            probs.append(torch.sigmoid(logits).float().cpu())
    return torch.cat(probs).numpy()


def part_amp(ck: Check, report: dict) -> bool:
    from drfuse.phenotypes import PHENOTYPES

    run_dir = ck.work / "train" / "drfuse-device"
    if not (run_dir / "best.pt").is_file():
        report["figure"] = "no DrFuse device run (the train part did not produce one)"
        return False
    scores = {}
    for amp in (True, False):
        config = ck.config(f"amp-{amp}", device=ck.mode, amp=amp, pad_images=True)
        out_dir = ck.work / "predict" / f"drfuse-amp-{amp}"
        drfuse(
            config, "predict", "--run", run_dir, "--test-set", "matched", "--results", ck.results, "--out-dir", out_dir
        )
        scores[amp] = pl.read_parquet(out_dir / "matched.parquet").select(f"p:{c}" for c in PHENOTYPES).to_numpy()
    autocast = _autocast_probs(ck, run_dir)
    diff = float(np.abs(scores[True] - scores[False]).max())
    ties = {"amp_on": _ties(scores[True]), "amp_off": _ties(scores[False]), "bf16_autocast_forward": _ties(autocast)}
    report["details"] = {
        "max_abs_diff": diff,
        "ties": ties,
        "bf16_autocast_max_abs_diff": float(np.abs(autocast - scores[False]).max()),
    }
    report["figure"] = (
        f"amp on vs off: max |dp| {diff:.1e}, ties {ties['amp_on']} vs {ties['amp_off']} "
        f"(a bf16-autocast forward: {ties['bf16_autocast_forward']} ties, "
        f"max |dp| {report['details']['bf16_autocast_max_abs_diff']:.1e})"
    )
    return diff <= AMP_TOLERANCE and ties["amp_on"] <= ties["amp_off"]


def part_lease(ck: Check, report: dict, seconds: float) -> bool:
    from drfuse.train import gpu_lease

    env = {
        **os.environ,
        "DRFUSE_GPU_LOCK_DIR": str(ck.work / "leases"),
        "DRFUSE_GPU_LEASE_TIMEOUT": str(int(seconds)),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # The lease is what is checked here: the quickest model will do (the train part reports
    # DrFuse's peak GPU memory).
    model = LEASE_MODEL
    if ck.cuda:
        config, ids = ck.config("lease", device="cuda", epochs=LEASE_EPOCHS), gpu_lease.candidate_ids()
    else:
        # a fake GPU id: the lease works as with one GPU; as CUDA_VISIBLE_DEVICES it hides any real one
        env.update(DRFUSE_GPU_IDS="cpu-check")
        config, ids = ck.config("lease", device="auto", epochs=LEASE_EPOCHS), ["cpu-check"]
    logs = [ck.work / f"lease-{i}.log" for i in range(2)]
    runs = [ck.work / "lease" / f"run{i}" / "run.json" for i in range(2)]
    # The check holds the GPU's lease while both processes start, so both must queue whatever their
    # start-up times (a process that started late could otherwise find the lease already free).
    hold = gpu_lease.acquire(ids, timeout_s=10, set_env=False)
    procs = []
    try:
        for i in range(2):
            err = logs[i].open("w")
            cmd = [
                sys.executable,
                "-m",
                "drfuse",
                "--config",
                str(config),
                "train",
                "--model",
                model,
                "--train-set",
                "matched",
                "--results",
                str(ck.results),
                "--out",
                str(runs[i].parent),
            ]
            procs.append((subprocess.Popen(cmd, env=env, stdout=err, stderr=subprocess.STDOUT, cwd=ck.work), err))
        while not all(LEASE_WAIT in log_.read_text() or p.poll() is not None for log_, (p, _) in zip(logs, procs)):
            time.sleep(0.2)
        hold.release()
        codes = [p.wait() for p, _ in procs]
    finally:  # a budget overrun: stop both
        hold.release()
        for p, err in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            err.close()
    texts = [log_.read_text() for log_ in logs]
    waited = [i for i, text in enumerate(texts) if LEASE_WAIT in text]
    # Once released, the two must take turns: the later one starts (takes the lease) only after the
    # earlier one has finished.
    times = [json.loads(r.read_text()) if r.is_file() else None for r in runs]
    took_turns = None
    if None not in times:
        spans = sorted(
            (datetime.datetime.fromisoformat(t["started"]), datetime.datetime.fromisoformat(t["finished"]))
            for t in times
        )
        took_turns = spans[1][0] >= spans[0][1]
    peaks = [t and t["peak_gpu_memory_mb"] for t in times]
    report["details"] = {"exit_codes": codes, "waited": waited, "took_turns": took_turns, "peak_gpu_memory_mb": peaks}
    peak_text = ", ".join(f"{p} MB" for p in peaks) if ck.cuda else "n/a on the CPU"
    report["figure"] = (
        f"exit codes {codes}, waited while the check held the lease {waited}, "
        f"then took turns {took_turns}, peak GPU memory {peak_text}"
    )
    return codes == [0, 0] and waited == [0, 1] and took_turns is True


# --------------------------------------------------------------------------------------------


def run_part(ck: Check, name: str) -> dict:
    seconds = part_budget(ck, name)
    report: dict = {"budget_s": round(seconds, 1), "trains": trains(ck, name)}
    t0 = time.perf_counter()
    log.info("part %s (budget %.0f s)", name, seconds)
    try:
        with budget(seconds):
            fn = globals()[f"part_{name}"]
            passed = fn(ck, report, seconds) if name == "lease" else fn(ck, report)
        report["status"] = "PASS" if passed else "FAIL"
    except PartTimeout as exc:
        report.update(status="FAIL", error=str(exc))
    except Exception as exc:  # a failing part must not stop the others
        report.update(status="FAIL", error=f"{type(exc).__name__}: {exc}")
        log.error("part %s failed:\n%s", name, traceback.format_exc())
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if "error" in report:
        report["figure"] = report.get("figure", "") + (" - " if report.get("figure") else "") + report["error"]
    _release_memory()
    return report


def _release_memory() -> None:
    import torch

    torch._dynamo.reset()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def machine(mode: str) -> dict:
    import torch

    info = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }
    if mode == "cuda":
        info.update(
            gpu=torch.cuda.get_device_name(), cuda_runtime=torch.version.cuda, cudnn=torch.backends.cudnn.version()
        )
        try:
            query = [
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader",
                "-i",
                os.environ["CUDA_VISIBLE_DEVICES"],
            ]
            info["driver"] = (
                subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
            )
        except (OSError, subprocess.SubprocessError):
            info["driver"] = "unknown"
    return info


def print_table(result: dict) -> None:
    print(
        f"\ngpu_check ({result['mode']}) on {result['machine'].get('gpu', 'CPU')}, torch {result['machine']['torch']}"
        f"{', driver ' + result['machine']['driver'] if 'driver' in result['machine'] else ''}"
    )
    for name, part in result["parts"].items():
        print(
            f"{part['status']:<4}  {name:<10} {part['seconds']:>6.1f} s / {part['budget_s']:>4.0f}  "
            f"{part.get('figure', '')}"
        )
        print(f"{'':<17}trains: {part['trains']}")
    rows = result["parts"].get("throughput", {}).get("rows", [])
    if rows:
        print(
            f"\n{'batch':>5} {'precision':>9} {'compile':>15} {'pad':>5} {'stays/s':>9} {'images/s':>9} "
            f"{'ceiling':>9} {'(compile)':>15} {'ratio':>6} {'warm-up s':>9} {'peak MB':>8}"
        )
        for r in rows:
            peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
            print(
                f"{r['batch']:>5} {r['precision']:>9} {r['compile']:>15} {str(r['pad_images']):>5} "
                f"{r['stays_s']:>9.1f} {r['images_s']:>9.1f} {r['ceiling_stays_s']:>9.1f} {r['ceiling_compile']:>15} "
                f"{r['ratio']:>6.2f} {r['warmup_s']:>9.1f} {peak:>8}"
            )
    runs = result["parts"].get("train", {}).get("runs", [])
    if runs:
        print(f"\n{'model':>8} {'run':>16} {'PRAUC':>6} {'epochs':>6} {'seconds':>7} {'peak MB':>8}")
        for r in runs:
            print(
                f"{r['model']:>8} {r['variant']:>16} {r['prauc']:>6.3f} {r['epochs']:>6} {r['seconds']:>7.1f} "
                f"{r['peak_gpu_memory_mb'] if r['peak_gpu_memory_mb'] is not None else '-':>8}"
            )
    print(f"\n{'ALL PASS' if result['passed'] else 'SOME PARTS FAILED'} in {result['seconds']:.0f} s")


def print_plan(mode: str, budget_scale: float = 1.0) -> int:
    """Each part's budget and what it trains, from the check's config (builds no data)."""
    with tempfile.TemporaryDirectory(prefix="drfuse-gpu-check-plan-") as work:
        ck = Check(mode, Path(work), budget_scale)
        ck.write_base_config()
        plan = {name: (part_budget(ck, name), trains(ck, name)) for name in PARTS}
    scaled = f", budgets x {budget_scale:g}" if budget_scale != 1 else ""
    print(f"gpu_check plan ({mode}{scaled}):")

    for name, (seconds, what) in plan.items():
        print(f"{name:<10} {seconds:>6.0f} s  trains: {what}")
    total = sum(s for s, _ in plan.values())
    print(
        f"{'total':<10} {total:>6.0f} s"
        + (f" (the check's limit on one H100: {TOTAL_CUDA_S} s)" if mode == "cuda" else "")
    )
    return 0


def _select_one_gpu() -> None:
    """Use one GPU (the first visible), chosen before anything initialises CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[0].strip() if visible else "0"
    os.environ.pop("DRFUSE_GPU_IDS", None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="every part that can, at toy sizes, on the CPU")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/out/gpu_check[_cpu].json)")
    parser.add_argument(
        "--workdir", default=None, help="keep the data and runs here (default: a temporary folder, removed)"
    )
    parser.add_argument(
        "--budget-scale", type=float, default=1.0, help="multiply every part's time budget (slower GPUs)"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma list, in this order: " + ",".join(PARTS))
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print each part's budget and what it trains (CUDA, or the CPU with --cpu), run nothing",
    )
    args = parser.parse_args(argv)
    if args.plan:
        return print_plan("cpu" if args.cpu else "cuda", args.budget_scale)

    import torch

    mode = "cpu" if args.cpu else "cuda"
    if not args.cpu and not torch.cuda.is_available():
        print(
            "gpu_check: torch sees no CUDA device here; run it on a machine with a GPU, or with --cpu "
            "for the CPU parts at toy sizes",
            file=sys.stderr,
        )
        return 2
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # nothing in this process may use a GPU
    else:
        _select_one_gpu()
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="drfuse-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["DRFUSE_GPU_LOCK_DIR"] = str(work / "leases")  # never queue behind other jobs' leases
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "out" / f"gpu_check{'_cpu' if args.cpu else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # every part's and every drfuse command's log lines go to a file beside the JSON
    logging.basicConfig(
        level=logging.INFO,
        filename=out.with_suffix(".log"),
        filemode="w",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    ck = Check(mode, work, args.budget_scale)
    ck.write_base_config()
    result = {
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": mode,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(mode),
        "parts": {},
        "passed": False,
        "seconds": 0.0,
    }
    t0 = time.perf_counter()
    try:
        for name in (p for p in PARTS if p in wanted):
            print(f"[gpu_check] {name} ...", flush=True)
            result["parts"][name] = run_part(ck, name)
            part = result["parts"][name]
            print(
                f"[gpu_check] {name}: {part['status']} ({part['seconds']:.0f} s) {part.get('figure', '')}", flush=True
            )
            result["seconds"] = round(time.perf_counter() - t0, 1)
            result["passed"] = all(p["status"] == "PASS" for p in result["parts"].values())
            out.write_text(json.dumps(result, indent=2, default=str))  # after every part: a crash keeps the rest
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    print(f"wrote {out} and {out.with_suffix('.log')}" + (f"; data and runs in {work}" if args.workdir else ""))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
