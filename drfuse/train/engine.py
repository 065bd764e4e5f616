"""The training loop shared by every model.

Adam, mini-batches in a random order, validation macro PRAUC after every epoch, early stopping
with patience, the best-validation weights kept in `best.pt` (used for testing) and a resume point
`last.pt`: a killed run that is started again continues from there and ends, on the CPU,
bit-identical to a run that was never interrupted (every random state is saved). Both are written
after an epoch once `train.checkpoint_interval_s` have passed since the last write (0: after every
epoch), and after the last epoch; the best weights wait in memory until then: a `last.pt` holds
the Adam state too, three times the model, too costly to write after every short epoch
(docs/performance.md).
Per epoch, `metrics.csv` gets a row (train loss and its parts, validation PRAUC / AUROC, seconds);
TensorBoard gets the same when it is installed.

Speed: the whole split (EHR tensor and the uint8 images) is moved to the device once; a batch is
an index gather on the device, image augmentation runs there too (`augment.prepare_images`), and on
CUDA the training step uses bf16 autocast, channels_last and optionally torch.compile
(`train.compile`: default, or reduce-overhead for CUDA graphs). No training step reads a value back
from the device: which rows have an image is known on the host (`make_batch`), and the loss and
its parts are summed on the device and read once per epoch, so the host queues steps ahead of the
GPU. On the CPU the same code runs in float32. All randomness of the data side (order, CXR drop,
augmentation) comes from one CPU generator, so it does not depend on the device. Predictions
(validation and test) are always computed in float32: under bf16 the heads' logits keep about 3
significant digits, and the ties that makes lower AP / AUROC by different amounts for different
models.


Static shapes: a compiled model should see one batch shape. When `train.compile` is on, a trailing
partial training batch is skipped and the last evaluation batch is padded (repeated rows, cut
off again). With `train.pad_images` on (auto: when compiling on CUDA) the CNN sees every row of
the batch, the rows without an image masked out of BatchNorm and zeroed
(`encoders.padded_image_batches`), instead of a different number of images each step.

When training on the matched dataset a random `cxr_drop` share of each mini-batch loses its CXR
for real: `has_cxr` is set False, so those samples take the model's missing-CXR path.

Image warm-up (`train.cxr_warmup_epochs`, models with a `warmup_loss`: the fusion models): the
first epochs train the image branch alone on the stays with an image (none dropped), with no
validation and no checkpoint selection; the joint training's `epochs` and `patience` follow. A
fused model otherwise learns to read the EHR side before its image side has learned anything
(docs/deviations.md, "Our recipe"). The EHR encoder of those models can also learn at a fraction of
`train.lr` (`train.ehr_lr_factor`, `param_groups`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from drfuse import atomic
from drfuse.errors import UserError
from drfuse.models.encoders import padded_image_batches
from drfuse.train import checkpoint
from drfuse.train.augment import AugmentSettings, prepare_images
from drfuse.train.data import SplitData
from drfuse.train.metrics import bce, macro_scores

log = logging.getLogger(__name__)

REPRESENTATIONS = ("ehr_distinct", "ehr_shared", "cxr_distinct", "cxr_shared")
BEST, LAST, METRICS = "best.pt", "last.pt", "metrics.csv"
# A second name (hard link) of best.pt: Snakemake deletes a job's outputs, best.pt among them,
# before re-running it, and a resumed run must still end with the best weights.
BEST_KEPT = ".best-for-resume.pt"


def resolve_device(train_cfg: dict) -> torch.device:
    """train.device auto|cpu|cuda -> a torch device; sets train.num_threads when > 0."""
    if train_cfg["num_threads"]:
        torch.set_num_threads(int(train_cfg["num_threads"]))
    if train_cfg["device"] == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if train_cfg["device"] == "cuda":
        raise UserError(
            "train.device is 'cuda' (set in the config, or this job was given a GPU by profiles/gpu or "
            f"profiles/slurm) but torch sees no usable CUDA device: {_no_cuda_reason()}; check nvidia-smi "
            "on this node, or set train.device: cpu"
        )
    log.warning("=" * 78)
    log.warning("train.device is 'auto' and no usable CUDA device (%s): TRAINING ON THE CPU", _no_cuda_reason())
    log.warning("set train.device: cpu to silence this, or cuda to fail instead (profiles/gpu, profiles/slurm do)")
    log.warning("=" * 78)
    return torch.device("cpu")


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU"
        + (f" among CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "")
        + " (no GPU on this node, or a driver older than this CUDA)"
    )


@dataclass
class EngineSettings:
    """Everything the loop needs, from the `train:` and `model:` settings of a configuration the
    schema has checked (drfuse.config): nothing here checks them again."""

    device: torch.device
    crop: int  # model.image_size: the centre crop fed to the CNN
    lr: float
    lr_multipliers: dict  # parameter-name prefix -> factor on lr
    weight_decay: float
    batch_size: int
    epochs: int
    patience: int
    checkpoint_interval_s: float  # least seconds between two writes of last.pt / best.pt
    cxr_drop: float  # 0 unless training a fusion model on the matched dataset
    cxr_warmup_epochs: int  # epochs of the image branch alone first (models with warmup_loss)
    ehr_lr_factor: float  # on the lr of the EHR encoder (models with `ehr_encoder_prefix`)
    adam_betas: tuple[float, float]
    lr_scheduler: str  # none | plateau (halve the lr after 10 epochs without a lower val loss)
    select_on: str  # validation macro metric for the best checkpoint and early stopping
    amp: bool
    channels_last: bool
    compile: str | None  # a torch.compile mode, None = eager
    pad_images: bool
    augment: AugmentSettings

    @classmethod
    def from_cfg(cls, cfg: dict, device: torch.device, cxr_drop: float) -> EngineSettings:
        t = cfg["train"]
        compile_mode = _compile_mode(t["compile"])
        pad = t["pad_images"]
        return cls(
            device=device,
            crop=int(cfg["model"]["image_size"]),
            lr=float(t["lr"]),
            lr_multipliers={str(k): float(v) for k, v in t["lr_multipliers"].items()},
            weight_decay=float(t["weight_decay"]),
            batch_size=int(t["batch_size"]),
            epochs=int(t["epochs"]),
            patience=int(t["patience"]),
            checkpoint_interval_s=float(t["checkpoint_interval_s"]),
            cxr_drop=float(cxr_drop),
            cxr_warmup_epochs=int(t["cxr_warmup_epochs"]),
            ehr_lr_factor=float(t["ehr_lr_factor"]),
            adam_betas=(float(t["adam_betas"][0]), float(t["adam_betas"][1])),
            lr_scheduler=t["lr_scheduler"],
            select_on=t["select_on"],
            amp=bool(t["amp"]),
            channels_last=bool(t["channels_last"]),
            compile=compile_mode,
            pad_images=(device.type == "cuda" and compile_mode is not None) if pad == "auto" else bool(pad),
            augment=AugmentSettings.from_cfg(t["augment"]),
        )

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def static_batches(self) -> bool:
        """Every batch the model sees has batch_size rows (see the module docstring)."""
        return self.compile is not None

    def autocast(self):
        """The training step's precision; predictions never use it."""
        if self.cuda and self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _compile_mode(value) -> str | None:
    """train.compile: false | true (= default) | default | reduce-overhead -> a mode or None."""
    return {False: None, True: "default"}.get(value, value)


