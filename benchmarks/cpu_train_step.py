"""CPU training step time per model, training set, batch size and CNN width, on one thread.

Times `drfuse.train.engine.train_step` exactly as a demo training job runs it (one torch thread,
fp32, the batch gathered and augmented by `make_batch`, the 30 % CXR drop on the matched set for
the DrFuse family, Adam fused or not) on a finished data stage (`--results`: cohort, features
and images built, e.g. `snakemake --cores all results/images/cxr.u8`). An epoch's time is the
step time times the steps of one epoch, validation left out. This is how the demo's settings
were sized to fit the 15-minute budget on 2 cores (docs/performance.md).

    python benchmarks/cpu_train_step.py --results results --models drfuse mmtm \\
        --train-sets matched full --batch-sizes 16 64 --widths 64 32
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(
    name: str, train_set: str, batch_size: int, width: int, fused: bool, results: Path, base_cfg: dict, steps: int
) -> dict | None:
    from drfuse.experiments import resolve_run
    from drfuse.models import build_model
    from drfuse.train.data import load_split
    from drfuse.train.engine import DeviceData, EngineSettings, build_optimizer, make_batch, train_step
    from drfuse.train.run import training_cxr_drop

    _, cfg = resolve_run(name, base_cfg)
    cfg["model"]["cnn_width"] = width
    cfg["train"].update(batch_size=batch_size, device="cpu")
    torch.manual_seed(0)
    model = build_model(name, cfg["model"]).train()
    if not model.uses_ehr and train_set == "full":
        return None  # a CXR-only model trains on the matched set only
    split = load_split(results, "train", train_set)
    cpu = torch.device("cpu")
    data = DeviceData(split, cpu, model.uses_cxr)
    settings = EngineSettings.from_cfg(cfg, cpu, training_cxr_drop(model, train_set, cfg["train"]))
    optimizer = build_optimizer(model, settings, fused)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(split.labels), generator=generator)
    per_epoch = len(order) // batch_size
    n = min(steps, per_epoch - 1)
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(n + 1)]
    train_step(
        model, model, optimizer, make_batch(data, batches[0], settings, True, generator, model.uses_cxr), settings
    )
    start = time.perf_counter()
    for idx in batches[1:]:
        train_step(model, model, optimizer, make_batch(data, idx, settings, True, generator, model.uses_cxr), settings)
    seconds = (time.perf_counter() - start) / n
    return {
        "model": name,
        "train_set": train_set,
        "batch_size": batch_size,
        "cnn_width": width,
        "adam": "fused" if fused else "foreach",
        "parameters": sum(p.numel() for p in model.parameters()),
        "s_per_step": round(seconds, 4),
        "steps_per_epoch": per_epoch,
        "s_per_epoch": round(seconds * per_epoch, 1),
    }


def main() -> None:
    from drfuse import config as config_mod

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results folder with cohort, features, images")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", nargs="+", default=["drfuse"])
    parser.add_argument("--train-sets", nargs="+", default=["matched", "full"], choices=["matched", "full"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16])
    parser.add_argument("--widths", nargs="+", type=int, default=[64, 32], help="model.cnn_width values")
    parser.add_argument("--adam", nargs="+", default=["fused"], choices=["fused", "foreach"])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "cpu_train_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = config_mod.load(args.config)
    rows = []
    print(
        f"{'model':24s} {'set':8s} {'batch':>5s} {'width':>5s} {'adam':8s} {'params':>10s} "
        f"{'s/step':>7s} {'steps':>6s} {'s/epoch':>8s}"
    )
    for name, train_set, batch, width, adam in itertools.product(
        args.models, args.train_sets, args.batch_sizes, args.widths, args.adam
    ):
        row = step_seconds(name, train_set, batch, width, adam == "fused", Path(args.results), cfg, args.steps)
        if row is None:
            continue
        rows.append(row)
        print(
            f"{name:24s} {train_set:8s} {batch:5d} {width:5d} {adam:8s} {row['parameters']:10,d} "
            f"{row['s_per_step']:7.3f} {row['steps_per_epoch']:6d} {row['s_per_epoch']:8.1f}",
            flush=True,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "threads": 1, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
