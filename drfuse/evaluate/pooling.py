"""Intervals over seeds and between models, taken over the same bootstrap resamples.

`eval/resamples.parquet` (written by `drfuse evaluate`) holds every resample's macro value per
prediction file. All files of one test set -- any model, any seed -- hold the same stays, so
resample r is the same draw of stays for all of them (`resample_key` says so; a mismatch is an
error). Two definitions follow, stated here once and quoted in the tables' notes:

- Pooled interval of a mean over seeds: for each resample r, the mean over seeds of the seeds'
  macro values on r; the interval is the percentile interval of these per-resample means. The
  estimate is the mean over seeds of each seed's estimate. With one seed it is that seed's own
  interval, unchanged.
- Paired difference A - B: for each seed and resample r, A's macro value on r minus B's on r. Per
  seed, the percentile interval of these differences; pooled over seeds, the percentile interval of
  their per-resample mean over seeds. The estimate is A's estimate minus B's (mean over seeds).

Percentile intervals use numpy's default (linear) quantiles, as the per-file intervals of
`drfuse.evaluate.bootstrap`; resamples in which no label is defined (NaN) are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from drfuse.errors import UserError
from drfuse.evaluate.bootstrap import select_run

RESAMPLES_FILE = Path("eval") / "resamples.parquet"


def load_resamples(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / RESAMPLES_FILE
    if not path.is_file():
        raise UserError(f"bootstrap resamples not found: {path} (run `drfuse evaluate` with --resamples)")
    return pd.read_parquet(path)


def resample_matrix(
    resamples: pd.DataFrame, model: str, train_set: str, test_set: str, seeds: list[int], metric: str = "prauc"
) -> tuple[np.ndarray, str]:
    """Macro values, seeds x resamples (rows in the order of `seeds`), and their resample key."""
    sel = select_run(resamples, "resamples.parquet", model, train_set, test_set, seeds, metric)
    keys = sel["resample_key"].unique()
    if len(keys) != 1:
        raise UserError(
            f"eval/resamples.parquet: the seeds of model={model} train_set={train_set} test_set={test_set} were "
            "evaluated on different test stays or evaluation seeds; re-run `drfuse evaluate` on one test set"
        )
    wide = sel.pivot(index="seed", columns="resample", values="value").reindex(seeds)
    return wide.to_numpy(np.float64), str(keys[0])


def percentile_interval(values: np.ndarray, ci: float) -> tuple[float, float, int]:
    """(low, high, resamples used) of the percentile interval, NaN resamples left out."""
    used = np.asarray(values, np.float64)
    used = used[~np.isnan(used)]
    if not len(used):
        return np.nan, np.nan, 0
    low, high = np.quantile(used, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    return float(low), float(high), len(used)


def pooled_interval(matrix: np.ndarray, ci: float) -> tuple[float, float, int]:
    """The percentile interval of the per-resample mean over seeds (rows of `matrix`)."""
    return percentile_interval(np.asarray(matrix, np.float64).mean(axis=0), ci)


def paired_intervals(a: tuple[np.ndarray, str], b: tuple[np.ndarray, str], ci: float) -> tuple[list, tuple]:
    """A - B on shared resamples: per-seed intervals [(low, high, used), ...] and the pooled one.

    `a` and `b` are `resample_matrix` results over the same seeds; their resample keys must match.
    """
    (ma, key_a), (mb, key_b) = a, b
    if key_a != key_b or ma.shape != mb.shape:
        raise UserError(
            "paired bootstrap: the two models were evaluated on different resamples "
            "(other test stays or evaluation seed); re-run `drfuse evaluate` on both"
        )
    diff = ma - mb
    return [percentile_interval(row, ci) for row in diff], pooled_interval(diff, ci)