def lr_factors(model, settings: EngineSettings) -> dict[str, float]:
    """Parameter-name prefix -> factor on `train.lr`: `train.lr_multipliers`, then, for a model that
    names its EHR encoder (`ehr_encoder_prefix`: the DrFuse family), `train.ehr_lr_factor` on it.
    A `lr_multipliers` prefix that also matches a parameter comes first, so it wins."""
    factors = dict(settings.lr_multipliers)
    prefix = getattr(model, "ehr_encoder_prefix", None)
    if prefix:
        factors.setdefault(prefix, settings.ehr_lr_factor)
    return factors


def param_groups(model, settings: EngineSettings) -> list[dict]:
    """The optimiser's parameter groups: `train.lr` times the factor of the first `lr_factors`
    prefix that a parameter's name starts with (1 when none does); each group keeps its factor as
    `lr_factor`. `train.lr_multipliers` applies to every model, so a prefix that names no parameter
    of this one is only logged (with the model's modules, to catch a misspelt one)."""
    factors = lr_factors(model, settings)
    groups: dict[float, list] = {}
    used = set()
    for name, param in model.named_parameters():
        prefix = next((p for p in factors if name.startswith(p)), None)
        used.add(prefix)
        groups.setdefault(factors.get(prefix, 1.0), []).append(param)
    unused = [p for p in settings.lr_multipliers if p not in used]
    if unused:
        tops = sorted({name.split(".")[0] for name, _ in model.named_parameters()})
        log.warning(
            "train.lr_multipliers: no parameter of %s starts with %s (its modules: %s)",
            type(model).__name__,
            ", ".join(unused),
            ", ".join(tops),
        )
    return [{"params": params, "lr": settings.lr * factor, "lr_factor": factor} for factor, params in groups.items()]


