"""Image cache build vs a bare full Pillow decode, images/s per core, on MIMIC-sized JPEGs.

Generates N grayscale 2544 x 3056 JPEGs (quality 95, smooth chest-like structure plus noise, so
each file is ~1-2 MB like MIMIC-CXR-JPG) in a temp dir laid out like MIMIC-CXR-JPG, then times on
the same files, in one run:

- bare:  `np.asarray(Image.open(p).convert('L'))` (full-resolution decode, nothing else);
- cache: `build_cache(..., workers=1)` (draft decoding + resize + crop + writing the cache);
- cache, all cores: `build_cache(..., workers=0)` (for information; shared machines are noisy).

Each timing is the best of `--repeats` interleaved rounds. Prints a table and writes benchmarks/out/image_cache.json.
The cache size defaults to config.yaml's `images.cache_size` (the paper setting, before the
built-in demo overrides).

    .venv/bin/python benchmarks/image_cache.py [--n-images 40] [--size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from PIL import Image

from drfuse.images.cache import build_cache

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 2544, 3056  # typical MIMIC-CXR-JPG (Columns x Rows)
# Sensor noise level giving ~1.5 MB per quality-95 file: MIMIC-CXR-JPG's mean (~570 GB / 377 k).
NOISE_SIGMA = 1.8


def chest_like(rng: np.random.Generator) -> np.ndarray:
    """Bright mediastinum and ribs-like bands, two dark lung fields, smooth blobs, sensor noise."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    yn, xn = y / HEIGHT, x / WIDTH
    img = 150 + 60 * np.exp(-(((xn - 0.5) / 0.12) ** 2))  # mediastinum
    for cx in (0.3, 0.7):  # lungs
        img -= 90 * np.exp(-(((xn - cx) / 0.16) ** 2 + ((yn - 0.45) / 0.28) ** 2) ** 2)
    img += 12 * np.sin(2 * np.pi * (yn * rng.uniform(9, 13) + 0.3 * np.abs(xn - 0.5)))  # ribs
    coarse = rng.normal(0, 1, (HEIGHT // 64, WIDTH // 64)).astype(np.float32)
    img += 15 * np.asarray(Image.fromarray(coarse, "F").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC))
    img += rng.normal(0, NOISE_SIGMA, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        subject, study, dicom_id = 10000000 + i, 50000000 + i, f"{i:08d}-bench"
        rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(chest_like(rng)).save(path, quality=95)
        rows.append({"stay_id": i, "has_cxr": True, "dicom_id": dicom_id, "cxr_path": rel})
    stays = root / "stays.parquet"
    pl.DataFrame(rows).write_parquet(stays)
    return stays


def best_interleaved(repeats: int, fns: dict) -> dict:
    """Best wall time of each function; rounds alternate so all see the same machine load."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    default_size = yaml.safe_load((ROOT / "config.yaml").read_text())["images"]["cache_size"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=40)
    ap.add_argument("--size", type=int, default=default_size)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "image_cache.json")
    args = ap.parse_args()
    logging.disable(logging.INFO)
    cores = len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mimic-cxr-jpg"
        t0 = time.perf_counter()
        stays = make_dataset(root, args.n_images, args.seed)
        files = sorted(root.glob("files/*/*/*/*.jpg"))
        mb = [p.stat().st_size / 1e6 for p in files]
        print(f"generated {len(files)} JPEGs {WIDTH}x{HEIGHT}, {np.mean(mb):.2f} MB each "
              f"(min {min(mb):.2f}, max {max(mb):.2f}) in {time.perf_counter() - t0:.1f} s")

        def bare():
            for p in files:
                np.asarray(Image.open(p).convert("L"))

        out = Path(tmp) / "images"
        best = best_interleaved(
            args.repeats,
            {
                "bare": bare,
                "cache": lambda: build_cache(stays, root, out, size=args.size, strict=False, workers=1),
                "all": lambda: build_cache(stays, root, out, size=args.size, strict=False, workers=0),
            },
        )
        assert pl.read_parquet(out / "index.parquet").height == len(files), "every benchmark image must be cached"
        bare_s, cache_s, all_s = best["bare"], best["cache"], best["all"]

    n = len(files)
    result = {
        "n_images": n,
        "image_wh": [WIDTH, HEIGHT],
        "mean_jpeg_mb": round(float(np.mean(mb)), 3),
        "cache_size": args.size,
        "repeats": args.repeats,
        "cores": cores,
        "bare_pillow_img_per_s_per_core": n / bare_s,
        "cache_build_workers1_img_per_s_per_core": n / cache_s,
        "speedup_per_core": bare_s / cache_s,
        "cache_build_all_cores_img_per_s": n / all_s,
        "python": platform.python_version(),
        "pillow": Image.__version__,
    }
    print(f"\n{'method':<36}{'img/s':>10}")
    print(f"{'bare Pillow full decode (1 core)':<36}{result['bare_pillow_img_per_s_per_core']:>10.1f}")
    print(f"{'build_cache workers=1':<36}{result['cache_build_workers1_img_per_s_per_core']:>10.1f}")
    print(f"{f'build_cache workers=0 ({cores} cores)':<36}{result['cache_build_all_cores_img_per_s']:>10.1f}")
    print(f"speed-up per core: {result['speedup_per_core']:.2f}x (target >= 1.5x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
