"""`tables/recipe.{csv,md,tex}`: what our recipe adds to the paper's (`experiments.recipe_study`).

Each row is one comparison of two runs that differ in what the recipe changes, scored on the same
bootstrap resamples of a test set (`drfuse.evaluate.pooling`), macro PRAUC:
- the whole recipe: DrFuse under our recipe against DrFuse under the paper's;
- each change of config `recipe:` removed from ours (`drfuse` against `drfuse-<change>`) and added
  to the paper's (`drfuse_paper+<change>` against `drfuse_paper`), trained on
  `experiments.table4.train_set`;
- each fusion baseline of `experiments.recipe_study.baselines` with our recipe (the settings of it
  that the baseline reads: the image warm-up and the EHR encoder's lr) against its own, on Table 2's
  training sets.
`effect` is always the run with the change minus the run without it (positive: the change helps),
the mean over seeds; `ci_low`, `ci_high` its pooled paired interval; `effect_std` the standard
deviation across seeds of the per-seed effects (the variation between training runs, which the
interval does not contain).
"""

from __future__ import annotations

import pandas as pd

from drfuse.evaluate.names import display_name
from drfuse.evaluate.tables import TEST_SETS, _notes, _signed_ci, bootstrap_rows, fmt, paired_difference
from drfuse.experiments import RECIPE_VARIANT, study_runs

WHOLE, REMOVED, ADDED, BASELINES = (
    "whole recipe",
    "removed from our recipe",
    "added to the paper's recipe",
    "fusion baselines with our recipe",
)
COLUMNS = [
    "section",
    "change",
    "train_set",
    "test_set",
    "with_change",
    "without_change",
    "prauc_with",
    "prauc_without",
    "effect",
    "ci_low",
    "ci_high",
    "effect_std",
    "n_seeds",
]


def comparisons(cfg: dict) -> list[tuple[str, str, str, str, list[str]]]:
    """(section, change, run with the change, run without it, training sets) of every row."""
    exp = cfg["experiments"]
    variants, baselines = study_runs(cfg)
    ablation_set = [exp["table4"]["train_set"]]
    rows = [(WHOLE, "all changes", "drfuse", "drfuse_paper", ablation_set)] if variants else []
    for run in variants:
        variant = RECIPE_VARIANT.match(run)
        if variant["sign"] == "-":
            rows.append((REMOVED, variant["change"], "drfuse", run, ablation_set))
        else:
            rows.append((ADDED, variant["change"], run, "drfuse_paper", ablation_set))
    rows += [
        (
            BASELINES,
            display_name(b.removesuffix("_ours")),
            b,
            b.removesuffix("_ours"),
            list(exp["table2"]["train_sets"]),
        )
        for b in baselines
    ]
    return rows


def recipe_table(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    seeds, ci = list(cfg["experiments"]["seeds"]), float(cfg["evaluation"]["ci"])
    rows = []
    for section, change, with_run, without_run, train_sets in comparisons(cfg):
        for train_set in train_sets:
            for test_set in TEST_SETS:
                means = [
                    bootstrap_rows(boot, r, train_set, test_set, seeds, "macro")["estimate"].mean()
                    for r in (with_run, without_run)
                ]
                d = paired_difference(boot, resamples, with_run, without_run, train_set, test_set, seeds, ci)
                rows.append(
                    {
                        "section": section,
                        "change": change,
                        "train_set": train_set,
                        "test_set": test_set,
                        "with_change": display_name(with_run),
                        "without_change": display_name(without_run),
                        "prauc_with": means[0],
                        "prauc_without": means[1],
                        "effect": d["difference"],
                        "ci_low": d["ci_low"],
                        "ci_high": d["ci_high"],
                        "effect_std": d["difference_std"],
                        "n_seeds": len(seeds),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def render_recipe(table: pd.DataFrame, cfg: dict) -> tuple:
    header = [
        "Section",
        "Change",
        "Trained -> tested",
        "With",
        "Without",
        "PRAUC with",
        "PRAUC without",
        f"Effect ({float(cfg['evaluation']['ci']):.0%} CI)",
        "sd across seeds",
    ]
    rows = [
        [
            r.section,
            r.change,
            f"{r.train_set} -> {r.test_set}",
            r.with_change,
            r.without_change,
            fmt(r.prauc_with),
            fmt(r.prauc_without),
            _signed_ci(r.effect, r.ci_low, r.ci_high),
            fmt(r.effect_std),
        ]
        for r in table.itertuples()
    ]
    extra = (
        "Effect: macro PRAUC of the run with the change minus the run without it (mean over seeds), paired on the same "
        "bootstrap resamples of the test set; the interval covers the test set's resampling, the sd the variation "
        "between training runs. The changes: config `recipe:` (docs/deviations.md)."
    )
    runs = {r for _, _, a, b, _ in comparisons(cfg) for r in (a, b)}
    return "What our recipe adds (macro PRAUC)", header, rows, _notes(cfg, extra, sorted(runs))