def build_optimizer(model, settings: EngineSettings, fused: bool | None = None) -> torch.optim.Adam:
    """Adam over `param_groups`. `fused` (default: on the CPU) runs one fused kernel per step,
    faster than PyTorch's default (foreach) Adam there (docs/performance.md, cpu_train_step)."""
    fused = not settings.cuda if fused is None else fused
    return torch.optim.Adam(
        param_groups(model, settings),
        lr=settings.lr,
        betas=settings.adam_betas,
        weight_decay=settings.weight_decay,
        fused=fused,
        foreach=None if fused else True,
    )


def _scheduler(optimizer, settings: EngineSettings):
    """MedFuse's ReduceLROnPlateau on the validation loss (factor 0.5, patience 10), or None."""
    if settings.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=10)
    return None


def compile_model(model, settings: EngineSettings):
    """The callable that runs the model's forward: torch.compile'd in the configured mode, or the
    model itself."""
    return torch.compile(model, mode=settings.compile) if settings.compile else model


def run_forward(forward, ehr, lengths, images, has_cxr, settings: EngineSettings) -> dict:
    """forward(...) with the image padding of the settings; a new CUDA-graph step when compiled
    with reduce-overhead (the previous step's outputs are then released)."""
    if settings.compile == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
    with padded_image_batches(settings.pad_images):
        return forward(ehr, lengths, images, has_cxr)


class DeviceData:
    """A split's arrays as tensors on the training device (moved once), and on the host which
    rows have an image and where (`host_has_cxr`, `host_image_rows`): a batch's rows with an image
    are then found without reading anything back from the device (`make_batch`)."""

    def __init__(self, split: SplitData, device: torch.device, with_images: bool):
        self.n = len(split)
        self.device = device
        self.ehr = torch.from_numpy(split.ehr).to(device)
        self.lengths = torch.from_numpy(split.lengths).to(device)
        self.labels = torch.from_numpy(split.labels).to(device=device, dtype=torch.float32)
        self.host_has_cxr = torch.from_numpy(split.has_cxr)
        self.host_image_rows = torch.from_numpy(split.image_rows)
        self.has_cxr = self.host_has_cxr.to(device)
        self.images = torch.from_numpy(split.images).to(device) if with_images else None


class Batch(NamedTuple):
    """A training or evaluation batch on the device (`make_batch`)."""

    ehr: torch.Tensor
    lengths: torch.Tensor
    images: torch.Tensor
    has_cxr: torch.Tensor
    labels: torch.Tensor
    paired: torch.Tensor  # indices of the rows with an image, a count known on the host (`numel()`)


