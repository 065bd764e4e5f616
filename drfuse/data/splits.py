"""Train / validation / test split by patient: no subject in two splits.

Subjects are sorted, then permuted with numpy's default_rng(seed), so the split depends only on
the set of subjects, the fractions and the seed (not on row order). The first round(f_train * n)
permuted subjects go to train, the next round(f_val * n) to val, the rest to test.
"""

from __future__ import annotations

import numpy as np

from drfuse.errors import UserError

SPLITS = ("train", "val", "test")


def check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise UserError(f"config split.fractions: expected three non-negative numbers summing to 1, got {fractions!r}")
    return values


def split_subjects(subject_ids, fractions, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique subject ids, their split names)."""
    train, val, _ = check_fractions(fractions)
    subjects = np.unique(np.asarray(subject_ids, dtype=np.int64))
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_train = round(train * len(subjects))
    n_val = round(val * len(subjects))
    names = np.empty(len(subjects), dtype=object)
    names[order[:n_train]] = "train"
    names[order[n_train : n_train + n_val]] = "val"
    names[order[n_train + n_val :]] = "test"
    return subjects, names
