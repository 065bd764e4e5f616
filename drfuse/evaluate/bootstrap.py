"""Stage `evaluate`: bootstrap PRAUC and AUROC of every prediction file, per label and macro.

Resampling. A resample is drawn over the test set's stays in sorted stay_id order, from a seed
derived from (evaluation.seed, a digest of the sorted stay_ids, resample number). So every
prediction file of one test set -- whatever model made it, whatever its row order -- is evaluated
on exactly the same resamples, and a chunk of resamples can be regenerated alone (memory stays
bounded by the chunk size). A resample is used as a vector of counts (sample weights); the metrics
are exact (`drfuse.evaluate.metrics`).

Intervals. Percentile method: the (1 - ci) / 2 and (1 + ci) / 2 quantiles (numpy's default linear
interpolation) of the resample values of a metric; the point estimate is the metric on the test set
itself. A resample in which a label has no positive (AP, AUROC) or no negative (AUROC) leaves that
label out of the resample's macro mean; `n_excluded` counts such cases (label rows: resamples
without a value; macro rows: excluded (resample, label) pairs) and `n_resamples_used` says how many
resample values an interval rests on.

Output: one row per (prediction file, label or 'macro', metric in {prauc, auroc}). Beside it,
`resamples.parquet` keeps every resample's macro value per file (long: `model, train_set, seed,
test_set, resample_key, metric, resample, value`), so intervals of means over seeds and of paired
differences between models can be taken over the same resamples later (`drfuse.evaluate.pooling`).
`resample_key` names the resample indices: two files share them iff their keys are equal.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from drfuse import atomic
from drfuse.errors import UserError
from drfuse.evaluate.metrics import SortedLabel, macro
from drfuse.phenotypes import PHENOTYPES

log = logging.getLogger(__name__)

METRICS = ("prauc", "auroc")
MACRO = "macro"
# resamples per chunk are chosen so one R x n weight matrix stays near this many elements
CHUNK_ELEMENTS = 4_000_000
SEED_DIR = re.compile(r"^seed(\d+)$")


def parse_prediction_path(path: Path) -> dict:
    """model, train_set, seed, test_set of `.../predict/{model}/{train_set}/seed{n}/{test_set}.parquet`."""
    path = Path(path)
    parts = path.parts
    match = SEED_DIR.match(parts[-2]) if len(parts) >= 4 else None
    if match is None or path.suffix != ".parquet":
        raise UserError(
            f"prediction file {path}: expected a path like "
            f"predict/{{model}}/{{train_set}}/seed{{n}}/{{test_set}}.parquet"
        )
    return {"model": parts[-4], "train_set": parts[-3], "seed": int(match.group(1)), "test_set": path.stem}


def file_labels(columns) -> tuple[str, ...]:
    """The labels of a prediction file, in its column order (`y:<label>` columns): the 25
    phenotypes, or in_hospital_mortality (`drfuse.tasks`)."""
    return tuple(c[2:] for c in columns if c.startswith("y:"))


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """stay_id (n,), labels (n x L, int8) and probabilities (n x L, float64) of one prediction file,
    L its labels (`file_labels`: 25 for phenotyping, 1 for mortality)."""
    df = pd.read_parquet(path)
    labels = file_labels(df.columns)
    if not labels:
        raise UserError(
            f"prediction file {path}: no label columns (y:<label>); "
            f"expected {', '.join(f'y:{c}' for c in PHENOTYPES[:2])}, ..."
        )
    wanted = ["stay_id"] + [f"y:{c}" for c in labels] + [f"p:{c}" for c in labels]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise UserError(f"prediction file {path}: missing columns {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if len(df) == 0:
        raise UserError(f"prediction file {path}: no rows")
    stay_id = df["stay_id"].to_numpy(np.int64)
    if len(np.unique(stay_id)) != len(stay_id):
        raise UserError(f"prediction file {path}: duplicate stay_id values")
    y = df[[f"y:{c}" for c in labels]].to_numpy()
    p = df[[f"p:{c}" for c in labels]].to_numpy(np.float64)
    if not np.isin(y, (0, 1)).all():
        raise UserError(f"prediction file {path}: y: columns must hold 0/1")
    if not np.isfinite(p).all():
        raise UserError(f"prediction file {path}: p: columns hold NaN or infinite probabilities")
    return stay_id, y.astype(np.int8), p


def _stream_seed(stay_id: np.ndarray, seed: int) -> list[int]:
    """Seed words from the evaluation seed and the test set's sorted stay_ids."""
    digest = hashlib.sha256(np.sort(stay_id).astype("<i8").tobytes()).digest()
    return [int(seed), *np.frombuffer(digest[:16], dtype="<u4").tolist()]


