"""How readable is each planted label's image evidence, whatever the CNN? A linear probe on pixels.

On data with an answer key, fits an L2 logistic regression on the raw pixels of the image cache's
centre crop (the crop the models see), 5-fold cross-validated over the training split's stays with
an image, and prints per label of the answer key's `cxr`, `both` and `inconsistent` groups:
- `probe AUROC`: the probe's AUROC for the label (for an inconsistent label: for its positives shown
  in the image against every other stay);
- `channel AUROC` (inconsistent labels): the same probe's AUROC between the positives shown in the
  image and those shown in the series, comparable with `tables/planted.md`'s channel AUROC.

A label the probe reads and a trained image model does not (planted.md, model_diagnostics.py) points
at the image model's training, not at the data: that is how the demo's augmentation was found to
stop the CNN from learning the shape signs (docs/model-diagnostics.md). Training split only: no
validation or test stay is read.

    python benchmarks/image_readability.py --results results [--answer-key K] [--crop 48]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from drfuse.errors import UserError
from drfuse.evaluate.inconsistency import channel_auroc
from drfuse.images.cache import ImageCache
from drfuse.synth.answer_key import DIR_NAME, GROUPS_FILE, read_channels, read_label_groups

PROBED_GROUPS = ("cxr", "both", "inconsistent")
FOLDS = 5
PROBE_C = 0.01  # inverse L2 strength: pixels are many and stays few


def centre_crops(results: Path, crop: int) -> tuple[pl.DataFrame, np.ndarray]:
    """(the training split's stays with a cached image, their centre crops as float rows in [0, 1])."""
    cache = ImageCache(results / "images")
    if crop > cache.size:
        raise UserError(f"--crop {crop} is larger than the cached image size {cache.size}")
    stays = pl.read_parquet(results / "cohort" / "stays.parquet").filter(
        (pl.col("split") == "train") & pl.col("has_cxr").fill_null(False)
    )
    rows = cache.rows_for(stays["dicom_id"].to_list())
    stays = stays.filter(pl.Series(rows >= 0))
    off = (cache.size - crop) // 2
    pixels = cache.array[rows[rows >= 0], off : off + crop, off : off + crop]
    return stays, pixels.reshape(len(stays), -1).astype(np.float32) / 255.0


def probe(pixels: np.ndarray, target: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities of `target` from a linear probe on `pixels`."""
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    model = LogisticRegression(C=PROBE_C, max_iter=2000)
    return cross_val_predict(model, pixels, target, cv=folds, method="predict_proba")[:, 1]


def readability(
    stays: pl.DataFrame, pixels: np.ndarray, groups: dict[str, str], channels: pl.DataFrame
) -> pl.DataFrame:
    """One row per probed label: group, positives, probe AUROC, channel AUROC (inconsistent labels)."""
    out = []
    stay_ids = stays["stay_id"].to_pandas()
    for label, group in groups.items():
        if group not in PROBED_GROUPS:
            continue
        positive = stays[label].to_numpy() == 1
        channel = None  # stay_id -> ehr / cxr / none, for an inconsistent label
        if group == "inconsistent":
            channel = channels.filter(pl.col("label") == label).to_pandas().set_index("stay_id")["channel"]
            target = positive & (stay_ids.map(channel) == "cxr").to_numpy()
        else:
            target = positive
        row = {
            "label": label,
            "group": group,
            "positives": int(target.sum()),
            "probe_auroc": None,
            "channel_auroc": None,
        }
        if target.sum() >= FOLDS and (~target).sum() >= FOLDS:  # else too few to cross-validate: reported, not probed
            p = probe(pixels, target)
            row["probe_auroc"] = roc_auc_score(target, p)
            if channel is not None:
                auroc = channel_auroc(stay_ids.to_frame(), p, channel)
                row["channel_auroc"] = None if np.isnan(auroc) else auroc
        out.append(row)
    return pl.DataFrame(
        out,
        schema={
            "label": pl.String,
            "group": pl.String,
            "positives": pl.Int64,
            "probe_auroc": pl.Float64,
            "channel_auroc": pl.Float64,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder with cohort and images")
    parser.add_argument(
        "--answer-key", type=Path, help=f"label_groups.csv (default: RESULTS/synth/{DIR_NAME}/{GROUPS_FILE})"
    )
    parser.add_argument(
        "--crop", type=int, default=48, help="centre crop side in pixels (model.image_size; the demo's 48)"
    )
    args = parser.parse_args(argv)
    key = args.answer_key or args.results / "synth" / DIR_NAME / GROUPS_FILE
    try:
        groups = read_label_groups(key)
        stays, pixels = centre_crops(args.results, args.crop)
        table = readability(stays, pixels, groups, read_channels(key, groups))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"linear probe on {len(stays)} training stays' {args.crop}-px centre crops, {FOLDS}-fold")
    for row in table.iter_rows(named=True):
        probe_text = "n/a (too few positives)" if row["probe_auroc"] is None else f"{row['probe_auroc']:.3f}"
        channel_text = "" if row["channel_auroc"] is None else f"  channel AUROC {row['channel_auroc']:.3f}"
        name = f"{row['group']:12s} {row['label'][:40]:40s}"
        print(f"{name} positives {row['positives']:4d}  probe AUROC {probe_text}{channel_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
