"""DrFuse training throughput against the bare two-trunk ResNet ceiling, measured side by side.

Builds MIMIC-sized synthetic data on the device (default: 7,600 matched stays, EHR 48 x 76, uint8
256 x 256 images, crop 224, ResNet50), then times

- DrFuse train steps exactly as the engine runs them (`drfuse.train.engine.make_batch` gathers a
  batch on the device, drops 30 % of the CXRs, augments on the device; `train_step` runs
  forward, loss, backward and Adam under the configured precision), at several batch sizes;
- the ceiling: two torchvision ResNets (the two CXR trunks DrFuse runs per image) forward +
  backward + Adam on the same already-prepared images, same precision and memory format.

Prints a table and writes JSON to benchmarks/out/. On CUDA: bf16 autocast and channels_last as in
config.yaml (`--fp32`, `--no-channels-last`, `--compile` to change). `--small` runs tiny sizes with
ResNet18 on the CPU, so the script itself is checked without a GPU (its figures mean nothing).

    python benchmarks/train_throughput.py                 # on a GPU machine
    python benchmarks/train_throughput.py --small         # anywhere, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
import yaml

from drfuse import config as config_mod
from drfuse.models import build_model
from drfuse.train.augment import prepare_images
from drfuse.train.checkpoint import seed_everything
from drfuse.train.data import SplitData
from drfuse.train.engine import DeviceData, EngineSettings, make_batch, resolve_device, train_step

ROOT = Path(__file__).resolve().parents[1]
FULL = {"n": 7600, "cache": 256, "crop": 224, "backbone": "resnet50", "batches": [16, 64, 128, 256]}
SMALL = {"n": 64, "cache": 40, "crop": 32, "backbone": "resnet18", "batches": [8, 16]}
SMALL_MODEL = {"d_model": 32, "n_heads": 2, "ff_dim": 64, "dropout": 0.1}


def synthetic_split(n: int, size: int, seed: int = 0) -> SplitData:
    """n matched stays: random EHR, lengths, labels and images (all with a usable CXR)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(12, 49, n)
    ehr = rng.normal(size=(n, 48, 76)).astype(np.float32)
    ehr[np.arange(48)[None, :] >= lengths[:, None]] = 0.0
    labels = (rng.random((n, 25)) < 0.15).astype(np.int8)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    return SplitData(np.arange(n), ehr, lengths, labels, np.ones(n, bool), np.arange(n), images)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step after warm-up."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def drfuse_rate(cfg, data: DeviceData, settings: EngineSettings, warmup: int, steps: int) -> float:
    """DrFuse training samples/s at settings.batch_size, the engine's own batch and step code."""
    seed_everything(0)
    model = build_model("drfuse", cfg["model"]).to(settings.device)
    if settings.cuda and settings.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if settings.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(0)
    model.train()

    def step():
        idx = torch.randint(0, data.n, (settings.batch_size,), generator=generator).to(settings.device)
        train_step(model, forward, optimizer, make_batch(data, idx, settings, True, generator, True), settings)

    rate = settings.batch_size / time_steps(step, settings.device, warmup, steps)
    del model, optimizer, forward
    return rate


def two_trunk_rate(backbone: str, data: DeviceData, settings: EngineSettings, warmup: int, steps: int) -> float:
    """Ceiling: two bare torchvision ResNets, forward + backward + Adam on prepared images."""
    torch.manual_seed(0)
    nets = torch.nn.ModuleList([getattr(torchvision.models, backbone)(weights=None) for _ in range(2)]).to(settings.device)
    if settings.cuda and settings.channels_last:
        nets.to(memory_format=torch.channels_last)
    fwd = [torch.compile(n) if settings.compile else n for n in nets]
    optimizer = torch.optim.Adam(nets.parameters(), lr=settings.lr)
    images = prepare_images(data.images[: settings.batch_size], settings.crop, False)
    if settings.cuda and settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    nets.train()

    def step():
        with settings.autocast():
            loss = sum(f(images).float().mean() for f in fwd)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rate = settings.batch_size / time_steps(step, settings.device, warmup, steps)
    del nets, optimizer, fwd
    return rate


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, ResNet18, CPU: checks the script")
    parser.add_argument("--device", default=None, help="auto|cpu|cuda (default: auto, cpu with --small)")
    parser.add_argument("--batches", default=None, help="comma list of batch sizes")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/out/train_throughput[_small].json)")
    args = parser.parse_args(argv)

    size = SMALL if args.small else FULL
    batches = [int(b) for b in args.batches.split(",")] if args.batches else size["batches"]
    steps = args.steps or (3 if args.small else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.small else 10)
    device_name = args.device or ("cpu" if args.small else "auto")

    # the paper's settings (config.yaml without the built-in demo's overrides), then the sizes here
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.pop("builtin_overrides", None)
    model_over = {"backbone": size["backbone"], "image_size": size["crop"], **(SMALL_MODEL if args.small else {})}
    train_over = {"device": device_name, "amp": not args.fp32, "channels_last": not args.no_channels_last, "compile": args.compile}
    cfg = config_mod.deep_merge(cfg, {"model": model_over, "train": train_over})
    device = resolve_device(cfg["train"])
    data = DeviceData(synthetic_split(size["n"], size["cache"]), device, with_images=True)

    rows = []
    for batch in batches:
        settings = EngineSettings.from_cfg(config_mod.deep_merge(cfg, {"train": {"batch_size": batch}}), device, 0.3)
        try:
            drfuse = drfuse_rate(cfg, data, settings, warmup, steps)
            ceiling = two_trunk_rate(size["backbone"], data, settings, warmup, steps)
        except torch.OutOfMemoryError:
            print(f"batch {batch}: out of memory, skipped")
            torch.cuda.empty_cache()
            continue
        rows.append({"batch": batch, "drfuse_samples_s": drfuse, "two_trunk_samples_s": ceiling, "ratio": drfuse / ceiling})
        if device.type == "cuda":
            torch.cuda.empty_cache()

    best = max(rows, key=lambda r: r["drfuse_samples_s"])
    print(f"\nDrFuse training throughput, {size['n']} matched samples, {size['backbone']}, "
          f"{size['cache']} px cache -> {size['crop']} crop, device {device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}")
    precision = "bf16" if device.type == "cuda" and not args.fp32 else "fp32"
    print(f"precision {precision}, channels_last {device.type == 'cuda' and not args.no_channels_last}, compile {args.compile}\n")
    print(f"{'batch':>6} {'DrFuse samples/s':>17} {'2-trunk samples/s':>18} {'ratio':>6} {'epoch s':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['drfuse_samples_s']:>17.1f} {r['two_trunk_samples_s']:>18.1f} {r['ratio']:>6.2f} "
              f"{size['n'] / r['drfuse_samples_s']:>8.1f}")
    print(f"best DrFuse batch: {best['batch']} ({best['drfuse_samples_s']:.1f} samples/s, "
          f"{best['ratio']:.2f} of the two-trunk ceiling at that batch)")

    result = {
        "benchmark": "train_throughput",
        "small": args.small,
        "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "precision": precision,
        "channels_last": device.type == "cuda" and not args.no_channels_last,
        "compile": args.compile,
        "n_samples": size["n"],
        "cache_size": size["cache"],
        "crop": size["crop"],
        "backbone": size["backbone"],
        "cxr_drop": 0.3,
        "steps": steps,
        "warmup": warmup,
        "rows": rows,
        "batch16": next((r for r in rows if r["batch"] == 16), None),
        "best": best,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "out" / f"train_throughput{'_small' if args.small else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
