"""`tables/mortality.{csv,md,tex}` and `tables/mortality_paired.{csv,md}`: in-hospital mortality.

Every run of `experiments.mortality` (the mortality task's models, the DrFuse family under each
recipe of `experiments.recipes`) on each training and test set, scored from
`mortality/eval/bootstrap.parquet` and `resamples.parquet` exactly as Table 2 is: AUROC and
AUPRC (the one label's average precision) with their bootstrap intervals, the mean over seeds with
the pooled interval (`drfuse.evaluate.pooling`) and the standard deviation across seeds.
MedFuse's published numbers stand beside our MedFuse (`paper/mortality_medfuse.csv`, sources in
its `source` column and the table's note).

mortality.csv: `model, train_set, test_set, auroc, auroc_ci_low, auroc_ci_high, auroc_std, auprc,
auprc_ci_low, auprc_ci_high, auprc_std, n_seeds, n_stays, deaths`.
mortality_paired.csv: DrFuse under each recipe minus every other run, per metric, as
`tables/paired.csv` (`drfuse.evaluate.paired`): `metric, train_set, test_set, reference, model,
seed, reference_value, model_value, difference, ci_low, ci_high, n_resamples_used,
ci_excludes_zero`.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from drfuse import atomic
from drfuse.config import data_source
from drfuse.errors import UserError
from drfuse.evaluate.names import display_name, ordered_models
from drfuse.evaluate.paired import POOLED, paired_table
from drfuse.evaluate.pooling import pooled_interval, resample_matrix
from drfuse.evaluate.render import csv_text, markdown, write_table
from drfuse.evaluate.tables import POOLED_NOTE, RECIPE_NOTE, TEST_SETS, _ci, bootstrap_rows, fmt, selection_note
from drfuse.experiments import mortality_runs, test_sets_for
from drfuse.tasks import MORTALITY, MORTALITY_FILE, task_dir

log = logging.getLogger(__name__)

PAPER_FILE = resources.files("drfuse.evaluate") / "paper" / "mortality_medfuse.csv"
# our metric names (drfuse.evaluate.bootstrap) -> the names of the mortality literature
METRICS = {"auroc": "AUROC", "prauc": "AUPRC"}
COLUMNS = (
    ["model", "train_set", "test_set"]
    + [f"{name.lower()}{part}" for name in METRICS.values() for part in ("", "_ci_low", "_ci_high", "_std")]
    + ["n_seeds", "n_stays", "deaths"]
)
PAPER_NOTE = (
    "MedFuse (paper): MedFuse (OPTIMAL), the configuration Hayat et al. report as best (MLHC 2022, PMLR 182:479-503), "
    "in-hospital mortality on MIMIC-IV v1.0 + MIMIC-CXR-JPG: AUROC / AUPRC 0.865 / 0.594 on the paired test set "
    "(their Table 2) and 0.874 / 0.567 on the partially paired test set (their Table 3), beside our MedFuse trained on "
    "the full set and tested on the matched / full set; quoted from PyHealth's examples/mimic4_mortality_medfuse.py "
    "(sunlabuiuc/PyHealth 17338b4), the paper's tables themselves were not read here, so which training set OPTIMAL "
    "used and the intervals are not given; MedFuse's other rows are not shown (no source we could read). Their images "
    "came from the whole ICU stay (docs/deviations.md), ours from the first 48 h."
)


def paper_mortality() -> pd.DataFrame:
    with PAPER_FILE.open() as fh:
        return pd.read_csv(fh)


def load_eval(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The mortality task's bootstrap.parquet and resamples.parquet."""
    folder = task_dir(results_dir, MORTALITY) / "eval"
    paths = [folder / "bootstrap.parquet", folder / "resamples.parquet"]
    for path in paths:
        if not path.is_file():
            raise UserError(
                f"mortality bootstrap results not found: {path} (run `drfuse evaluate` on mortality/predict/)"
            )
    return pd.read_parquet(paths[0]), pd.read_parquet(paths[1])


def table_runs(cfg: dict) -> list[tuple[str, str, str]]:
    """(run, train_set, test_set) of the table's rows, in the tables' model order."""
    runs = {(run, train_set) for run, train_set, _ in mortality_runs(cfg)}
    return [
        (run, train_set, test_set)
        for run in ordered_models(r for r, _ in runs)
        for train_set in TEST_SETS
        if (run, train_set) in runs
        for test_set in test_sets_for(run)[::-1]  # matched first, as Table 2
    ]


def _test_sets(results_dir: Path) -> dict[str, tuple[int, int]]:
    """Test set -> (stays, deaths) of the mortality cohort's test split."""
    from drfuse.images.cache import usable_cxr

    stays = pd.read_parquet(Path(results_dir) / "cohort" / "stays.parquet")
    cohort = pd.read_parquet(Path(results_dir) / MORTALITY_FILE)
    stays = stays.assign(usable=usable_cxr(stays, Path(results_dir) / "images"))
    test = cohort.merge(stays[stays["split"] == "test"][["stay_id", "usable"]], on="stay_id")
    label = cohort.columns[1]
    return {
        "full": (len(test), int(test[label].sum())),
        "matched": (int(test["usable"].sum()), int(test.loc[test["usable"], label].sum())),
    }


