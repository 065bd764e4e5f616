"""One split of the cohort as in-memory arrays, ready to be moved to the training device once.

Reads `cohort/stays.parquet` (split, labels, CXR match), `features/ehr.npy` + `index.parquet`
(EHR matrix and sequence length per stay) and the image cache `images/` (via
`drfuse.images.cache`). A stay has a usable CXR iff `has_cxr` and its image is in the cache.

Datasets: `full` = every stay of the split; `matched` = the stays of the split with a usable CXR.
A model that uses no EHR (the uni-modal CNN) always gets `matched`.

Tasks (`drfuse.tasks`): `phenotyping` labels every cohort stay with the 25 phenotypes of
stays.parquet; `mortality` keeps the stays of `cohort/mortality.parquet` (the IHM cohort) with their
`in_hospital_mortality` label. Split, inputs and CXR match are the same for both.

Only the images of the selected stays are copied out of the memmap, into a compact array that
`image_rows` indexes (-1: no usable CXR), so the training set's images fit on the GPU as one
uint8 tensor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from drfuse.errors import UserError
from drfuse.images.cache import ImageCache, usable_cxr
from drfuse.phenotypes import PHENOTYPES
from drfuse.tasks import MORTALITY_FILE, PHENOTYPING
from drfuse.tasks import labels as task_labels

DATASETS = ("full", "matched")
SPLITS = ("train", "val", "test")


@dataclass
class SplitData:
    """Arrays of one split, row i = one stay."""

    stay_id: np.ndarray  # (N,) int64
    ehr: np.ndarray  # (N, T, F) float32
    lengths: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N, C) int8
    has_cxr: np.ndarray  # (N,) bool: usable CXR
    image_rows: np.ndarray  # (N,) int64 into `images`, -1 without usable CXR
    images: np.ndarray  # (M, S, S) uint8, the selected stays' images only

    def __len__(self) -> int:
        return len(self.stay_id)


def dataset_for(model, dataset: str) -> str:
    """The dataset a model really trains / tests on: CXR-only models only see matched stays."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return dataset if getattr(model, "uses_ehr", True) else "matched"


def _ehr_rows(results_dir: Path, stay_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ehr rows, lengths) of the given stays from features/{ehr.npy, index.parquet}."""
    index_path = results_dir / "features" / "index.parquet"
    ehr_path = results_dir / "features" / "ehr.npy"
    for path in (index_path, ehr_path):
        if not path.is_file():
            raise UserError(f"features file not found: {path} (run `drfuse features`)")
    index = pl.read_parquet(index_path, columns=["stay_id", "row", "length"])
    found = pl.DataFrame({"stay_id": stay_ids}).join(index, on="stay_id", how="left", maintain_order="left")
    missing = found["row"].null_count()
    if missing:
        raise UserError(f"{index_path}: {missing} cohort stay(s) have no EHR row (rebuild the features)")
    ehr = np.load(ehr_path, mmap_mode="r")
    rows = found["row"].to_numpy().astype(np.int64)
    if rows.size and rows.max() >= ehr.shape[0]:
        raise UserError(f"{index_path} points past the {ehr.shape[0]} rows of {ehr_path}")
    return np.ascontiguousarray(ehr[rows], dtype=np.float32), found["length"].to_numpy().astype(np.int64)


def _task_stays(results_dir: Path, stays: pl.DataFrame, task: str) -> pl.DataFrame:
    """The cohort stays of `task` with its label columns: stays.parquet's own for phenotyping,
    joined with cohort/mortality.parquet (the IHM cohort and label) for mortality."""
    if task == PHENOTYPING:
        return stays
    path = results_dir / MORTALITY_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: run the mortality cohort stage (`drfuse mortality-cohort`)")
    cohort = pl.read_parquet(path)
    missing = [c for c in ("stay_id", *task_labels(task)) if c not in cohort.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}: run `drfuse mortality-cohort` again")
    return stays.join(cohort.select("stay_id", *task_labels(task)), on="stay_id", how="inner")


def load_split(results_dir: Path, split: str, dataset: str, task: str = PHENOTYPING) -> SplitData:
    """The stays of `split` (train/val/test) in `dataset` (full/matched) of `task`'s cohort, sorted
    by stay_id; the labels are the task's (`drfuse.tasks.labels`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    results_dir = Path(results_dir)
    stays_path = results_dir / "cohort" / "stays.parquet"
    if not stays_path.is_file():
        raise UserError(f"cohort file not found: {stays_path} (run `drfuse cohort`)")
    stays = pl.read_parquet(stays_path).filter(pl.col("split") == split).sort("stay_id")
    missing = [c for c in ("stay_id", "has_cxr", "dicom_id", *PHENOTYPES) if c not in stays.columns]
    if missing:
        raise UserError(f"{stays_path} lacks column(s) {', '.join(missing)}")
    stays = _task_stays(results_dir, stays, task)
    images_dir = results_dir / "images"
    usable = usable_cxr(stays, images_dir)
    if dataset == "matched":
        stays, usable = stays.filter(pl.Series(usable)), usable[usable]
    if stays.height == 0:
        raise UserError(
            f"{stays_path}: no stays in the {split} split of the {dataset} dataset"
            + ("" if task == PHENOTYPING else f" of the {task} cohort ({results_dir / MORTALITY_FILE})")
        )

    stay_id = stays["stay_id"].to_numpy().astype(np.int64)
    ehr, lengths = _ehr_rows(results_dir, stay_id)
    cache = ImageCache(images_dir)
    cache_rows = cache.rows_for(stays["dicom_id"].to_list())
    # Copy out only the images used here; reading the memmap in row order keeps it sequential.
    used = np.unique(cache_rows[usable])
    images = np.ascontiguousarray(cache.array[used]) if used.size else np.zeros((0, cache.size, cache.size), np.uint8)
    image_rows = np.full(len(stay_id), -1, dtype=np.int64)
    image_rows[usable] = np.searchsorted(used, cache_rows[usable])
    labels = stays.select(task_labels(task)).to_numpy().astype(np.int8)
    return SplitData(stay_id, ehr, lengths, labels, usable, image_rows, images)


