"""The exact vectorised bootstrap against scikit-learn, its seeding, and its undefined-label counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from drfuse.errors import UserError
from drfuse.evaluate.bootstrap import bootstrap_arrays, evaluate, parse_prediction_path, resample_counts
from drfuse.evaluate.metrics import SortedLabel, macro
from drfuse.phenotypes import PHENOTYPES

PAPER_PREVALENCE = pd.read_csv(Path(__file__).resolve().parents[1] / "drfuse/evaluate/paper/table3.csv")[
    "prevalence"
].to_numpy()


def fake_test_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled stay ids and labels with the paper's prevalences."""
    rng = np.random.default_rng(seed)
    stay_id = 30_000_000 + rng.choice(10 * n, size=n, replace=False)
    y = (rng.random((n, len(PHENOTYPES))) < PAPER_PREVALENCE).astype(np.int8)
    return stay_id, y


def fake_scores(y: np.ndarray, seed: int, decimals: int | None = 1) -> np.ndarray:
    """Informative probabilities; rounded to one decimal they are full of ties."""
    rng = np.random.default_rng(seed)
    p = np.clip(rng.normal(0.3 + 0.25 * y, 0.2), 0, 1).astype(np.float32)
    return np.round(p, decimals).astype(np.float32) if decimals is not None else p


def write_predictions(root: Path, model: str, train_set: str, seed: int, test_set: str, stay_id, y, p) -> Path:
    path = root / "predict" / model / train_set / f"seed{seed}" / f"{test_set}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {"stay_id": stay_id.astype(np.int64), "has_cxr": np.ones(len(stay_id), bool)}
    cols |= {f"y:{c}": y[:, k].astype(np.int8) for k, c in enumerate(PHENOTYPES)}
    cols |= {f"p:{c}": p[:, k].astype(np.float32) for k, c in enumerate(PHENOTYPES)}
    pd.DataFrame(cols).to_parquet(path, index=False)
    return path


def test_resample_metrics_equal_sklearn_with_ties():
    stay_id, y = fake_test_set(300, seed=1)
    p = fake_scores(y, seed=2).astype(np.float64)
    assert len(np.unique(p[:, 0])) <= 11  # one decimal: heavy ties
    arrays = bootstrap_arrays(stay_id, y, p, n_bootstrap=12, seed=5)
    counts = resample_counts(stay_id, 5, 0, 12)
    assert counts.sum(axis=1).tolist() == [300] * 12 and (counts == 0).any()  # real resamples, with zero weights
    checked = 0
    for r in range(12):
        for k in range(len(PHENOTYPES)):
            w = counts[r]
            if (w * y[:, k]).sum() == 0 or (w * (1 - y[:, k])).sum() == 0:
                continue
            assert arrays["boot_prauc"][r, k] == pytest.approx(
                average_precision_score(y[:, k], p[:, k], sample_weight=w), abs=1e-9
            )
            assert arrays["boot_auroc"][r, k] == pytest.approx(
                roc_auc_score(y[:, k], p[:, k], sample_weight=w), abs=1e-9
            )
            checked += 1
    assert checked > 250
    # point estimates: the metric on the test set itself
    for k in range(len(PHENOTYPES)):
        assert arrays["point_prauc"][k] == pytest.approx(average_precision_score(y[:, k], p[:, k]), abs=1e-9)
        assert arrays["point_auroc"][k] == pytest.approx(roc_auc_score(y[:, k], p[:, k]), abs=1e-9)


def test_weighted_metrics_with_float_weights_and_all_tied_scores():
    rng = np.random.default_rng(3)
    y = (rng.random(50) < 0.3).astype(int)
    s = np.full(50, 0.5)  # one threshold: AP = prevalence, AUROC = 0.5
    w = rng.random((3, 50))
    ap, auroc = SortedLabel(y, s).ap_auroc(w)
    for r in range(3):
        assert ap[r] == pytest.approx(average_precision_score(y, s, sample_weight=w[r]), abs=1e-12)
        assert auroc[r] == pytest.approx(0.5, abs=1e-12)