def make_batch(
    data: DeviceData,
    idx: torch.Tensor,
    settings: EngineSettings,
    train: bool,
    generator: torch.Generator | None,
    uses_cxr: bool,
) -> Batch:
    """The samples `idx` (a CPU tensor of rows), images prepared on the device.

    Which rows have an image (and which lose it to `cxr_drop`) is worked out on the host from
    `data.host_has_cxr`, so building a batch never waits for the device: a step that reads a value
    back (`nonzero`, `.item()`) stalls the host until the GPU has caught up, which is what CUDA
    graphs (`train.compile: reduce-overhead`) are meant to avoid."""
    idx = idx.cpu()  # a no-op for the CPU tensors the engine passes
    rows = idx.to(data.device)
    ehr = data.ehr.index_select(0, rows)
    lengths = data.lengths.index_select(0, rows)
    labels = data.labels.index_select(0, rows)
    has_cxr = data.host_has_cxr.index_select(0, idx)
    b = idx.numel()
    if train and settings.cxr_drop > 0:
        k = int(round(settings.cxr_drop * b))
        if k:
            dropped = torch.randperm(b, generator=generator)[:k]
            has_cxr = has_cxr.index_fill(0, dropped, False)
    host_paired = has_cxr.nonzero().squeeze(1)
    paired = host_paired.to(data.device)
    crop = settings.crop
    if uses_cxr and data.images is not None:
        images = ehr.new_zeros((b, 3, crop, crop))
        if host_paired.numel():
            image_rows = data.host_image_rows.index_select(0, idx.index_select(0, host_paired)).to(data.device)
            images.index_copy_(
                0,
                paired,
                prepare_images(data.images.index_select(0, image_rows), crop, train, generator, settings.augment),
            )
    else:
        # the model never looks at images: one zero image broadcast, no memory per sample
        images = ehr.new_zeros((1, 3, crop, crop)).expand(b, -1, -1, -1)
    if settings.cuda and settings.channels_last and images.stride(0) != 0:
        images = images.contiguous(memory_format=torch.channels_last)
    return Batch(ehr, lengths, images, has_cxr.to(data.device), labels, paired)


def train_step(model, forward, optimizer, batch: Batch, settings: EngineSettings, warmup: bool = False):
    """One optimiser step on a batch from `make_batch`: (loss tensor, loss parts, each a tensor on
    the device or a Python number). `warmup`: the image branch alone (`model.warmup_loss`, every
    row has an image); only the parameters that loss reaches change."""
    with settings.autocast():
        if warmup:
            loss, parts = model.warmup_loss(batch.images, batch.labels)
        else:
            outputs = run_forward(forward, batch.ehr, batch.lengths, batch.images, batch.has_cxr, settings)
            loss, parts = model.loss(outputs, batch.labels, batch.has_cxr, paired_rows=batch.paired)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, parts


def train_epoch(
    model, forward, optimizer, data: DeviceData, settings: EngineSettings, generator, desc: str, warmup: bool = False
):
    """One pass over the data in a random order: (mean loss, mean loss parts). `warmup`: over the
    stays with an image only, none of them dropped, the image branch alone (`train_step`).

    The loss and its parts are summed on the device and read once, at the end of the epoch; the
    parts in float64, as the Python floats they used to be read into after every step, so the
    epoch's means are the same to the last bit."""
    model.train()
    rows = data.host_has_cxr.nonzero().squeeze(1) if warmup else torch.arange(data.n)
    order = rows.index_select(0, torch.randperm(rows.numel(), generator=generator))
    if warmup:
        settings = dataclasses.replace(settings, cxr_drop=0.0)
    n = order.numel()
    starts = list(range(0, n, settings.batch_size))
    tail = n - starts[-1]
    if len(starts) > 1 and (tail == 1 or (settings.static_batches and tail < settings.batch_size)):
        # BatchNorm cannot train on a batch of one sample; a compiled model should see one shape
        starts.pop()
    loss_sum = torch.zeros((), device=data.device)
    parts_sum: dict = {}
    seen = 0
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=None):
        idx = order[start : start + settings.batch_size]
        batch = make_batch(data, idx, settings, True, generator, model.uses_cxr)
        loss, parts = train_step(model, forward, optimizer, batch, settings, warmup)
        b = idx.numel()
        loss_sum += loss.detach().float() * b
        for name, value in parts.items():
            term = value.detach().double() * b if torch.is_tensor(value) else float(value) * b
            parts_sum[name] = parts_sum.get(name, 0.0) + term
        seen += b
    return float(loss_sum) / seen, {name: float(total) / seen for name, total in parts_sum.items()}


