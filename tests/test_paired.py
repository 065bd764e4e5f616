"""Paired bootstrap differences and intervals pooled over seeds, on constructed predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from drfuse.errors import UserError
from drfuse.evaluate.bootstrap import evaluate, resample_counts
from drfuse.evaluate.paired import paired_table, render_paired
from drfuse.evaluate.pooling import paired_intervals, pooled_interval, resample_matrix
from drfuse.phenotypes import PHENOTYPES
from tests.test_metrics import fake_scores, fake_test_set, write_predictions

N_BOOT = 40


def cfg(seeds) -> dict:
    return {
        "experiments": {"seeds": list(seeds), "recipes": ["paper", "ours"]},
        "evaluation": {"n_bootstrap": N_BOOT, "seed": 0, "ci": 0.95},
    }


def run_evaluate(tmp_path: Path, paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    out, res = tmp_path / "eval" / "bootstrap.parquet", tmp_path / "eval" / "resamples.parquet"
    evaluate(paths, out, n_bootstrap=N_BOOT, seed=0, ci=0.95, resamples_path=res)
    return pd.read_parquet(out), pd.read_parquet(res)


def test_a_better_model_wins_with_an_interval_above_zero_and_a_copy_ties_exactly(tmp_path):
    stay_id, y = fake_test_set(300, seed=31)
    perm = np.random.default_rng(2).permutation(len(stay_id))
    strong = fake_scores(y, 1, decimals=None)
    weak = np.random.default_rng(3).random(y.shape).astype(np.float32)  # no signal at all
    paths = [
        write_predictions(tmp_path, "drfuse", "matched", 0, "matched", stay_id, y, strong),
        write_predictions(tmp_path, "transformer", "matched", 0, "matched", stay_id[perm], y[perm], weak[perm]),
        # the same predictions as DrFuse, in another row order
        write_predictions(tmp_path, "medfuse", "matched", 0, "matched", stay_id[perm], y[perm], strong[perm]),
    ]
    boot, resamples = run_evaluate(tmp_path, paths)
    paired = paired_table(boot, resamples, cfg([0])).set_index(["model", "seed"])
    worse = paired.loc[("Transformer", "0")]
    assert worse["difference"] > 0.2 and worse["ci_low"] > 0 and worse["ci_excludes_zero"]
    assert worse["difference"] == pytest.approx(worse["reference_prauc"] - worse["model_prauc"])
    assert set(paired["reference"]) == {"DrFuse (our recipe)"}
    copy = paired.loc[("MedFuse", "0")]
    assert (copy["difference"], copy["ci_low"], copy["ci_high"]) == (0.0, 0.0, 0.0)
    assert not copy["ci_excludes_zero"]
    # one seed: the pooled row is the seed's row
    pd.testing.assert_series_equal(paired.loc[("Transformer", "pooled")], worse, check_names=False)
    md = render_paired(paired.reset_index(), cfg([0]))
    assert "| matched | matched | DrFuse (our recipe) | Transformer |" in md and "yes" in md


def test_each_recipes_drfuse_is_a_reference_and_the_two_are_compared_once(tmp_path):
    stay_id, y = fake_test_set(200, seed=35)
    paths = [
        write_predictions(tmp_path, m, "matched", 0, "matched", stay_id, y, fake_scores(y, i, decimals=None))
        for i, m in enumerate(("drfuse_paper", "drfuse", "transformer"))
    ]
    boot, resamples = run_evaluate(tmp_path, paths)
    paired = paired_table(boot, resamples, cfg([0])).query("seed == 'pooled'")
    pairs = list(zip(paired["reference"], paired["model"]))
    assert pairs == [
        ("DrFuse (paper recipe)", "Transformer"),
        ("DrFuse (paper recipe)", "DrFuse (our recipe)"),
        ("DrFuse (our recipe)", "Transformer"),
    ]
    # only the recipes configured are references
    ours_only = paired_table(boot, resamples, {**cfg([0]), "experiments": {"seeds": [0], "recipes": ["ours"]}})
    assert set(ours_only["reference"]) == {"DrFuse (our recipe)"}


def test_both_members_of_a_pair_are_scored_on_the_same_resampled_stays(tmp_path):
    stay_id, y = fake_test_set(120, seed=32)
    perm = np.random.default_rng(4).permutation(len(stay_id))
    p_a, p_b = fake_scores(y, 5, decimals=None), fake_scores(y, 6, decimals=None)
    a = write_predictions(tmp_path, "drfuse", "full", 0, "full", stay_id, y, p_a)
    b = write_predictions(tmp_path, "mmtm", "full", 0, "full", stay_id[perm], y[perm], p_b[perm])
    _, resamples = run_evaluate(tmp_path, [a, b])
    assert resamples.groupby("model")["resample_key"].first().nunique() == 1

    # the differences recomputed by hand: the counts of each resample drawn for each file in its
    # own row order, both describing the same draw of stays
    counts_a = resample_counts(stay_id, 0, 0, N_BOOT)
    counts_b = resample_counts(stay_id[perm], 0, 0, N_BOOT)
    np.testing.assert_array_equal(counts_a[:, perm], counts_b)

    def macro_ap(yy, pp, counts):
        return np.array(
            [
                np.mean([average_precision_score(yy[:, k], pp[:, k], sample_weight=w) for k in range(len(PHENOTYPES))])
                for w in counts
            ]
        )

    by_hand = macro_ap(y, p_a, counts_a) - macro_ap(y[perm], p_b[perm], counts_b)
    ma, mb = (resample_matrix(resamples, m, "full", "full", [0]) for m in ("drfuse", "mmtm"))
    np.testing.assert_allclose(ma[0][0] - mb[0][0], by_hand, atol=1e-12)
    (per_seed,), pooled = paired_intervals(ma, mb, 0.95)
    assert per_seed[:2] == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])), abs=1e-12)
    assert pooled == per_seed


def test_intervals_pooled_over_seeds(tmp_path):
    stay_id, y = fake_test_set(150, seed=33)
    seeds = [0, 1, 2]
    paths = []
    for s in seeds:
        paths.append(
            write_predictions(
                tmp_path, "drfuse", "matched", s, "full", stay_id, y, fake_scores(y, 40 + s, decimals=None)
            )
        )
        paths.append(
            write_predictions(
                tmp_path, "transformer", "matched", s, "full", stay_id, y, fake_scores(y, 50 + s, decimals=2)
            )
        )
    boot, resamples = run_evaluate(tmp_path, paths)

    drfuse = resample_matrix(resamples, "drfuse", "matched", "full", seeds)[0]
    transformer = resample_matrix(resamples, "transformer", "matched", "full", seeds)[0]
    assert drfuse.shape == (3, N_BOOT) and not np.allclose(drfuse[0], drfuse[1])
    # pooled: the percentile interval of the per-resample mean over seeds
    low, high, used = pooled_interval(drfuse, 0.95)
    assert (low, high, used) == pytest.approx((*np.quantile(drfuse.mean(axis=0), [0.025, 0.975]), N_BOOT))
    # one seed: exactly that seed's own interval from bootstrap.parquet
    own = boot.query("model == 'drfuse' and seed == 1 and label == 'macro' and metric == 'prauc'").iloc[0]
    assert pooled_interval(drfuse[1:2], 0.95)[:2] == (own["ci_low"], own["ci_high"])

    paired = paired_table(boot, resamples, cfg(seeds)).set_index("seed")
    assert paired.index.tolist() == ["0", "1", "2", "pooled"]
    diffs = drfuse - transformer
    assert paired.loc["pooled", ["ci_low", "ci_high"]].tolist() == pytest.approx(
        list(np.quantile(diffs.mean(axis=0), [0.025, 0.975]))
    )
    assert paired.loc["2", "ci_low"] == pytest.approx(np.quantile(diffs[2], 0.025))
    assert paired.loc["pooled", "difference"] == pytest.approx(paired.loc[["0", "1", "2"], "difference"].mean())
    assert "per seed" in render_paired(paired.reset_index(), cfg(seeds))


def test_seeds_on_other_stays_cannot_be_pooled(tmp_path):
    stay_id, y = fake_test_set(100, seed=34)
    paths = [
        write_predictions(tmp_path, "drfuse", "matched", 0, "matched", stay_id, y, fake_scores(y, 1)),
        write_predictions(tmp_path, "drfuse", "matched", 1, "matched", stay_id[1:], y[1:], fake_scores(y[1:], 2)),
    ]
    _, resamples = run_evaluate(tmp_path, paths)
    with pytest.raises(UserError, match="different test stays"):
        resample_matrix(resamples, "drfuse", "matched", "matched", [0, 1])
    with pytest.raises(UserError, match="seed\\(s\\) \\[2\\]"):
        resample_matrix(resamples, "drfuse", "matched", "matched", [0, 2])
    one, other = (resample_matrix(resamples, "drfuse", "matched", "matched", [s]) for s in (0, 1))
    with pytest.raises(UserError, match="different resamples"):
        paired_intervals(one, other, 0.95)