def test_resamples_are_seeded_shared_across_models_and_chunk_independent(tmp_path):
    stay_id, y = fake_test_set(200, seed=4)
    perm = np.random.default_rng(9).permutation(len(stay_id))
    a = write_predictions(tmp_path, "transformer", "matched", 0, "matched", stay_id, y, fake_scores(y, 10))
    # a second model: other scores, other row order, same stays
    b = write_predictions(tmp_path, "drfuse", "matched", 0, "matched", stay_id[perm], y[perm], fake_scores(y[perm], 11))

    counts = resample_counts(stay_id, 0, 0, 20)
    counts_b = resample_counts(stay_id[perm], 0, 0, 20)
    np.testing.assert_array_equal(counts[:, perm], counts_b)  # same draw for each stay
    np.testing.assert_array_equal(counts[5:9], resample_counts(stay_id, 0, 5, 9))
    assert not np.array_equal(counts, resample_counts(stay_id, 1, 0, 20))

    out1, out2, out3 = tmp_path / "e1.parquet", tmp_path / "e2.parquet", tmp_path / "e3.parquet"
    evaluate([a, b], out1, n_bootstrap=40, seed=0, ci=0.95)
    evaluate([a, b], out2, n_bootstrap=40, seed=0, ci=0.95)
    evaluate([a, b], out3, n_bootstrap=40, seed=1, ci=0.95)
    r1, r2, r3 = (pd.read_parquet(o) for o in (out1, out2, out3))
    pd.testing.assert_frame_equal(r1, r2)
    assert not np.allclose(r1["ci_low"], r3["ci_low"], equal_nan=True)
    np.testing.assert_array_equal(r1["estimate"], r3["estimate"])

    # the interval is the percentile interval of the resample values computed on the shared counts
    sel = r1[(r1["model"] == "drfuse") & (r1["label"] == "macro") & (r1["metric"] == "auroc")].iloc[0]
    yb, pb = y[perm], fake_scores(y[perm], 11).astype(np.float64)
    cb = resample_counts(stay_id[perm], 0, 0, 40)
    per_resample = [
        np.mean([roc_auc_score(yb[:, k], pb[:, k], sample_weight=cb[r]) for k in range(len(PHENOTYPES))])
        for r in range(40)
    ]
    assert sel["ci_low"] == pytest.approx(np.quantile(per_resample, 0.025), abs=1e-9)
    assert sel["ci_high"] == pytest.approx(np.quantile(per_resample, 0.975), abs=1e-9)


def test_label_without_positive_in_a_resample_is_excluded_and_counted(tmp_path):
    stay_id, y = fake_test_set(40, seed=6)
    y[:, 3] = 0
    y[7, 3] = 1  # one positive: absent from about a third of the resamples
    y[:, 5] = 0  # no positive at all: undefined everywhere
    p = fake_scores(y, 12)
    path = write_predictions(tmp_path, "medfuse", "full", 2, "full", stay_id, y, p)
    out = tmp_path / "eval" / "bootstrap.parquet"
    evaluate([path], out, n_bootstrap=60, seed=3, ci=0.9)
    res = pd.read_parquet(out).set_index(["label", "metric"])

    counts = resample_counts(stay_id, 3, 0, 60)
    no_positive = int((counts[:, 7] == 0).sum())
    assert 5 < no_positive < 55
    lab3, lab5 = PHENOTYPES[3], PHENOTYPES[5]
    assert res.loc[(lab3, "prauc"), "n_excluded"] == no_positive
    assert res.loc[(lab3, "prauc"), "n_resamples_used"] == 60 - no_positive
    assert res.loc[(lab5, "auroc"), "n_resamples_used"] == 0 and np.isnan(res.loc[(lab5, "auroc"), "estimate"])
    # macro: each resample averages the labels it defines; exclusions summed over labels
    excluded = sum(res.loc[(lab, "prauc"), "n_excluded"] for lab in PHENOTYPES)
    assert res.loc[("macro", "prauc"), "n_excluded"] == excluded >= no_positive + 60
    assert res.loc[("macro", "prauc"), "n_resamples_used"] == 60
    boot = bootstrap_arrays(stay_id, y, p.astype(np.float64), 60, 3)["boot_prauc"]
    assert np.isnan(boot[counts[:, 7] == 0, 3]).all()
    macro_vals = np.nanmean(boot, axis=1)
    assert res.loc[("macro", "prauc"), "ci_low"] == pytest.approx(np.quantile(macro_vals, 0.05), abs=1e-12)
    assert macro(np.array([[0.2, np.nan, 0.4]]))[1].tolist() == [1]

    meta = pd.read_parquet(out)
    assert set(meta["model"]) == {"medfuse"} and set(meta["train_set"]) == {"full"}
    assert set(meta["seed"]) == {2} and set(meta["test_set"]) == {"full"}
    assert len(meta) == 2 * (len(PHENOTYPES) + 1)
    assert not list(out.parent.glob(".*tmp"))


def test_bad_inputs_are_reported_with_the_file():
    with pytest.raises(UserError, match="predict/"):
        parse_prediction_path(Path("results/predict/drfuse/matched/matched.parquet"))
    assert parse_prediction_path(Path("r/predict/mmtm/full/seed3/matched.parquet")) == {
        "model": "mmtm",
        "train_set": "full",
        "seed": 3,
        "test_set": "matched",
    }
