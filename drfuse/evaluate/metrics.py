"""Exact weighted average precision and AUROC for many resamples at once.

A bootstrap resample of a test set is a vector of counts (how often each sample was drawn); with
those counts as sample weights, average precision (the paper's "PRAUC") and AUROC of the resample
equal scikit-learn's `average_precision_score` / `roc_auc_score` with `sample_weight=counts`. So
each label's scores are sorted ONCE over the original samples, and every resample is evaluated by
cumulative sums of its counts in that order, many resamples per numpy call.

Ties follow scikit-learn: samples with equal scores form one threshold (one point of the curve).
For thresholds g = 1..G in decreasing score order, with T_g / F_g the positive / negative weight at
or above the threshold (P = T_G, N = F_G):

    AP    = sum_g (T_g - T_{g-1}) / P * T_g / (T_g + F_g)            (step interpolation, as sklearn)
    AUROC = sum_g (F_g - F_{g-1}) * (T_g + T_{g-1}) / (2 P N)       (trapezoids, as sklearn)

Only thresholds that contain a positive change AP and only thresholds that contain a negative
change AUROC, so the sums run over those. A resample without positives has no AP or AUROC, one
without negatives has no AUROC: those values are NaN and the caller counts them.
"""

from __future__ import annotations

import numpy as np


class SortedLabel:
    """One label's sort of the original samples, reusable for any number of weight vectors."""

    def __init__(self, y_true: np.ndarray, y_score: np.ndarray):
        y_true = np.asarray(y_true)
        y_score = np.asarray(y_score, dtype=np.float64)
        if y_true.shape != y_score.shape or y_true.ndim != 1:
            raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must be equal 1-d shapes")
        order = np.argsort(-y_score, kind="stable")
        s = y_score[order]
        pos = y_true[order].astype(bool)
        # group id of each sorted sample: a new threshold starts wherever the score changes
        group = np.concatenate(([0], np.cumsum(s[1:] != s[:-1])))
        n_groups = int(group[-1]) + 1 if len(s) else 0
        # within-order positions of positives / negatives: cumulative sums run over these subsets
        self.pos_idx = order[pos]
        self.neg_idx = order[~pos]
        # number of positives / negatives in thresholds 0..g, with a leading 0 for "before the first"
        n_pos_in = np.bincount(group[pos], minlength=n_groups)
        n_neg_in = np.bincount(group[~pos], minlength=n_groups)
        pos_upto = np.concatenate(([0], np.cumsum(n_pos_in)))
        neg_upto = np.concatenate(([0], np.cumsum(n_neg_in)))
        g_pos = np.flatnonzero(n_pos_in)  # thresholds holding a positive (they move AP)
        g_neg = np.flatnonzero(n_neg_in)  # thresholds holding a negative (they move AUROC)
        # indices into the zero-prefixed cumulative sums: value at threshold g is cum[:, upto[g + 1]]
        self.ap_t, self.ap_t_prev, self.ap_f = pos_upto[g_pos + 1], pos_upto[g_pos], neg_upto[g_pos + 1]
        self.roc_f, self.roc_f_prev = neg_upto[g_neg + 1], neg_upto[g_neg]
        self.roc_t, self.roc_t_prev = pos_upto[g_neg + 1], pos_upto[g_neg]

    @staticmethod
    def _cumsum(weights: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Zero-prefixed cumulative weight of the samples `idx` (in sorted order), per resample."""
        cum = np.zeros((weights.shape[0], len(idx) + 1), dtype=weights.dtype)
        np.cumsum(np.take(weights, idx, axis=1), axis=1, out=cum[:, 1:])
        return cum

    def ap_auroc(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AP and AUROC for each row of `weights` (R x n, original sample order); NaN if undefined.

        Integer weights (resample counts) are summed as integers -- exact, and far less memory
        traffic than float64 -- and turned into floats only at the thresholds.
        """
        weights = np.atleast_2d(weights)
        if np.issubdtype(weights.dtype, np.integer):
            small = weights.shape[1] == 0 or int(weights.sum(axis=1).max()) < 2**31
            weights = weights.astype(np.int32 if small else np.int64, copy=False)
        else:
            weights = weights.astype(np.float64, copy=False)
        tcum = self._cumsum(weights, self.pos_idx)
        fcum = self._cumsum(weights, self.neg_idx)

        def at(cum, idx):
            return np.take(cum, idx, axis=1).astype(np.float64)

        p, n = at(tcum, [-1])[:, 0], at(fcum, [-1])[:, 0]

        t = at(tcum, self.ap_t)
        den = t + at(fcum, self.ap_f)
        # den == 0 implies t == 0 (nothing at or above this threshold): the term is 0, not 0/0
        precision = t / np.where(den > 0, den, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.einsum("rg,rg->r", t - at(tcum, self.ap_t_prev), precision) / p
            area = np.einsum(
                "rg,rg->r",
                at(fcum, self.roc_f) - at(fcum, self.roc_f_prev),
                at(tcum, self.roc_t) + at(tcum, self.roc_t_prev),
            )
            auroc = area / (2.0 * p * n)
        ap[p <= 0] = np.nan
        auroc[(p <= 0) | (n <= 0)] = np.nan
        return ap, auroc


def ap_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray | None = None) -> tuple:
    """AP and AUROC of one label; `weights` None (one unweighted value) or R x n (R values)."""
    y_score = np.asarray(y_score)
    w = np.ones((1, len(y_score)), dtype=np.int32) if weights is None else weights
    ap, auroc = SortedLabel(y_true, y_score).ap_auroc(w)
    return (float(ap[0]), float(auroc[0])) if weights is None else (ap, auroc)


def macro(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over labels (last axis) ignoring undefined (NaN) labels; also the number excluded."""
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    n_defined = defined.sum(axis=-1)
    total = np.where(defined, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_defined > 0, total / np.maximum(n_defined, 1), np.nan)
    return mean, values.shape[-1] - n_defined