def mortality_table(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict, test_sets: dict) -> pd.DataFrame:
    seeds, ci = list(cfg["experiments"]["seeds"]), float(cfg["evaluation"]["ci"])
    rows = []
    for run, train_set, test_set in table_runs(cfg):
        row = {"model": display_name(run), "train_set": train_set, "test_set": test_set}
        for metric, name in METRICS.items():
            est = bootstrap_rows(boot, run, train_set, test_set, seeds, "macro", metric)["estimate"].to_numpy(float)
            low, high, _ = pooled_interval(resample_matrix(resamples, run, train_set, test_set, seeds, metric)[0], ci)
            key = name.lower()
            row |= {
                key: est.mean(),
                f"{key}_ci_low": low,
                f"{key}_ci_high": high,
                f"{key}_std": est.std(ddof=1) if len(est) > 1 else np.nan,
            }
        row |= {"n_seeds": len(seeds), "n_stays": test_sets[test_set][0], "deaths": test_sets[test_set][1]}
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def render_mortality(table: pd.DataFrame, cfg: dict, test_sets: dict) -> tuple:
    """Ours beside MedFuse's published numbers (`paper/mortality_medfuse.csv`: rows of our run
    name, training set and test set)."""
    paper = paper_mortality().set_index(["model", "train_set", "test_set"])
    header = [
        "Model",
        "Trained on",
        "Tested on",
        "AUROC (95% CI) ours",
        "AUPRC (95% CI) ours",
        "AUROC MedFuse paper",
        "AUPRC MedFuse paper",
    ]
    rows = []
    for (run, train_set, test_set), r in zip(table_runs(cfg), table.itertuples()):
        theirs = paper.loc[(run, train_set, test_set)] if (run, train_set, test_set) in paper.index else None
        rows.append(
            [
                r.model,
                r.train_set,
                r.test_set,
                _ci(r.auroc, r.auroc_ci_low, r.auroc_ci_high, r.auroc_std),
                _ci(r.auprc, r.auprc_ci_low, r.auprc_ci_high, r.auprc_std),
                "-" if theirs is None else fmt(theirs["auroc"]),
                "-" if theirs is None else fmt(theirs["auprc"]),
            ]
        )
    return "In-hospital mortality: AUROC and AUPRC", header, rows, [_note(cfg, test_sets)]


def _note(cfg: dict, test_sets: dict) -> str:
    """The data, cohort, seeds and bootstrap, the validation metric of each run, MedFuse's numbers."""
    seeds, ev, hours = cfg["experiments"]["seeds"], cfg["evaluation"], cfg["cohort"]["hours"]
    return (
        f"Ours: {data_source(cfg)}; seed(s) {', '.join(map(str, seeds))}"
        + (f" (mean ± std across seeds; {POOLED_NOTE})" if len(seeds) > 1 else "")
        + f"; {ev['n_bootstrap']} bootstrap resamples, {ev['ci']:.0%} percentile intervals. "
        f"In-hospital mortality of the cohort's ICU stays of at least {hours:g} h (MedFuse's task), "
        f"from the first {hours:g} h of the 17 variables and the latest AP chest X-ray of the same window; test sets: "
        + ", ".join(f"{name} {n:,} stays ({d:,} deaths)" for name, (n, d) in test_sets.items())
        + f". AUPRC: average precision. {selection_note([run for run, _, _ in table_runs(cfg)], cfg)} "
        f"{RECIPE_NOTE} {PAPER_NOTE}"
    )


def paired_mortality(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """DrFuse (each recipe) minus every other run, AUROC and AUPRC, paired on the same resamples."""
    frames = []
    for metric, name in METRICS.items():
        part = paired_table(boot, resamples, cfg, metric)
        part = part.rename(columns={f"reference_{metric}": "reference_value", f"model_{metric}": "model_value"})
        part.insert(0, "metric", name)
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def render_paired_mortality(paired: pd.DataFrame, cfg: dict) -> str:
    ci = float(cfg["evaluation"]["ci"])
    header = [
        "Metric",
        "Trained on",
        "Tested on",
        "DrFuse",
        "Model",
        "DrFuse's value",
        "Model's value",
        f"DrFuse - model ({ci:.0%} CI)",
        "excludes 0",
    ]
    pooled = paired[paired["seed"] == POOLED]
    rows = [
        [
            r.metric,
            r.train_set,
            r.test_set,
            r.reference,
            r.model,
            fmt(r.reference_value),
            fmt(r.model_value),
            f"{r.difference:+.3f} ({r.ci_low:+.3f}, {r.ci_high:+.3f})" if pd.notna(r.difference) else "-",
            "yes" if r.ci_excludes_zero else "no",
        ]
        for r in pooled.itertuples()
    ]
    notes = [
        f"Paired bootstrap of the mortality test sets, seed(s) {', '.join(map(str, cfg['experiments']['seeds']))}: on "
        f"each of {cfg['evaluation']['n_bootstrap']} resamples DrFuse's value minus the model's, both on the same "
        f"resampled stays; the {ci:.0%} percentile interval of these differences, pooled over seeds (per seed: "
        "mortality_paired.csv)."
    ]
    return markdown("In-hospital mortality: DrFuse minus each model (paired bootstrap)", header, rows, notes)


def build_mortality_tables(results_dir: Path, cfg: dict, out_dir: Path) -> None:
    """tables/mortality.{csv,md,tex} and mortality_paired.{csv,md} from mortality/eval/."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    boot, resamples = load_eval(results_dir)
    test_sets = _test_sets(results_dir)
    table = mortality_table(boot, resamples, cfg, test_sets)
    write_table(out_dir, "mortality", table, *render_mortality(table, cfg, test_sets))
    paired = paired_mortality(boot, resamples, cfg)
    atomic.write_text(out_dir / "mortality_paired.csv", csv_text(paired))
    atomic.write_text(out_dir / "mortality_paired.md", render_paired_mortality(paired, cfg))
    log.info(
        "wrote %s/mortality.{csv,md,tex} (%d rows) and mortality_paired.{csv,md} (%d rows)",
        out_dir,
        len(table),
        len(paired),
    )
