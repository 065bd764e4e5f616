"""benchmarks/image_readability.py: a linear probe on the crops' pixels says which labels' image
evidence can be read at all, per answer-key group, and for an inconsistent label whether it tells
the positives shown in the image from those shown in the series."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
PROBE = runpy.run_path(str(ROOT / "benchmarks" / "image_readability.py"))

SIGNED, INCONSISTENT, UNSIGNED = "Conduction disorders", "Congestive heart failure; nonhypertensive", "Shock"


def crops_with_planted_signs(n: int = 240, side: int = 12, seed: int = 0):
    """Noisy crops: a bright corner for SIGNED's positives, a bright centre for INCONSISTENT's
    positives shown in the image; UNSIGNED's positives look like every other stay."""
    rng = np.random.default_rng(seed)
    labels = {name: rng.random(n) < 0.3 for name in (SIGNED, INCONSISTENT, UNSIGNED)}
    channel = np.where(labels[INCONSISTENT], np.where(rng.random(n) < 0.5, "cxr", "ehr"), "none")
    images = rng.normal(0.4, 0.1, (n, side, side)).astype(np.float32)
    images[labels[SIGNED], :3, :3] += 0.5
    images[channel == "cxr", 5:8, 5:8] += 0.5
    stays = pl.DataFrame({"stay_id": np.arange(n), **{k: v.astype(np.int8) for k, v in labels.items()}})
    channels = pl.DataFrame({"stay_id": np.arange(n), "label": [INCONSISTENT] * n, "channel": channel})
    return stays, images.reshape(n, -1), channels


def test_the_probe_reads_planted_signs_and_nothing_where_there_is_none():
    stays, pixels, channels = crops_with_planted_signs()
    groups = {SIGNED: "cxr", INCONSISTENT: "inconsistent", UNSIGNED: "both", "Essential hypertension": "ehr"}
    table = {row["label"]: row for row in PROBE["readability"](stays, pixels, groups, channels).iter_rows(named=True)}
    assert set(table) == {SIGNED, INCONSISTENT, UNSIGNED}  # the EHR-only group is not probed
    assert table[SIGNED]["probe_auroc"] > 0.9 and table[SIGNED]["channel_auroc"] is None
    # an inconsistent label's target is its positives shown in the image
    assert table[INCONSISTENT]["positives"] == int((channels["channel"] == "cxr").sum())
    assert table[INCONSISTENT]["probe_auroc"] > 0.9 and table[INCONSISTENT]["channel_auroc"] > 0.9
    assert 0.3 < table[UNSIGNED]["probe_auroc"] < 0.7


def test_a_label_with_too_few_positives_is_reported_not_probed():
    stays, pixels, channels = crops_with_planted_signs(n=40)
    stays = stays.with_columns(pl.lit(0, pl.Int8).alias(SIGNED))
    table = PROBE["readability"](stays, pixels, {SIGNED: "cxr"}, channels)
    assert table.row(0, named=True) == {
        "label": SIGNED,
        "group": "cxr",
        "positives": 0,
        "probe_auroc": None,
        "channel_auroc": None,
    }
