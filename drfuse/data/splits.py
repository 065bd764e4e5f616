"""Train / validation / test split by patient: no subject in two splits (`split.method`).

- `random` (default): subjects are sorted, then permuted with numpy's default_rng(seed), so the
  split depends only on the set of subjects, the fractions and the seed (not on row order). The
  first round(f_train * n) permuted subjects go to train, the next round(f_val * n) to val, the
  rest to test.
- `medfuse`: MedFuse's fixed subject lists for MIMIC-IV v1.0 (`testset_iv.csv`, `valset_iv.csv`:
  `subject_id,flag` lines, flag 1 = in that split). Subjects flagged in neither list go to train
  (newer MIMIC-IV versions add subjects); listed subjects that the cohort lacks are counted.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np

from drfuse.errors import UserError

SPLITS = ("train", "val", "test")
METHODS = ("random", "medfuse")
RESOURCES = resources.files("drfuse.data") / "resources"
MEDFUSE_LISTS = {"test": "testset_iv.csv", "val": "valset_iv.csv"}


def check_settings(split_cfg: dict) -> str:
    """The split method, after checking the settings it uses."""
    method = split_cfg["method"]
    if method not in METHODS:
        raise UserError(f"config split.method: {method!r} is not one of {list(METHODS)}")
    if method == "random":
        check_fractions(split_cfg["fractions"])
    return method


def check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(0 < v < 1 for v in values) or abs(sum(values) - 1) > 1e-6:
        total = f" (they sum to {sum(values):g})" if len(values) == 3 else ""
        raise UserError(
            f"config split.fractions = {fractions!r}: expected the train, val and test shares, three numbers "
            f"each in (0, 1) summing to 1{total}"
        )
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


@cache
def medfuse_list(split: str) -> tuple[frozenset[int], frozenset[int]]:
    """(every subject of MedFuse's list for `split` ('test' or 'val'), those flagged 1)."""
    path = RESOURCES / MEDFUSE_LISTS[split]
    listed, flagged = set(), set()
    with path.open() as fh:
        for number, line in enumerate(fh, 1):
            fields = line.strip().split(",")
            if len(fields) != 2 or not fields[0].isdigit() or fields[1] not in ("0", "1"):
                raise UserError(f"{path}:{number}: expected 'subject_id,flag' with flag 0 or 1, got {line!r}")
            listed.add(int(fields[0]))
            if fields[1] == "1":
                flagged.add(int(fields[0]))
    return frozenset(listed), frozenset(flagged)


def split_subjects_medfuse(subject_ids) -> tuple[np.ndarray, np.ndarray, dict]:
    """(sorted unique subject ids, their split names, report): MedFuse's lists, the rest train."""
    subjects = np.unique(np.asarray(subject_ids, dtype=np.int64))
    (listed_test, test), (listed_val, val) = medfuse_list("test"), medfuse_list("val")
    names = np.full(len(subjects), "train", dtype=object)
    names[np.isin(subjects, list(val))] = "val"
    names[np.isin(subjects, list(test))] = "test"  # the shipped lists flag no subject twice
    present = set(subjects.tolist())
    report = {
        "lists": dict(MEDFUSE_LISTS),
        "listed_subjects": {"test": len(test), "val": len(val)},
        "listed_subjects_missing_from_cohort": {"test": len(test - present), "val": len(val - present)},
        "cohort_subjects_in_neither_list": len(present - listed_test - listed_val),
    }
    return subjects, names, report