def fingerprint(split: SplitData) -> str:
    """A digest of a split's content, so a resumed run never continues on changed data."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (split.stay_id, split.labels, split.lengths, split.has_cxr, split.ehr):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(str(split.images.shape).encode())
    return h.hexdigest()


# `data_fingerprint`: files larger than this are digested by size and evenly spread blocks.
SAMPLE_BLOCKS, BLOCK_BYTES = 64, 1 << 16


def _columns_digest(frame: pl.DataFrame) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in frame.columns:
        column = frame[name]
        h.update(name.encode() + b"\0")
        if column.dtype == pl.String:
            h.update("\0".join("\1" if v is None else v for v in column.to_list()).encode())
        else:
            h.update(column.is_null().to_numpy().tobytes())
            h.update(np.ascontiguousarray(column.fill_null(0).to_numpy()).tobytes())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    """The whole file up to 4 MiB; a larger one (ehr.npy, the image cache: GBs on MIMIC) by its
    size and 64 blocks of 64 KiB spread evenly over it: a rebuilt file differs in nearly every
    block (new normalisation, other stays, another image size) at a few ms per check."""
    h = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as fh:
        if size <= SAMPLE_BLOCKS * BLOCK_BYTES:
            h.update(fh.read())
        else:
            for k in range(SAMPLE_BLOCKS):
                fh.seek(k * (size - BLOCK_BYTES) // (SAMPLE_BLOCKS - 1))
                h.update(fh.read(BLOCK_BYTES))
    return h.hexdigest()


def data_fingerprint(results_dir: Path, task: str = PHENOTYPING) -> dict[str, str]:
    """What a run was trained on, read from the results folder: `split` (each stay's split),
    `cohort` (the stays, labels and CXR matches), `features` (EHR matrix and its index), `images`
    (the cache and its index), and for the mortality task `mortality` (its cohort and labels).
    Recorded in best.pt and run.json; `predict` compares it with the folder it is given, so a run
    is never tested on stays it was trained on."""
    results_dir = Path(results_dir)
    stays_path = results_dir / "cohort" / "stays.parquet"
    if not stays_path.is_file():
        raise UserError(f"cohort file not found: {stays_path} (run `drfuse cohort`)")
    stays = pl.read_parquet(stays_path).sort("stay_id")
    features, images = results_dir / "features", results_dir / "images"
    for path in (features / "index.parquet", features / "ehr.npy", images / "index.parquet", images / "cxr.u8"):
        if not path.is_file():
            raise UserError(f"{path} not found: run the stage that writes it")
    parts = {
        "split": _columns_digest(stays.select("stay_id", "split")),
        "cohort": _columns_digest(stays.select("stay_id", "has_cxr", "dicom_id", *PHENOTYPES)),
        "features": "+".join(_file_digest(features / name) for name in ("index.parquet", "ehr.npy")),
        "images": "+".join(_file_digest(images / name) for name in ("index.parquet", "cxr.u8")),
    }
    if task != PHENOTYPING:
        path = results_dir / MORTALITY_FILE
        if not path.is_file():
            raise UserError(f"{path} not found: run the mortality cohort stage (`drfuse mortality-cohort`)")
        parts[task] = _columns_digest(pl.read_parquet(path).sort("stay_id").select("stay_id", *task_labels(task)))
    return parts