@torch.no_grad()
def predict_outputs(model, forward, data: DeviceData, settings: EngineSettings, extra: tuple[str, ...] = ()) -> dict:
    """Eval-mode outputs over the data in order, in float32 (never under autocast): 'prob' (N, C)
    and the `extra` output keys present."""
    model.eval()
    chunks: dict[str, list] = {}
    b = settings.batch_size
    for start in range(0, data.n, b):
        stop = min(start + b, data.n)
        idx = torch.arange(start, stop)
        if settings.static_batches and data.n >= b and stop - start < b:
            idx = torch.cat([idx, idx[-1:].expand(b - (stop - start))])  # same shape as every batch
        batch = make_batch(data, idx, settings, False, None, model.uses_cxr)
        outputs = run_forward(forward, batch.ehr, batch.lengths, batch.images, batch.has_cxr, settings)
        rows = stop - start
        chunks.setdefault("prob", []).append(torch.sigmoid(outputs["logits"][:rows].float()).cpu())
        for key in extra:
            if key in outputs:
                chunks.setdefault(key, []).append(outputs[key][:rows].float().cpu())
    return {key: torch.cat(parts).numpy() for key, parts in chunks.items()}


def _tensorboard(out_dir: Path):
    """A TensorBoard writer into out_dir/tensorboard when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: metrics.csv holds the same numbers
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _write_metrics(path: Path, history: list[dict]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [c for c in row if c not in columns]
    with atomic.writing(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _restore(state: dict, model, optimizer, scheduler, generator) -> list[dict]:
    """Load a last.pt's model, optimiser, scheduler and random states; returns its history."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(state["rng"], generator)
    return json.loads(state["history"])


def _write_checkpoints(out_dir: Path, best_state: dict | None, last_state: dict) -> None:
    """best.pt (when a newer best is waiting), then last.pt: a run killed in between resumes from
    the older last.pt and replays, bit-identical, the epochs that made the newer best."""
    if best_state is not None:
        checkpoint.save_atomic(best_state, out_dir / BEST)
        checkpoint.link_atomic(out_dir / BEST, out_dir / BEST_KEPT)
    checkpoint.save_atomic(last_state, out_dir / LAST)


@dataclass
class _Progress:
    """Where a run stands after an epoch: what last.pt records and a resume restores."""

    history: list[dict] = field(default_factory=list)
    epoch: int = 0  # epochs done, the warm-up's included
    best: float = -math.inf  # the best validation score so far
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the best, for early stopping
    done: bool = False  # stopped early

    def resume_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "done": self.done,
            "history": json.dumps(self.history),
        }


def _fingerprint_json(fingerprint: dict) -> str:
    return json.dumps(fingerprint, sort_keys=True, default=str)


