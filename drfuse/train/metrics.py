"""Validation metrics for early stopping: macro PRAUC and AUROC over the phenotype labels, and the
mean BCE (the loss a plateau scheduler watches).

A label with no positive in the validation set has no defined average precision (no negative:
no AUROC either); it is skipped and counted, so the macro mean is over the labels that have one.
"""

from __future__ import annotations

import math

import numpy as np

# The evaluation's exact AP / AUROC (equal to scikit-learn's), without importing scikit-learn.
from drfuse.evaluate.metrics import ap_auroc


def bce(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean binary cross-entropy over samples and labels (probabilities clipped away from 0 and 1)."""
    p = np.clip(y_prob.astype(np.float64), 1e-7, 1 - 1e-7)
    y = y_true.astype(np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def macro_scores(y_true: np.ndarray, y_prob: np.ndarray) -> dict:
    """{'prauc', 'auroc', 'prauc_skipped', 'auroc_skipped'} for (N, C) labels and probabilities."""
    praucs, aurocs = [], []
    for c in range(y_true.shape[1]):
        y, p = y_true[:, c], y_prob[:, c]
        positives = int(y.sum())
        if positives == 0:
            continue
        ap, auroc = ap_auroc(y, p)
        praucs.append(ap)
        if positives < len(y):
            aurocs.append(auroc)
    n = y_true.shape[1]
    return {
        "prauc": float(np.mean(praucs)) if praucs else math.nan,
        "auroc": float(np.mean(aurocs)) if aurocs else math.nan,
        "prauc_skipped": n - len(praucs),
        "auroc_skipped": n - len(aurocs),
    }