def resample_key(stay_id: np.ndarray, seed: int) -> str:
    """Names the resample indices of a test set: equal keys, equal resamples."""
    return "-".join(f"{w:08x}" for w in _stream_seed(stay_id, seed))


def resample_counts(stay_id: np.ndarray, seed: int, start: int, stop: int) -> np.ndarray:
    """Counts (stop - start) x n of resamples start..stop-1, aligned to the given stay_id order.

    Resample r draws n indices with replacement over the sorted stay_ids, from its own seed
    (seed, digest of the stay_ids, r): the same for every file of a test set and any chunking.
    """
    stay_id = np.asarray(stay_id, dtype=np.int64)
    n = len(stay_id)
    words = _stream_seed(stay_id, seed)
    draws = np.stack([np.random.default_rng([*words, r]).integers(0, n, size=n) for r in range(start, stop)])
    rows = stop - start
    flat = draws + (np.arange(rows)[:, None] * n)
    counts_sorted = np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n)
    # column j of counts_sorted belongs to the j-th smallest stay_id; map back to the file's order
    rank = np.argsort(np.argsort(stay_id, kind="stable"), kind="stable")
    return counts_sorted[:, rank].astype(np.int32)


def bootstrap_arrays(
    stay_id: np.ndarray, y: np.ndarray, p: np.ndarray, n_bootstrap: int, seed: int, progress: bool = False
) -> dict[str, np.ndarray]:
    """Point values (L,) and resample values (n_bootstrap x L) of AP and AUROC for L labels."""
    n, n_labels = y.shape
    sorted_labels = [SortedLabel(y[:, k], p[:, k]) for k in range(n_labels)]
    ones = np.ones((1, n), dtype=np.int32)
    point = np.array([lab.ap_auroc(ones) for lab in sorted_labels])[:, :, 0]  # L x 2
    boot = {m: np.empty((n_bootstrap, n_labels)) for m in METRICS}
    chunk = max(1, CHUNK_ELEMENTS // n)
    starts = range(0, n_bootstrap, chunk)
    for start in tqdm(starts, desc="bootstrap", unit="chunk", disable=not progress or len(starts) < 2, leave=False):
        stop = min(start + chunk, n_bootstrap)
        counts = resample_counts(stay_id, seed, start, stop)
        for k, lab in enumerate(sorted_labels):
            boot["prauc"][start:stop, k], boot["auroc"][start:stop, k] = lab.ap_auroc(counts)
    return {"point_prauc": point[:, 0], "point_auroc": point[:, 1], **{f"boot_{m}": v for m, v in boot.items()}}


def summarise(arrays: dict[str, np.ndarray], labels: tuple[str, ...], ci: float) -> pd.DataFrame:
    """One row per (label or macro, metric): estimate, percentile interval, resamples used/excluded."""
    if not 0.0 < ci < 1.0:
        raise UserError(f"config evaluation.ci must lie strictly between 0 and 1, got {ci}")
    q = [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0]
    rows = []
    for metric in METRICS:
        point, boot = arrays[f"point_{metric}"], arrays[f"boot_{metric}"]
        n_boot = boot.shape[0]
        columns = [(lab, point[k], boot[:, k], int(np.isnan(boot[:, k]).sum())) for k, lab in enumerate(labels)]
        macro_point, _ = macro(point)
        macro_boot, excluded = macro(boot)
        columns.append((MACRO, float(macro_point), macro_boot, int(excluded.sum())))
        for label, est, values, n_excluded in columns:
            used = values[~np.isnan(values)]
            low, high = np.quantile(used, q) if len(used) else (np.nan, np.nan)
            rows.append(
                {
                    "label": label,
                    "metric": metric,
                    "estimate": float(est),
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "n_resamples_used": int(len(used)),
                    "n_excluded": n_excluded,
                    "n_bootstrap": n_boot,
                }
            )
    return pd.DataFrame(rows)


def select_run(
    frame: pd.DataFrame, name: str, model: str, train_set: str, test_set: str, seeds: list[int], metric: str
) -> pd.DataFrame:
    """The rows of bootstrap.parquet or resamples.parquet (`name`) of one run and metric, every
    seed in `seeds` present (else an error saying which to re-run)."""
    sel = frame[
        (frame["model"] == model)
        & (frame["train_set"] == train_set)
        & (frame["test_set"] == test_set)
        & (frame["metric"] == metric)
        & (frame["seed"].isin(seeds))
    ]
    missing = sorted(set(seeds) - set(sel["seed"]))
    if missing:
        raise UserError(
            f"eval/{name} has no {metric} results for model={model} train_set={train_set} "
            f"test_set={test_set} seed(s) {missing}: re-run `drfuse evaluate` with its predictions"
        )
    return sel


def write_parquet_atomic(df: pd.DataFrame, out_path: Path) -> None:
    """Write next to the target, then rename: a failed run leaves no half-written file."""
    with atomic.writing(out_path) as tmp:
        df.to_parquet(tmp, index=False)


def resample_values(arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """The macro value of every resample (NaN where no label is defined), long format."""
    frames = []
    for metric in METRICS:
        values, _ = macro(arrays[f"boot_{metric}"])
        frames.append(
            pd.DataFrame({"metric": metric, "resample": np.arange(len(values), dtype=np.int32), "value": values})
        )
    return pd.concat(frames, ignore_index=True)


def evaluate(
    prediction_paths: list[Path],
    out_path: Path,
    n_bootstrap: int,
    seed: int,
    ci: float,
    resamples_path: Path | None = None,
) -> None:
    """Bootstrap every prediction file and write all results to one parquet file; with
    `resamples_path`, also every resample's macro values (see the module docstring)."""
    if int(n_bootstrap) < 1:
        raise UserError(f"config evaluation.n_bootstrap must be >= 1, got {n_bootstrap}")
    if not prediction_paths:
        raise UserError("evaluate: no prediction files given")
    frames, resample_frames = [], []
    test_sets: dict[str, str] = {}
    for path in tqdm(prediction_paths, desc="evaluate", unit="file"):
        path = Path(path)
        meta = parse_prediction_path(path)
        if not path.exists():
            raise UserError(f"prediction file not found: {path}")
        stay_id, y, p = read_predictions(path)
        labels = file_labels(pq.read_schema(path).names)
        key = resample_key(stay_id, int(seed))
        test_sets.setdefault(f"{meta['test_set']} ({len(stay_id)} stays, key {key})", str(path))
        arrays = bootstrap_arrays(stay_id, y, p, int(n_bootstrap), int(seed), progress=True)
        summary = summarise(arrays, labels, float(ci))
        values = resample_values(arrays)
        values.insert(0, "resample_key", key)
        for name, value in reversed(meta.items()):
            summary.insert(0, name, value)
            values.insert(0, name, value)
        resample_frames.append(values)
        summary["n_stays"] = len(stay_id)
        summary["ci"] = float(ci)
        summary["path"] = str(path)
        frames.append(summary)
        macro_ap = summary.query("label == @MACRO and metric == 'prauc'")
        log.info("%s: macro PRAUC %.4f (%.4f, %.4f)", path, *macro_ap[["estimate", "ci_low", "ci_high"]].iloc[0])
    # files of one test set share resamples iff they hold the same stays: list the groups found
    log.info("resample groups (test set, stays, resample key): %s", ", ".join(sorted(test_sets)))
    write_parquet_atomic(pd.concat(frames, ignore_index=True), out_path)
    if resamples_path is not None:
        write_parquet_atomic(pd.concat(resample_frames, ignore_index=True), resamples_path)