def _start(
    out_dir: Path,
    model,
    optimizer,
    scheduler,
    generator,
    settings: EngineSettings,
    fingerprint: dict,
    warm_start: tuple[Path, dict] | None,
) -> _Progress:
    """Where the run starts: its last.pt when written with the same fingerprint (a resume), else
    after the given image warm-up, else at epoch 0."""
    progress = _Progress()
    last_path = out_dir / LAST
    if last_path.exists():
        state = checkpoint.load(
            last_path, map_location=settings.device, remedy="delete it to train this run from epoch 1"
        )
        if state.get("fingerprint") == _fingerprint_json(fingerprint):
            progress = _Progress(
                _restore(state, model, optimizer, scheduler, generator),
                state["epoch"],
                state["best"],
                state["best_epoch"],
                state["bad_epochs"],
                state["done"],
            )
            log.info(
                "resuming %s after epoch %d (best %.4f at epoch %s)",
                out_dir,
                progress.epoch,
                progress.best,
                progress.best_epoch,
            )
            return progress
        log.warning("%s was written with other settings or data: training from scratch", last_path)
    if warm_start is None:
        return progress
    path, expected = warm_start
    state = checkpoint.load(path, map_location=settings.device, remedy="delete it and run `drfuse warmup` again")
    if state.get("fingerprint") != _fingerprint_json(expected):
        stored = json.loads(state.get("fingerprint") or "{}")
        expected = json.loads(json.dumps(expected, default=str))
        # the parts of drfuse.train.run's warm-up fingerprint: settings ("warmup"), seed, data
        differ = [{"warmup": "settings"}.get(part, part) for part in expected if stored.get(part) != expected[part]]
        raise UserError(
            f"{path} is the image warm-up of other settings, seed or data than this run's (differing: "
            f"{', '.join(differ)}): run `drfuse warmup` again with this run's settings and results folder, or "
            "train without --warm-start"
        )
    history = _restore(state, model, optimizer, scheduler, generator)
    log.info("starting after the image warm-up of %s (%d epochs)", path, state["epoch"])
    return _Progress(history, state["epoch"])


def _run_epoch(
    model,
    forward,
    optimizer,
    scheduler,
    train_data,
    val_data,
    val_labels,
    settings: EngineSettings,
    generator,
    epoch: int,
    in_warmup: bool,
) -> dict:
    """Train one epoch and, after the warm-up, validate it: the epoch's metrics.csv row."""
    t0 = time.perf_counter()
    train_loss, parts = train_epoch(
        model, forward, optimizer, train_data, settings, generator, f"epoch {epoch + 1}", warmup=in_warmup
    )
    if in_warmup:  # the image branch alone: the fused output is not trained yet, nothing to select
        val, val_loss = {"prauc": None, "auroc": None, "prauc_skipped": None}, None
    else:
        val_prob = predict_outputs(model, forward, val_data, settings)["prob"]
        val = macro_scores(val_labels, val_prob)
        val_loss = bce(val_labels, val_prob)
        if scheduler is not None:
            scheduler.step(val_loss)
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_prauc": val["prauc"],
        "val_auroc": val["auroc"],
        "lr": optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["lr_factor"],  # train.lr, as scheduled
        "seconds": round(time.perf_counter() - t0, 3),
        "val_labels_skipped": val["prauc_skipped"],
        **{f"train_loss:{name}": value for name, value in parts.items()},
    }


def _select(progress: _Progress, row: dict, model, settings: EngineSettings, meta: dict) -> dict | None:
    """Early stopping and model selection after a joint epoch: best.pt's contents when this epoch is
    the best so far (weights copied: they wait in memory until the next checkpoint write), else None."""
    score = row[f"val_{settings.select_on}"]
    score = -math.inf if math.isnan(score) else score
    if progress.best_epoch is not None and score <= progress.best:
        progress.bad_epochs += 1
        progress.done = progress.bad_epochs >= settings.patience
        return None
    progress.best, progress.best_epoch, progress.bad_epochs = score, row["epoch"], 0
    weights = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return {
        "model": weights,
        "epoch": row["epoch"],
        "selected_on": f"val_{settings.select_on}",
        "val_score": score,
        "meta": json.dumps(meta),
    }


def _log_epoch(bar, row: dict, in_warmup: bool, is_best: bool) -> None:
    if in_warmup:
        bar.set_postfix(warmup_loss=f"{row['train_loss']:.4f}")
        log.info("epoch %d: image warm-up, loss %.4f (%.1f s)", row["epoch"], row["train_loss"], row["seconds"])
        return
    bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_prauc=f"{row['val_prauc']:.4f}")
    log.info(
        "epoch %d: train loss %.4f, val PRAUC %.4f, AUROC %.4f (%.1f s)%s",
        row["epoch"],
        row["train_loss"],
        row["val_prauc"],
        row["val_auroc"],
        row["seconds"],
        " *" if is_best else "",
    )


