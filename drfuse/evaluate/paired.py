"""`tables/paired.{csv,md}`: DrFuse minus every other model's macro PRAUC, paired on the bootstrap.

For each recipe's DrFuse (`drfuse.experiments.drfuse_runs`: DrFuse under the paper's recipe, then
under ours) and each training set and test set on which it was trained and tested, every other
model with predictions there (baselines, uni-modal models, ablations, the other recipe's DrFuse
once) is compared with it on the same resamples (`drfuse.evaluate.pooling`: per seed, and pooled
over seeds). A 95 % interval (or evaluation.ci) that excludes 0 says the difference is more than
resampling noise of the test set; it says nothing about the variation between training runs,
which the per-seed rows show.

paired.csv: `train_set, test_set, reference, model, seed` (a seed, or `pooled`: the mean over seeds
with the pooled interval), `reference_prauc, model_prauc, difference, ci_low, ci_high,
n_resamples_used, ci_excludes_zero`. With one seed the pooled row repeats the seed's row.
`paired_table(..., metric="auroc")` compares AUROC instead (the mortality table's, whose columns
are then `reference_auroc`, `model_auroc`).
"""

from __future__ import annotations

import pandas as pd

from drfuse.evaluate.names import display_name, ordered_models
from drfuse.evaluate.pooling import paired_intervals, resample_matrix
from drfuse.evaluate.render import markdown
from drfuse.evaluate.tables import POOLED_NOTE, TEST_SETS, bootstrap_rows, fmt
from drfuse.experiments import drfuse_runs

POOLED = "pooled"
COLUMNS = [
    "train_set",
    "test_set",
    "reference",
    "model",
    "seed",
    "reference_prauc",
    "model_prauc",
    "difference",
    "ci_low",
    "ci_high",
    "n_resamples_used",
    "ci_excludes_zero",
]


def _compare(
    boot,
    resamples,
    reference: str,
    model: str,
    train_set: str,
    test_set: str,
    seeds: list[int],
    ci: float,
    metric: str = "prauc",
) -> list[dict]:
    ref_est = bootstrap_rows(boot, reference, train_set, test_set, seeds, "macro", metric).set_index("seed")["estimate"]
    est = bootstrap_rows(boot, model, train_set, test_set, seeds, "macro", metric).set_index("seed")["estimate"]
    per_seed, pooled = paired_intervals(
        resample_matrix(resamples, reference, train_set, test_set, seeds, metric),
        resample_matrix(resamples, model, train_set, test_set, seeds, metric),
        ci,
    )
    entries = [(str(s), ref_est[s], est[s], per_seed[i]) for i, s in enumerate(seeds)]
    entries.append((POOLED, ref_est[seeds].mean(), est[seeds].mean(), pooled))
    return [
        {
            "train_set": train_set,
            "test_set": test_set,
            "reference": display_name(reference),
            "model": display_name(model),
            "seed": seed,
            f"reference_{metric}": a,
            f"model_{metric}": b,
            "difference": a - b,
            "ci_low": low,
            "ci_high": high,
            "n_resamples_used": used,
            "ci_excludes_zero": bool(low > 0 or high < 0),
        }
        for seed, a, b, (low, high, used) in entries
    ]


def paired_table(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict, metric: str = "prauc") -> pd.DataFrame:
    """One row per (training set, test set, reference DrFuse, other model, seed or pooled)."""
    seeds, ci = list(cfg["experiments"]["seeds"]), float(cfg["evaluation"]["ci"])
    macro = boot[(boot["label"] == "macro") & (boot["metric"] == metric) & boot["seed"].isin(seeds)]
    rows = []
    for train_set in TEST_SETS:
        for test_set in TEST_SETS:
            here = set(macro[(macro["train_set"] == train_set) & (macro["test_set"] == test_set)]["model"])
            done: set[str] = set()
            for reference in [r for r in drfuse_runs(cfg) if r in here]:
                done.add(reference)
                for model in ordered_models(here - done):
                    rows += _compare(boot, resamples, reference, model, train_set, test_set, seeds, ci, metric)
    return pd.DataFrame(rows, columns=[c.replace("prauc", metric) for c in COLUMNS])


def _signed(x) -> str:
    return "-" if pd.isna(x) else f"{x:+.3f}"


def render_paired(paired: pd.DataFrame, cfg: dict) -> str:
    seeds = list(cfg["experiments"]["seeds"])
    ci = float(cfg["evaluation"]["ci"])
    header = [
        "Trained on",
        "Tested on",
        "DrFuse",
        "Model",
        "DrFuse PRAUC",
        "Model PRAUC",
        f"DrFuse - model ({ci:.0%} CI)",
        "excludes 0",
    ]
    if len(seeds) > 1:
        header.append("per seed")
    rows = []
    for (train_set, test_set, reference, model), group in paired.groupby(
        ["train_set", "test_set", "reference", "model"], sort=False
    ):
        pooled = group[group["seed"] == POOLED].iloc[0]
        row = [
            train_set,
            test_set,
            reference,
            model,
            fmt(pooled["reference_prauc"]),
            fmt(pooled["model_prauc"]),
            f"{_signed(pooled['difference'])} ({_signed(pooled['ci_low'])}, {_signed(pooled['ci_high'])})",
            "yes" if pooled["ci_excludes_zero"] else "no",
        ]
        if len(seeds) > 1:
            per_seed = group[group["seed"] != POOLED]
            row.append(
                ", ".join(
                    f"{r.seed}: {_signed(r.difference)}{'*' if r.ci_excludes_zero else ''}"
                    for r in per_seed.itertuples()
                )
            )
        rows.append(row)
    notes = [
        f"Paired bootstrap, seed(s) {', '.join(map(str, seeds))}: on each of {cfg['evaluation']['n_bootstrap']} "
        "resamples of the test set, DrFuse's macro PRAUC minus the model's, both on the same resampled stays; "
        f"the {ci:.0%} percentile interval of these differences."
        + (
            f" Several seeds: paired per seed, then pooled ({POOLED_NOTE}); per seed, * marks an interval "
            "that excludes 0."
            if len(seeds) > 1
            else ""
        )
    ]
    return markdown("DrFuse minus each model, macro PRAUC (paired bootstrap)", header, rows, notes)
