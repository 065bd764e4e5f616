"""Validation metrics for early stopping: macro PRAUC and AUROC over the phenotype labels.

A label with no positive in the validation set has no defined average precision (no negative:
no AUROC either); it is skipped and counted, so the macro mean is over the labels that have one.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def macro_scores(y_true: np.ndarray, y_prob: np.ndarray) -> dict:
    """{'prauc', 'auroc', 'prauc_skipped', 'auroc_skipped'} for (N, C) labels and probabilities."""
    praucs, aurocs = [], []
    for c in range(y_true.shape[1]):
        y, p = y_true[:, c], y_prob[:, c]
        positives = int(y.sum())
        if positives > 0:
            praucs.append(average_precision_score(y, p))
        if 0 < positives < len(y):
            aurocs.append(roc_auc_score(y, p))
    n = y_true.shape[1]
    return {
        "prauc": float(np.mean(praucs)) if praucs else math.nan,
        "auroc": float(np.mean(aurocs)) if aurocs else math.nan,
        "prauc_skipped": n - len(praucs),
        "auroc_skipped": n - len(aurocs),
    }
