"""DrFuse training throughput against the bare two-trunk ResNet ceiling, measured side by side.

Builds MIMIC-sized synthetic data on the device (default: 7,600 matched stays, EHR 48 x 76, uint8
256 x 256 images, crop 224, ResNet50), then times

- DrFuse train steps exactly as the engine runs them (`drfuse.train.engine.make_batch` gathers a
  batch on the device, drops 30 % of the CXRs, augments on the device; `train_step` runs
  forward, loss, backward and Adam under the configured precision, compile mode and image
  padding), at several batch sizes;
- the ceiling: two torchvision ResNets (the two CXR trunks DrFuse runs per image) forward +
  backward + Adam on the same already-prepared images, same precision, memory format and compile
  mode.

Stays/s counts batch rows, images/s the CXRs really used (70 % of the stays after the drop); the
ratio is DrFuse stays/s over the ceiling's (which runs both trunks on every stay's image).
`benchmarks/gpu_check.py` measures its throughput part with the functions here.

Prints a table and writes JSON to benchmarks/out/. On CUDA: bf16 autocast and channels_last as in
config.yaml (`--fp32`, `--no-channels-last`, `--compile [MODE]`, `--pad` to change). `--small`
runs tiny sizes with ResNet18 on the CPU, so the script itself is checked without a GPU (its
figures mean nothing).

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
from drfuse.models.masked_norm import MaskedBatchNorm2d
from drfuse.train.augment import prepare_images
from drfuse.train.checkpoint import seed_everything
from drfuse.train.data import SplitData
from drfuse.train.engine import DeviceData, EngineSettings, compile_model, make_batch, resolve_device, train_step

ROOT = Path(__file__).resolve().parents[1]
FULL = {"n": 7600, "cache": 256, "crop": 224, "backbone": "resnet50", "batches": [16, 64, 128, 256]}
SMALL = {"n": 64, "cache": 40, "crop": 32, "backbone": "resnet18", "batches": [8, 16]}
SMALL_MODEL = {"d_model": 32, "n_heads": 2, "ff_dim": 64, "dropout": 0.1}
CXR_DROP = 0.3


def synthetic_split(n: int, size: int, seed: int = 0) -> SplitData:
    """n matched stays: random EHR, lengths, labels and images (all with a usable CXR)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(12, 49, n)
    ehr = rng.normal(size=(n, 48, 76)).astype(np.float32)
    ehr[np.arange(48)[None, :] >= lengths[:, None]] = 0.0
    labels = (rng.random((n, 25)) < 0.15).astype(np.int8)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    return SplitData(np.arange(n), ehr, lengths, labels, np.ones(n, bool), np.arange(n), images)


