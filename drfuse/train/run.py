"""`drfuse train` and `drfuse predict`: one model on one training set, and its test predictions.

`train` holds `out_dir/.train.lock` (a second `train` into the same folder fails at once, naming
the holder: `locks.train_dir_lock`), leases a GPU (see `gpu_lease`), seeds every generator, builds the
model from the registry, loads the train and validation splits of the training set and runs the
engine into `train/{model}/{train_set}/seed{n}/` (best.pt, last.pt, metrics.csv, then run.json
last, so run.json means "finished").

`warm_up` runs DrFuse's image warm-up alone (`train.cxr_warmup_epochs`) into `warmup/seed{n}/`
(warmup.pt); `train --warm-start` starts a DrFuse-family run after it, bit-identical to the run
that does its own warm-up: the workflow warms up once per seed for the family's runs whose
warm-up settings are DrFuse's (`drfuse.experiments.shares_warmup`), not once per run.

Every function takes the run's task (`drfuse.tasks`: phenotyping, the 25 labels, or mortality):
the model gets one output per label and trains and predicts on the task's cohort; best.pt
records a task other than phenotyping (its `meta`: older phenotyping checkpoints keep resuming).

`predict` rebuilds the model from best.pt (the best-validation weights, never the last epoch's),
after checking that the results folder holds the data the run was trained on (the split, cohort,
features and images fingerprinted in best.pt: `data.data_fingerprint`), predicts the test split
of the full or matched dataset and writes the predictions table per the contract in
docs/architecture.md, plus a `.npz` beside it: the stay ids and, for models that output them
(DrFuse), the four representations.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
from pathlib import Path

import numpy as np
import polars as pl

from drfuse import atomic
from drfuse.errors import UserError
from drfuse.experiments import warmup_settings
from drfuse.tasks import PHENOTYPING, n_outputs
from drfuse.tasks import labels as task_labels
from drfuse.train import checkpoint, gpu_lease, locks
from drfuse.train.data import data_fingerprint, dataset_for, fingerprint, load_split
from drfuse.train.engine import (
    BEST,
    LAST,
    REPRESENTATIONS,
    DeviceData,
    EngineSettings,
    fit,
    predict_outputs,
    resolve_device,
)

log = logging.getLogger(__name__)

ATTENTION_TOKENS = ("ehr", "shared", "cxr")
# settings that may change between a killed run and its restart without invalidating last.pt
RESUMABLE_CHANGES = (
    "epochs",
    "patience",
    "device",
    "num_threads",
    "compile",
    "pad_images",
    "amp",
    "channels_last",
    "checkpoint_interval_s",
)
# `model:` settings that best.pt files written before the setting existed do not record, each at
# the value that reproduces how those runs were built and trained (the paper's behaviour, which the
# code had before the setting was added): torchvision's ResNet width, the heads of Eq. 10 ordered
# by each sample's losses with the indicator of Eq. 10 over every class, and the attention of Eqs. 5-6. The only
# model defaults outside config.yaml, and read only by `stored_model_cfg`.
OLD_RUN_MODEL_SETTINGS = {
    "cnn_width": 64,
    "rank_order": "sample",
    "rank_gap": 0.0,
    "rank_negatives": 1.0,
    "attention_query": "mean",
    "attention_prior": "none",
}


def _lease(train_cfg: dict) -> gpu_lease.GpuLease:
    """A GPU lease when CUDA may be used; it must come before anything initialises CUDA."""
    if train_cfg["device"] == "cpu":
        return gpu_lease.GpuLease(None, None, None)
    return gpu_lease.acquire()


def training_cxr_drop(model, dataset: str, train_cfg: dict) -> float:
    """The share of each training batch whose CXR is dropped: the setting the model names
    (`cxr_drop_setting`: `train.cxr_drop` for the DrFuse family, the paper's recipe;
    `train.baseline_cxr_drop` for the fusion baselines, whose original code never drops an image),
    applied on the matched dataset only, where every stay has a CXR."""
    setting = getattr(model, "cxr_drop_setting", None)
    return float(train_cfg[setting]) if setting and dataset == "matched" else 0.0


# what `warm_up` leaves for the runs: its last.pt, linked under this name once it has finished
WARMUP = "warmup.pt"


def _warmup_fingerprint(
    model_name: str, cfg: dict, seed: int, results_dir: Path, image_split=None, task: str = PHENOTYPING
) -> dict:
    """What a warm-up's result depends on: its settings, the seed and the stays with an image it
    trains on (the task's matched training split; `image_split` if already loaded) and, for a task
    other than phenotyping, the task (phenotyping's warm-ups of earlier versions keep matching)."""
    settings = warmup_settings(model_name, cfg)
    if settings is None:
        raise UserError(
            f"{model_name} has no image warm-up (not the DrFuse family, or train.cxr_warmup_epochs: 0): "
            "nothing to start after; train without --warm-start"
        )
    split = image_split if image_split is not None else load_split(results_dir, "train", "matched", task)
    own = {"warmup": settings, "seed": seed, "data": fingerprint(split)}
    return own if task == PHENOTYPING else {**own, "task": task}


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="microseconds")


def _task_meta(task: str) -> dict:
    """What best.pt's meta says of the task: nothing for phenotyping, so that the resume
    fingerprints of runs trained before there were tasks still match."""
    return {} if task == PHENOTYPING else {"task": task}


def train(
    model_name: str,
    train_set: str,
    seed: int,
    cfg: dict,
    results_dir: Path,
    out_dir: Path,
    on_epoch_end=None,
    warm_start: Path | None = None,
    task: str = PHENOTYPING,
) -> dict:
    """Train `model_name` on `train_set` (full/matched) of `task` with `seed`; returns the run summary.

    `on_epoch_end(epoch)` is a hook called after each epoch's files are written. `warm_start`: a
    `warm_up` result of this run's warm-up settings and seed to start after (else a UserError).
    """
    import torch

    from drfuse.models import build_model

    out_dir = Path(out_dir)
    train_cfg = cfg["train"]
    with locks.train_dir_lock(out_dir), _lease(train_cfg) as lease:
        started = _now()
        device = resolve_device(train_cfg)
        checkpoint.seed_everything(seed)
        model = build_model(model_name, cfg["model"], n_outputs(task))
        dataset = dataset_for(model, train_set)
        val_dataset = dataset if train_cfg["val_set"] == "same" else dataset_for(model, "full")
        train_split = load_split(results_dir, "train", dataset, task)
        val_split = load_split(results_dir, "val", val_dataset, task)
        cxr_drop = training_cxr_drop(model, dataset, train_cfg)
        settings = EngineSettings.from_cfg(cfg, device, cxr_drop)
        meta = {
            "model_name": model_name,
            "model_cfg": cfg["model"],
            "train_set": train_set,
            "dataset": dataset,
            "val_dataset": val_dataset,
            "seed": seed,
            # in best.pt: `predict` refuses a results folder of other data (another split, say)
            "data_fingerprint": data_fingerprint(results_dir, task),
            **_task_meta(task),
        }
        fp = {
            **meta,
            "train": {k: v for k, v in train_cfg.items() if k not in RESUMABLE_CHANGES},
            "data": [fingerprint(train_split), fingerprint(val_split)],
        }
        warm = None
        if warm_start is not None:
            image_split = train_split if dataset == "matched" else None
            warm = (Path(warm_start), _warmup_fingerprint(model_name, cfg, seed, results_dir, image_split, task))
        summary = fit(model, train_split, val_split, settings, out_dir, seed, meta, fp, on_epoch_end, warm)
        run = {
            **meta,
            "task": task,
            "warm_start": str(warm_start) if warm_start is not None else None,
            "results_dir": str(results_dir),
            "settings": cfg,
            "cxr_drop_applied": cxr_drop,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "n_train": len(train_split),
            "n_val": len(val_split),
            "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
            "gpu_lease": lease.gpu_id,
            "torch": torch.__version__,
            "python": platform.python_version(),
            **{k: v for k, v in summary.items() if k != "history"},
            "started": started,
            "finished": _now(),
        }
        atomic.write_text(out_dir / "run.json", json.dumps(run, indent=2, default=str))
    return run


def warm_up(seed: int, cfg: dict, results_dir: Path, out_dir: Path, task: str = PHENOTYPING) -> dict:
    """DrFuse's image warm-up alone into out_dir (last.pt, metrics.csv, then warmup.pt, a second name
    of last.pt, last: it means "finished"). `cfg`: DrFuse's resolved settings. The same steps as
    the first `train.cxr_warmup_epochs` epochs of `train("drfuse", ...)` of `task` on either
    training set, in the same order from the same seed; a killed warm-up resumes like a training run."""
    import dataclasses

    from drfuse.models import build_model

    if not cfg["train"]["cxr_warmup_epochs"]:
        raise UserError("train.cxr_warmup_epochs is 0: DrFuse has no image warm-up to run")
    out_dir = Path(out_dir)
    train_cfg = cfg["train"]
    with locks.train_dir_lock(out_dir), _lease(train_cfg):
        device = resolve_device(train_cfg)
        checkpoint.seed_everything(seed)
        model = build_model("drfuse", cfg["model"], n_outputs(task))
        image_split = load_split(results_dir, "train", "matched", task)
        fp = _warmup_fingerprint("drfuse", cfg, seed, results_dir, image_split, task)
        # the image branch alone, then nothing: no joint epoch, so no validation is ever run
        settings = dataclasses.replace(EngineSettings.from_cfg(cfg, device, 0.0), epochs=0)
        meta = {"model_name": "drfuse", "model_cfg": cfg["model"], "seed": seed, "warmup": True, **_task_meta(task)}
        summary = fit(
            model, image_split, load_split(results_dir, "val", "matched", task), settings, out_dir, seed, meta, fp
        )
        checkpoint.link_atomic(out_dir / LAST, out_dir / WARMUP)
    return summary


def stored_model_cfg(meta: dict) -> dict:
    """The `model:` settings a checkpoint's `meta` records, with `OLD_RUN_MODEL_SETTINGS` for those
    an older checkpoint predates."""
    return {**OLD_RUN_MODEL_SETTINGS, **meta["model_cfg"]}


def _check_trained_on(run_dir: Path, meta: dict, results_dir: Path, task: str) -> None:
    """The run was trained on the data `results_dir` holds (its recorded `data_fingerprint`), so
    that no test stay was one of its training stays; a UserError naming both folders if not."""
    recorded = meta.get("data_fingerprint")
    if recorded is None:  # a best.pt from before fingerprints were recorded
        log.warning(
            "%s records no fingerprint of its data: cannot check it was trained on %s", run_dir / BEST, results_dir
        )
        return
    current = data_fingerprint(results_dir, task)
    differ = [part for part in recorded if recorded[part] != current.get(part)]
    if differ:
        try:
            origin = json.loads((run_dir / "run.json").read_text())["results_dir"]
        except (OSError, ValueError, KeyError):
            origin = "see its run.json"
        raise UserError(
            f"{run_dir} was trained on other data than results folder {results_dir} holds ({' and '.join(differ)} "
            f"differ{'s' if len(differ) == 1 else ''}; it was trained on {origin}): predict with the results folder it "
            "was trained on, or train it again"
        )


def predict(
    run_dir: Path, test_set: str, cfg: dict, results_dir: Path, out_path: Path, split: str = "test"
) -> pl.DataFrame:
    """Predict the test split of `test_set` (the full or matched dataset) with run_dir/best.pt; write
    out_path (+ .npz). `split="val"`: its validation split instead, for model and recipe decisions
    (benchmarks/model_diagnostics.py), which must never read the test split."""
    import torch

    from drfuse.models import build_model

    run_dir, out_path = Path(run_dir), Path(out_path)
    best_path = run_dir / BEST
    if not best_path.is_file():
        raise UserError(f"no best checkpoint {best_path}: train the run first (`drfuse train`)")
    with _lease(cfg["train"]):
        device = resolve_device(cfg["train"])
        state = checkpoint.load(best_path, remedy=f"delete the run folder {run_dir} and train it again")
        meta = json.loads(state["meta"])
        task = meta.get("task", PHENOTYPING)
        _check_trained_on(run_dir, meta, results_dir, task)
        model_cfg = stored_model_cfg(meta)
        model = build_model(meta["model_name"], model_cfg, n_outputs(task))
        model.load_state_dict(state["model"])
        if not model.uses_ehr and test_set != "matched":
            raise UserError(
                f"{meta['model_name']} uses no EHR: it is tested on the matched test set only, not {test_set!r} "
                "(config experiments)"
            )
        data = load_split(results_dir, split, dataset_for(model, test_set), task)
        # the architecture (and crop) comes from the checkpoint, the device settings from cfg
        settings = EngineSettings.from_cfg({"train": cfg["train"], "model": model_cfg}, device, 0.0)
        model.to(device)
        if settings.cuda and settings.channels_last:
            model.to(memory_format=torch.channels_last)
        out = predict_outputs(
            model, model, DeviceData(data, device, model.uses_cxr), settings, ("attention", *REPRESENTATIONS)
        )

    columns = {"stay_id": pl.Series(data.stay_id, dtype=pl.Int64), "has_cxr": pl.Series(data.has_cxr, dtype=pl.Boolean)}
    labels = task_labels(task)
    for c, label in enumerate(labels):
        columns[f"y:{label}"] = pl.Series(data.labels[:, c], dtype=pl.Int8)
    for c, label in enumerate(labels):
        columns[f"p:{label}"] = pl.Series(out["prob"][:, c], dtype=pl.Float32)
    if "attention" in out:
        for c, label in enumerate(labels):
            for j, token in enumerate(ATTENTION_TOKENS):
                columns[f"attn:{label}:{token}"] = pl.Series(out["attention"][:, c, j], dtype=pl.Float32)
    frame = pl.DataFrame(columns)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The .npz is written for every model (the workflow declares it): the four representations
    # where the model has them (DrFuse), else the stay ids only.
    reps = {key: out[key].astype(np.float32) for key in REPRESENTATIONS if key in out}
    for key in ("cxr_distinct", "cxr_shared"):
        if key in reps:
            reps[key][~data.has_cxr] = np.nan  # no image: no CXR representation
    with atomic.writing(out_path.with_suffix(".npz")) as tmp:  # np.savez keeps a name ending .npz
        np.savez(tmp, stay_id=data.stay_id, **reps)
    with atomic.writing(out_path) as tmp:
        frame.write_parquet(tmp)
    log.info("predicted %d %s %s stays with %s -> %s", frame.height, test_set, split, best_path, out_path)
    return frame