def _board_row(board, row: dict) -> None:
    if board is None:
        return
    for key, value in row.items():
        if key != "epoch" and value is not None:
            board.add_scalar(key, value, row["epoch"])
    board.flush()


def fit(
    model,
    train_split: SplitData,
    val_split: SplitData,
    settings: EngineSettings,
    out_dir: Path,
    seed: int,
    meta: dict,
    fingerprint: dict,
    on_epoch_end=None,
    warm_start: tuple[Path, dict] | None = None,
) -> dict:
    """Train with early stopping into out_dir (best.pt, last.pt, metrics.csv); resume from last.pt.

    `meta` (JSON-able: model name and settings) goes into best.pt for `predict`; `fingerprint`
    (JSON-able) must equal the one in last.pt for a resume, else training starts afresh.
    `warm_start` (path, fingerprint): without a last.pt to resume from, start from that
    checkpoint of the image warm-up alone (`drfuse.train.run.warm_up`), whose fingerprint must be
    the one given, as from a resume point after the warm-up's epochs.
    `on_epoch_end(epoch)` is called after each epoch's files are written. Returns a summary.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale(out_dir)
    device = settings.device
    if settings.cuda:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device)
    if settings.cuda and settings.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = compile_model(model, settings)
    optimizer = build_optimizer(model, settings)
    scheduler = _scheduler(optimizer, settings)
    generator = torch.Generator().manual_seed(seed)
    train_data = DeviceData(train_split, device, model.uses_cxr)
    val_data = DeviceData(val_split, device, model.uses_cxr)
    progress = _start(out_dir, model, optimizer, scheduler, generator, settings, fingerprint, warm_start)

    board = _tensorboard(out_dir)
    last_write = time.monotonic()
    best_unwritten = None  # best.pt's contents, from an epoch after the last write
    warmup = settings.cxr_warmup_epochs if hasattr(model, "warmup_loss") else 0
    total = warmup + settings.epochs
    bar = tqdm(range(progress.epoch, total), desc="epochs", initial=progress.epoch, total=total, disable=None)
    for epoch in bar:
        if progress.done:
            break
        in_warmup = epoch < warmup
        row = _run_epoch(
            model,
            forward,
            optimizer,
            scheduler,
            train_data,
            val_data,
            val_split.labels,
            settings,
            generator,
            epoch,
            in_warmup,
        )
        progress.history.append(row)
        progress.epoch = epoch + 1
        if not in_warmup:
            best_unwritten = _select(progress, row, model, settings, meta) or best_unwritten
        if progress.done or progress.epoch == total or time.monotonic() - last_write >= settings.checkpoint_interval_s:
            _write_checkpoints(
                out_dir,
                best_unwritten,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    **progress.resume_state(),
                    "rng": checkpoint.rng_state(generator),
                    "fingerprint": _fingerprint_json(fingerprint),
                },
            )
            best_unwritten, last_write = None, time.monotonic()
        _write_metrics(out_dir / METRICS, progress.history)
        _board_row(board, row)
        _log_epoch(bar, row, in_warmup, progress.best_epoch == progress.epoch)
        if on_epoch_end is not None:
            on_epoch_end(progress.epoch)
    bar.close()
    if board is not None:
        board.close()
    if not (out_dir / BEST).exists() and (out_dir / BEST_KEPT).exists():
        checkpoint.link_atomic(out_dir / BEST_KEPT, out_dir / BEST)
    _write_metrics(out_dir / METRICS, progress.history)
    return {
        "best_epoch": progress.best_epoch,
        "selected_on": f"val_{settings.select_on}",
        "best_val_score": progress.best,
        "epochs_run": len(progress.history),
        "stopped_early": bool(progress.done),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if settings.cuda else None,
        "history": progress.history,
    }