def paper_cfg(size: dict, small: bool) -> dict:
    """config.yaml's paper settings (no built-in demo overrides) at the given sizes."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.pop("builtin_overrides", None)
    model = {"backbone": size["backbone"], "image_size": size["crop"], **(SMALL_MODEL if small else {})}
    return config_mod.deep_merge(cfg, {"model": model})


def engine_settings(cfg: dict, device: torch.device, batch: int, amp: bool, compile_mode, pad) -> EngineSettings:
    train = {"batch_size": batch, "amp": amp, "compile": compile_mode or False, "pad_images": pad}
    return EngineSettings.from_cfg(config_mod.deep_merge(cfg, {"train": train}), device, CXR_DROP)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds per step after warm-up, seconds of the warm-up: compilation shows there)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t1) / steps, t1 - t0


def drfuse_rate(cfg, data: DeviceData, settings: EngineSettings, warmup: int, steps: int) -> tuple[float, float]:
    """DrFuse training (stays/s, warm-up s) at settings.batch_size, the engine's batch and step code."""
    seed_everything(0)
    model = build_model("drfuse", cfg["model"]).to(settings.device)
    if settings.cuda and settings.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = compile_model(model, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(0)
    model.train()

    def step():
        idx = torch.randint(0, data.n, (settings.batch_size,), generator=generator)  # rows on the host, as the engine's
        train_step(model, forward, optimizer, make_batch(data, idx, settings, True, generator, True), settings)

    seconds, warm = time_steps(step, settings.device, warmup, steps)
    return settings.batch_size / seconds, warm


def two_trunk_rate(
    backbone: str, data: DeviceData, settings: EngineSettings, warmup: int, steps: int
) -> tuple[float, float]:
    """Ceiling (stays/s, warm-up s): two bare ResNets (DrFuse's BatchNorm class, no mask),
    forward + backward + Adam on prepared images."""
    torch.manual_seed(0)
    make = getattr(torchvision.models, backbone)
    nets = torch.nn.ModuleList([make(weights=None, norm_layer=MaskedBatchNorm2d) for _ in range(2)]).to(settings.device)
    if settings.cuda and settings.channels_last:
        nets.to(memory_format=torch.channels_last)
    fwd = [compile_model(n, settings) for n in nets]
    optimizer = torch.optim.Adam(nets.parameters(), lr=settings.lr)
    images = prepare_images(data.images[: settings.batch_size], settings.crop, False)
    if settings.cuda and settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    nets.train()

    def step():
        if settings.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with settings.autocast():
            loss = sum(f(images).float().mean() for f in fwd)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds, warm = time_steps(step, settings.device, warmup, steps)
    return settings.batch_size / seconds, warm


def measure_row(cfg, data: DeviceData, settings: EngineSettings, warmup: int, steps: int, ceiling=None) -> dict:
    """One table row: DrFuse and (unless `ceiling` = (stays/s, compile mode) is given) the
    two-trunk ceiling at the same batch, precision, memory format and compile mode; peak memory
    on CUDA."""
    device = settings.device
    if settings.cuda:
        torch.backends.cudnn.benchmark = True  # as in training (engine.fit)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    stays, warm = drfuse_rate(cfg, data, settings, warmup, steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if settings.cuda else None
    if ceiling is None:
        ceiling = (
            two_trunk_rate(cfg["model"]["backbone"], data, settings, warmup, steps)[0],
            settings.compile or "eager",
        )
    if settings.cuda:
        torch.cuda.empty_cache()
    kept = settings.batch_size - int(round(CXR_DROP * settings.batch_size))
    return {
        "batch": settings.batch_size,
        "precision": "bf16" if settings.cuda and settings.amp else "fp32",
        "compile": settings.compile or "eager",
        "pad_images": settings.pad_images,
        "stays_s": stays,
        "images_s": stays * kept / settings.batch_size,
        "ceiling_stays_s": ceiling[0],
        "ceiling_compile": ceiling[1],
        "ratio": stays / ceiling[0],
        "warmup_s": warm,
        "peak_mb": peak,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, ResNet18, CPU: checks the script")
    parser.add_argument("--device", default=None, help="auto|cpu|cuda (default: auto, cpu with --small)")
    parser.add_argument("--batches", default=None, help="comma list of batch sizes")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=["default", "reduce-overhead"],
        help="torch.compile both models (mode default unless given)",
    )
    parser.add_argument("--pad", default="auto", choices=["auto", "true", "false"], help="train.pad_images")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/out/train_throughput[_small].json)")
    args = parser.parse_args(argv)

    size = SMALL if args.small else FULL
    batches = [int(b) for b in args.batches.split(",")] if args.batches else size["batches"]
    steps = args.steps or (3 if args.small else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.small else 10)
    pad = {"auto": "auto", "true": True, "false": False}[args.pad]

    cfg = paper_cfg(size, args.small)
    cfg["train"].update(
        device=args.device or ("cpu" if args.small else "auto"), channels_last=not args.no_channels_last
    )
    device = resolve_device(cfg["train"])
    data = DeviceData(synthetic_split(size["n"], size["cache"]), device, with_images=True)

    rows = []
    for batch in batches:
        settings = engine_settings(cfg, device, batch, not args.fp32, args.compile, pad)
        try:
            rows.append(measure_row(cfg, data, settings, warmup, steps))
        except torch.OutOfMemoryError:
            print(f"batch {batch}: out of memory, skipped")
            torch.cuda.empty_cache()

    best = max(rows, key=lambda r: r["stays_s"])
    print(
        f"\nDrFuse training throughput, {size['n']} matched samples, {size['backbone']}, "
        f"{size['cache']} px cache -> {size['crop']} crop, device {device}"
        f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}"
    )
    print(
        f"precision {rows[0]['precision'] if rows else '-'}, "
        f"channels_last {device.type == 'cuda' and not args.no_channels_last}, "
        f"compile {args.compile or 'off'}, pad_images {rows[0]['pad_images'] if rows else '-'}\n"
    )
    print(f"{'batch':>6} {'stays/s':>9} {'images/s':>9} {'2-trunk stays/s':>16} {'ratio':>6} {'epoch s':>8}")
    for r in rows:
        print(
            f"{r['batch']:>6} {r['stays_s']:>9.1f} {r['images_s']:>9.1f} {r['ceiling_stays_s']:>16.1f} "
            f"{r['ratio']:>6.2f} {size['n'] / r['stays_s']:>8.1f}"
        )
    print(
        f"best DrFuse batch: {best['batch']} ({best['stays_s']:.1f} stays/s, "
        f"{best['ratio']:.2f} of the two-trunk ceiling at that batch)"
    )

    result = {
        "benchmark": "train_throughput",
        "small": args.small,
        "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "channels_last": device.type == "cuda" and not args.no_channels_last,
        "n_samples": size["n"],
        "cache_size": size["cache"],
        "crop": size["crop"],
        "backbone": size["backbone"],
        "cxr_drop": CXR_DROP,
        "steps": steps,
        "warmup": warmup,
        "rows": rows,
        "batch16": next((r for r in rows if r["batch"] == 16), None),
        "best": best,
    }
    out = (
        Path(args.out)
        if args.out
        else ROOT / "benchmarks" / "out" / f"train_throughput{'_small' if args.small else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
