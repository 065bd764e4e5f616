"""Stage `tables`: the paper's Tables 1-4 from our bootstrap results, beside the paper's numbers.

Each table is written as `tableN.csv` (our numbers; the paper's columns first, in the paper's
order, then the extra columns listed below), `tableN.md` and `tableN.tex` (ours beside the paper's,
naming the data source). Models are named as in the paper; models missing from the `experiments`
config are left out.

- Table 1: stays per split in the full dataset and in the matched subset (usable CXR).
- Table 2: macro PRAUC with its bootstrap interval, every model x training set x test set.
  Extra columns: `prauc_std` (std across seeds, NaN with one seed), `n_seeds`.
- Table 3: per-label PRAUC (experiments.table3 training/test set), prevalence on that test set,
  an "Average Rank" row (rank 1 = best; ties share the best rank, which reproduces the paper's
  row exactly), extra columns `<model> rel`: relative difference against the best uni-modal model.
- Table 4: macro PRAUC of the ablations and DrFuse on both test sets. Extra columns
  `prauc_std_matched`, `prauc_std_full`, `n_seeds`.

With several seeds a value is the mean over seeds and its interval is the pooled bootstrap
interval (`drfuse.evaluate.pooling`: the percentile interval of the per-resample mean over seeds,
on the same resamples); `seeds.{csv,md}` keeps each seed's numbers, and `paired.{csv,md}`
(`drfuse.evaluate.paired`) gives DrFuse minus every other model on shared resamples.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from drfuse import atomic
from drfuse.config import data_source
from drfuse.errors import UserError
from drfuse.evaluate.bootstrap import select_run
from drfuse.evaluate.names import display_name, ordered_models, paper_row
from drfuse.evaluate.pooling import load_resamples, paired_intervals, pooled_interval, resample_matrix
from drfuse.evaluate.render import csv_text, markdown, write_table
from drfuse.experiments import drfuse_runs, family_runs, resolve_run, study_runs
from drfuse.phenotypes import PHENOTYPES

log = logging.getLogger(__name__)

PAPER_DIR = resources.files("drfuse.evaluate") / "paper"
UNI_MODAL = ("resnet50", "transformer")
# Our label names (CCS) -> the paper's shortened wording in Table 3 (same alphabetical order).
PAPER_LABELS = {
    "Chronic obstructive pulmonary disease and bronchiectasis": "Chronic obstructive pulmonary disease",
    "Complications of surgical procedures or medical care": "Complications of surgical/medical care",
    "Coronary atherosclerosis and other heart disease": "Coronary atherosclerosis and related",
    "Hypertension with complications and secondary hypertension": "Hypertension with complications",
    "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)": "Pneumonia",
}
TEST_SETS = ("matched", "full")
AVERAGE_RANK = "Average Rank"


def paper_label(name: str) -> str:
    return PAPER_LABELS.get(name, name)


@cache
def paper_table(n: int) -> pd.DataFrame:
    """The paper's Table n as data (package copy of the paper's tables)."""
    with (PAPER_DIR / f"table{n}.csv").open() as fh:
        return pd.read_csv(fh)


# ---------------------------------------------------------------- inputs


def _usable_cxr(stays: pd.DataFrame, results_dir: Path) -> np.ndarray:
    """The matched subset: has_cxr and the image is readable (in the image cache)."""
    from drfuse.images.cache import usable_cxr

    return usable_cxr(stays, results_dir / "images")


def load_bootstrap(results_dir: Path) -> pd.DataFrame:
    path = results_dir / "eval" / "bootstrap.parquet"
    if not path.is_file():
        raise UserError(f"bootstrap results not found: {path} (run `drfuse evaluate`)")
    return pd.read_parquet(path)


def load_stays(results_dir: Path) -> pd.DataFrame:
    path = results_dir / "cohort" / "stays.parquet"
    if not path.is_file():
        raise UserError(f"cohort file not found: {path} (run `drfuse cohort`)")
    return pd.read_parquet(path)


def bootstrap_rows(
    boot: pd.DataFrame, model: str, train_set: str, test_set: str, seeds: list[int], label: str, metric: str = "prauc"
) -> pd.DataFrame:
    """One run's rows of bootstrap.parquet: one label (or every label with "*"), every seed."""
    sel = select_run(boot, "bootstrap.parquet", model, train_set, test_set, seeds, metric)
    return sel[sel["label"] == label] if label != "*" else sel


def _summary(
    boot: pd.DataFrame, resamples: pd.DataFrame, model: str, train_set: str, test_set: str, seeds: list[int], ci: float
) -> dict:
    """Macro PRAUC: mean over seeds, pooled interval over the same resamples, std across seeds."""
    est = bootstrap_rows(boot, model, train_set, test_set, seeds, "macro")["estimate"].to_numpy(float)
    low, high, _ = pooled_interval(resample_matrix(resamples, model, train_set, test_set, seeds)[0], ci)
    return {
        "prauc": est.mean(),
        "ci_low": low,
        "ci_high": high,
        "prauc_std": est.std(ddof=1) if len(est) > 1 else np.nan,
        "n_seeds": len(est),
    }


# ---------------------------------------------------------------- the four tables


def table1(stays: pd.DataFrame, usable: np.ndarray) -> pd.DataFrame:
    if "split" not in stays.columns:
        raise UserError("cohort/stays.parquet has no `split` column")
    rows = []
    for dataset, missing, mask in (("full", "yes", np.ones(len(stays), bool)), ("matched", "no", usable)):
        counts = stays.loc[mask, "split"].value_counts()
        rows.append(
            {
                "dataset": dataset,
                "missing_modality": missing,
                **{s: int(counts.get(s, 0)) for s in ("train", "val", "test")},
            }
        )
    return pd.DataFrame(rows, columns=list(paper_table(1).columns))


def expand(models: list[str], cfg: dict) -> list[str]:
    """The runs a table's list of models stands for (`drfuse.experiments.family_runs`)."""
    return [run for model in models for run in family_runs(model, cfg)]


def table2_runs(cfg: dict) -> list[tuple[str, str, str]]:
    """(run, train_set, test_set) of Table 2's rows: its models (the DrFuse family under each recipe)
    and, with the recipe study, the fusion baselines with our recipe; in the paper's order."""
    exp = cfg["experiments"]["table2"]
    runs = expand(exp["models"], cfg) + study_runs(cfg)[1]
    return [
        (run, train_set, test_set)
        for run in ordered_models(runs)
        for train_set in TEST_SETS
        if train_set in exp["train_sets"]
        for test_set in TEST_SETS
    ]


def table3_runs(cfg: dict) -> list[str]:
    return ordered_models(expand(cfg["experiments"]["table3"]["models"], cfg))


def table4_variants(cfg: dict) -> list[str]:
    """Table 4's rows: per recipe of `experiments.recipes`, the configured ablations under it, then
    DrFuse under it."""
    from drfuse.models import MODELS

    exp = cfg["experiments"]
    shown = set(exp["table4"]["ablations"]) | (
        {"drfuse"} & (set(exp["table2"]["models"]) | set(exp["table3"]["models"]))
    )
    runs = expand(sorted(shown), cfg)
    return [run for recipe in exp["recipes"] for run in ordered_models(runs) if MODELS[run].recipe == recipe]


def table2(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    seeds, ci = list(cfg["experiments"]["seeds"]), float(cfg["evaluation"]["ci"])
    rows = []
    for run, train_set, test_set in table2_runs(cfg):
        summary = _summary(boot, resamples, run, train_set, test_set, seeds, ci)
        rows.append({"model": display_name(run), "train_set": train_set, "test_set": test_set, **summary})
    return pd.DataFrame(rows, columns=list(paper_table(2).columns) + ["prauc_std", "n_seeds"])


def rank_and_relative(values: pd.DataFrame, uni_modal: list[str]) -> tuple[pd.Series, pd.DataFrame]:
    """Average rank per column (1 = best; ties share the best rank, as the paper) and the relative
    difference of every multi-modal column against the row's best uni-modal column."""
    avg_rank = values.rank(axis=1, ascending=False, method="min").mean()
    uni = [c for c in uni_modal if c in values.columns]
    multi = [c for c in values.columns if c not in uni]
    if uni:
        best = values[uni].max(axis=1)
        rel = values[multi].sub(best, axis=0).div(best, axis=0)
    else:
        rel = pd.DataFrame(np.nan, index=values.index, columns=multi)
    return avg_rank, rel


def table3(boot: pd.DataFrame, cfg: dict, prevalence: pd.Series) -> pd.DataFrame:
    exp = cfg["experiments"]["table3"]
    seeds = list(cfg["experiments"]["seeds"])
    values = pd.DataFrame(index=list(PHENOTYPES))
    for run in table3_runs(cfg):
        sel = bootstrap_rows(boot, run, exp["train_set"], exp["test_set"], seeds, "*")
        sel = sel[sel["label"] != "macro"]
        values[display_name(run)] = sel.groupby("label")["estimate"].mean().reindex(values.index)
    avg_rank, rel = rank_and_relative(values, [display_name(m) for m in UNI_MODAL])
    out = values.copy()
    for col in rel.columns:
        out[f"{col} rel"] = rel[col]
    out.insert(0, "prevalence", prevalence.reindex(values.index).to_numpy(float))
    out.insert(0, "label", [paper_label(n) for n in values.index])
    rank_row = {"label": AVERAGE_RANK, "prevalence": np.nan, **avg_rank.to_dict()}
    return pd.concat([out, pd.DataFrame([rank_row])], ignore_index=True)


def _recipe_reference(run: str, cfg: dict) -> str:
    """DrFuse under the recipe of a DrFuse-family run."""
    from drfuse.models import MODELS

    return next(r for r in drfuse_runs(cfg) if MODELS[r].recipe == MODELS[run].recipe)


def paired_difference(
    boot, resamples, run: str, reference: str, train_set: str, test_set: str, seeds: list[int], ci: float
) -> dict:
    """`run` minus `reference`, macro PRAUC: the mean over seeds, its pooled paired interval, and the
    standard deviation across seeds of the per-seed differences."""
    est = [
        bootstrap_rows(boot, m, train_set, test_set, seeds, "macro").set_index("seed")["estimate"].reindex(seeds)
        for m in (run, reference)
    ]
    per_seed = (est[0] - est[1]).to_numpy(float)
    _, (low, high, _) = paired_intervals(
        resample_matrix(resamples, run, train_set, test_set, seeds),
        resample_matrix(resamples, reference, train_set, test_set, seeds),
        ci,
    )
    return {
        "difference": per_seed.mean(),
        "ci_low": low,
        "ci_high": high,
        "difference_std": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan,
    }


def table4(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Per row: macro PRAUC on both test sets and, for an ablation, its paired difference with DrFuse
    under the same recipe (`diff_*`: ablation minus DrFuse, pooled over seeds)."""
    exp = cfg["experiments"]
    seeds, ci = list(exp["seeds"]), float(cfg["evaluation"]["ci"])
    train_set = exp["table4"]["train_set"]
    rows = []
    for run in table4_variants(cfg):
        reference = _recipe_reference(run, cfg)
        row = {"variant": display_name(run)}
        for test_set in TEST_SETS:
            s = _summary(boot, resamples, run, train_set, test_set, seeds, ci)
            row |= {
                f"prauc_{test_set}": s["prauc"],
                f"ci_low_{test_set}": s["ci_low"],
                f"ci_high_{test_set}": s["ci_high"],
                f"prauc_std_{test_set}": s["prauc_std"],
            }
            row["n_seeds"] = s["n_seeds"]
            d = (
                paired_difference(boot, resamples, run, reference, train_set, test_set, seeds, ci)
                if run != reference
                else {}
            )
            row |= {
                f"diff_{test_set}": d.get("difference", np.nan),
                f"diff_ci_low_{test_set}": d.get("ci_low", np.nan),
                f"diff_ci_high_{test_set}": d.get("ci_high", np.nan),
            }
        rows.append(row)
    extra = ["prauc_std_matched", "prauc_std_full", "n_seeds"] + [
        f"diff{part}_{t}" for t in TEST_SETS for part in ("", "_ci_low", "_ci_high")
    ]
    return pd.DataFrame(rows, columns=list(paper_table(4).columns) + extra)


# ---------------------------------------------------------------- ours beside the paper's


def fmt(x, digits=3) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _ci(est, low, high, std=np.nan) -> str:
    spread = "" if pd.isna(std) else f" ± {fmt(std)}"
    return f"{fmt(est)}{spread} ({fmt(low)}, {fmt(high)})"


def _rel(x) -> str:
    return "" if pd.isna(x) else f" ({x:+.1%})"


POOLED_NOTE = (
    "pooled interval: the percentile interval of the per-resample mean over seeds, every seed on the same resamples"
)


def _notes(cfg: dict, extra: str = "", runs: list[str] = ()) -> list[str]:
    """The data, seeds and bootstrap of a table; the metric each of its `runs` chose its best epoch on."""
    seeds = cfg["experiments"]["seeds"]
    ev = cfg["evaluation"]
    return [
        f"Ours: {data_source(cfg)}; seed(s) {', '.join(map(str, seeds))}"
        + (f" (mean ± std across seeds; {POOLED_NOTE})" if len(seeds) > 1 else "")
        + f"; {ev['n_bootstrap']} bootstrap resamples, {ev['ci']:.0%} percentile intervals. "
        + (f"{selection_note(runs, cfg)} " if runs else "")
        + "Paper: Yao et al., AAAI 2024 (MIMIC-IV v1.0 + MIMIC-CXR-JPG)."
        + (f" {extra}" if extra else "")
    ]


def selection_note(runs, cfg: dict) -> str:
    """Which validation metric picked each run's best epoch (`train.select_on` of its resolved settings)."""
    by_metric: dict[str, list[str]] = {}
    for run in ordered_models(runs):
        by_metric.setdefault(resolve_run(run, cfg)[1]["train"]["select_on"], []).append(display_name(run))
    names = {"prauc": "PRAUC", "auroc": "AUROC"}
    return (
        "Best epoch by validation macro "
        + "; by ".join(
            f"{names[m]}: {', '.join(models)}"
            for m, models in sorted(by_metric.items(), key=lambda kv: kv[0] != "prauc")
        )
        + "."
    )


def _paper_rows(cfg: dict) -> dict[str, str | None]:
    """Display name -> the paper's row it stands beside (`drfuse.evaluate.names.paper_row`)."""
    from drfuse.experiments import experiment_runs

    return {display_name(run): paper_row(run) for run, _, _ in experiment_runs(cfg)}


def render_table1(t1: pd.DataFrame, cfg: dict) -> tuple:
    paper = paper_table(1).set_index("dataset")
    header = ["Dataset", "Missing modality"] + [
        f"{s.capitalize()} {w}" for s in ("train", "val", "test") for w in ("ours", "paper")
    ]
    rows = [
        [r.dataset, r.missing_modality]
        + [x for s in ("train", "val", "test") for x in (f"{getattr(r, s):,}", f"{paper.loc[r.dataset, s]:,}")]
        for r in t1.itertuples()
    ]
    return "Table 1: stays per split (matched = stays with a usable CXR)", header, rows, _notes(cfg)


RECIPE_NOTE = (
    "DrFuse (paper recipe): the paper's settings; DrFuse (our recipe): with the changes of config `recipe:` "
    "(docs/deviations.md); the paper's numbers stand beside the runs trained as the paper trained them."
)


def render_table2(t2: pd.DataFrame, cfg: dict) -> tuple:
    paper = paper_table(2).set_index(["model", "train_set", "test_set"])
    paper_names = _paper_rows(cfg)
    header = ["Model", "Trained on", "Tested on", "PRAUC (95% CI) ours", "PRAUC (95% CI) paper"]
    rows = []
    for r in t2.itertuples():
        key = (paper_names.get(r.model), r.train_set, r.test_set)
        theirs = "-" if key not in paper.index else _ci(*paper.loc[key, ["prauc", "ci_low", "ci_high"]])
        rows.append([r.model, r.train_set, r.test_set, _ci(r.prauc, r.ci_low, r.ci_high, r.prauc_std), theirs])
    runs = [run for run, _, _ in table2_runs(cfg)]
    return "Table 2: macro PRAUC over the 25 phenotypes", header, rows, _notes(cfg, RECIPE_NOTE, runs)


def render_table3(t3: pd.DataFrame, cfg: dict) -> tuple:
    models = [c for c in t3.columns if c not in ("label", "prevalence") and not c.endswith(" rel")]
    paper = paper_table(3).set_index("label")
    paper_names = _paper_rows(cfg)
    theirs_of = {m: paper_names.get(m) for m in models if paper_names.get(m) in paper.columns}
    # the paper's numbers get the same arithmetic, over the same models, so the columns compare
    p_rank, p_rel = rank_and_relative(paper[list(theirs_of.values())], [display_name(m) for m in UNI_MODAL])
    header = ["Label", "Prevalence ours", "Prevalence paper"] + [f"{m} {w}" for m in models for w in ("ours", "paper")]
    rows = []
    for r in t3.to_dict("records"):
        is_rank = r["label"] == AVERAGE_RANK
        row = [
            r["label"],
            "" if is_rank else fmt(r["prevalence"], 2),
            "" if is_rank else fmt(paper.loc[r["label"], "prevalence"], 2),
        ]
        for m in models:
            p = theirs_of.get(m)
            if is_rank:
                row += [fmt(r[m], 2), fmt(p_rank.get(p), 2)]
            else:
                theirs = (
                    "-"
                    if p is None
                    else fmt(paper.loc[r["label"], p]) + (_rel(p_rel.loc[r["label"], p]) if p in p_rel else "")
                )
                row += [fmt(r[m]) + _rel(r.get(f"{m} rel")), theirs]
        rows.append(row)
    setting = cfg["experiments"]["table3"]
    title = f"Table 3: PRAUC per phenotype (trained on {setting['train_set']}, tested on {setting['test_set']})"
    extra = (
        "Percentages: relative difference against the best uni-modal model. "
        "Average Rank: 1 = best, ties share the best rank. " + RECIPE_NOTE
    )
    return title, header, rows, _notes(cfg, extra, table3_runs(cfg))


def _signed_ci(x, low, high) -> str:
    return "-" if pd.isna(x) else f"{x:+.3f} ({low:+.3f}, {high:+.3f})"


def render_table4(t4: pd.DataFrame, cfg: dict) -> tuple:
    paper = paper_table(4).set_index("variant")
    paper_names = _paper_rows(cfg)
    header = ["Variant"] + [f"{c}@{t}" for t in TEST_SETS for c in ("PRAUC ours", "minus DrFuse", "PRAUC paper")]
    rows = []
    for r in t4.to_dict("records"):
        p = paper.loc[paper_names[r["variant"]]] if paper_names.get(r["variant"]) in paper.index else None
        row = [r["variant"]]
        for t in TEST_SETS:
            theirs = "-" if p is None else _ci(p[f"prauc_{t}"], p[f"ci_low_{t}"], p[f"ci_high_{t}"])
            row += [
                _ci(r[f"prauc_{t}"], r[f"ci_low_{t}"], r[f"ci_high_{t}"], r[f"prauc_std_{t}"]),
                _signed_ci(r[f"diff_{t}"], r[f"diff_ci_low_{t}"], r[f"diff_ci_high_{t}"]),
                theirs,
            ]
        rows.append(row)
    title = f"Table 4: ablations, trained on {cfg['experiments']['table4']['train_set']}"
    extra = (
        "minus DrFuse: the ablation's macro PRAUC minus DrFuse's under the same recipe, paired on the same bootstrap "
        "resamples (pooled over seeds). " + RECIPE_NOTE
    )
    return title, header, rows, _notes(cfg, extra, table4_variants(cfg))


def grid_choice(results_dir: Path, cfg: dict, out_dir: Path) -> pd.DataFrame:
    """The grid point selected on the validation score for each training set and seed (the paper's
    protocol): rows (run, train_set, seed); the whole grid goes to tables/grid_search.csv."""
    from drfuse.experiments import select_grid

    grid = pd.DataFrame(select_grid(results_dir, cfg))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "grid_search.csv", grid.to_csv(index=False))
    chosen = grid[grid["selected"]]
    log.info(
        "grid search: selected %s", ", ".join(f"{r.run} ({r.train_set}, seed {r.seed})" for r in chosen.itertuples())
    )
    return chosen[["run", "train_set", "seed"]]


def as_drfuse(frame: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Rows of the chosen grid runs renamed to DrFuse; every other grid run and DrFuse dropped."""
    picked = frame.merge(chosen, left_on=["model", "train_set", "seed"], right_on=["run", "train_set", "seed"]).drop(
        columns="run"
    )
    picked["model"] = "drfuse"
    others = frame[(frame["model"] != "drfuse") & ~frame["model"].str.startswith("drfuse-g")]
    return pd.concat([others, picked], ignore_index=True)


def use_grid_selection(boot: pd.DataFrame, results_dir: Path, cfg: dict, out_dir: Path) -> pd.DataFrame:
    """Report, as DrFuse, the grid point selected on the validation score (see `grid_choice`)."""
    return as_drfuse(boot, grid_choice(results_dir, cfg, out_dir))


# ---------------------------------------------------------------- each seed's numbers


def seeds_table(boot: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Every number of Tables 2-4 per seed: one row per (table, model, train_set, test_set, label,
    seed) with that seed's estimate and its own bootstrap interval (PRAUC)."""
    exp = cfg["experiments"]
    seeds = list(exp["seeds"])
    entries = [("2", m, tr, te, "macro") for m, tr, te in table2_runs(cfg)]
    t3 = exp["table3"]
    entries += [("3", m, t3["train_set"], t3["test_set"], "*") for m in table3_runs(cfg)]
    entries += [("4", v, exp["table4"]["train_set"], te, "macro") for v in table4_variants(cfg) for te in TEST_SETS]
    frames = []
    for table, model, train_set, test_set, label in entries:
        sel = bootstrap_rows(boot, model, train_set, test_set, seeds, label)
        sel = sel[sel["label"] != "macro"] if label == "*" else sel
        sel = sel.assign(table=table, label=sel["label"].map(lambda x: paper_label(x) if x != "macro" else x))
        frames.append(sel)
    out = pd.concat(frames, ignore_index=True).rename(columns={"estimate": "prauc"})
    out["model"] = out["model"].map(display_name)
    return out[["table", "model", "train_set", "test_set", "label", "seed", "prauc", "ci_low", "ci_high"]]


def render_seeds(seeds: pd.DataFrame, cfg: dict) -> str:
    """Markdown: the macro rows of Tables 2 and 4, one column per seed (Table 3: seeds.csv only)."""
    seed_list = list(cfg["experiments"]["seeds"])
    macro_rows = seeds[seeds["label"] == "macro"]
    header = ["Table", "Model", "Trained on", "Tested on"] + [f"seed {s}" for s in seed_list] + ["mean ± std"]
    rows = []
    keys = ["table", "model", "train_set", "test_set"]
    for key, group in macro_rows.groupby(keys, sort=False):
        by_seed = group.set_index("seed")
        values = [_ci(by_seed.loc[s, "prauc"], by_seed.loc[s, "ci_low"], by_seed.loc[s, "ci_high"]) for s in seed_list]
        est = group["prauc"].to_numpy(float)
        spread = f"{fmt(est.mean())} ± {fmt(est.std(ddof=1))}" if len(est) > 1 else fmt(est.mean())
        rows.append([*key, *values, spread])
    notes = [
        f"Macro PRAUC of each seed with its own {cfg['evaluation']['ci']:.0%} bootstrap interval. "
        "Table 3's per-label values per seed: seeds.csv. Tables 2-4 show the mean over seeds with "
        "the pooled interval (" + POOLED_NOTE + ")."
    ]
    return markdown("Each seed's macro PRAUC (Tables 2 and 4)", header, rows, notes)


def build_tables(results_dir: Path, cfg: dict, out_dir: Path) -> None:
    """Write tables/table{1..4}.{csv,md,tex}, seeds.{csv,md} and paired.{csv,md} (and, with the
    recipe study, recipe.{csv,md,tex}) from eval/bootstrap.parquet, eval/resamples.parquet and the
    cohort files."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    boot = load_bootstrap(results_dir)
    resamples = load_resamples(results_dir)
    if cfg["experiments"]["grid_search"]["enabled"]:
        chosen = grid_choice(results_dir, cfg, out_dir)
        boot, resamples = as_drfuse(boot, chosen), as_drfuse(resamples, chosen)
    stays = load_stays(results_dir)
    usable = _usable_cxr(stays, results_dir)

    t3_test = cfg["experiments"]["table3"]["test_set"]
    test_mask = (stays["split"] == "test").to_numpy() & (usable if t3_test == "matched" else True)
    prevalence = stays.loc[test_mask, list(PHENOTYPES)].astype(float).mean()

    built = {
        "table1": (t1 := table1(stays, usable), render_table1(t1, cfg)),
        "table2": (t2 := table2(boot, resamples, cfg), render_table2(t2, cfg)),
        "table3": (t3 := table3(boot, cfg, prevalence), render_table3(t3, cfg)),
        "table4": (t4 := table4(boot, resamples, cfg), render_table4(t4, cfg)),
    }
    if cfg["experiments"]["recipe_study"]["enabled"]:
        from drfuse.evaluate.recipe_study import recipe_table, render_recipe  # builds on this module

        built["recipe"] = (t5 := recipe_table(boot, resamples, cfg), render_recipe(t5, cfg))
    for name, (df, (title, header, rows, notes)) in built.items():
        write_table(out_dir, name, df, title, header, rows, notes)
        log.info("wrote %s/%s.{csv,md,tex} (%d rows)", out_dir, name, len(df))

    seeds = seeds_table(boot, cfg)
    atomic.write_text(out_dir / "seeds.csv", csv_text(seeds))
    atomic.write_text(out_dir / "seeds.md", render_seeds(seeds, cfg))
    from drfuse.evaluate.paired import paired_table, render_paired  # paired builds on this module

    paired = paired_table(boot, resamples, cfg)
    atomic.write_text(out_dir / "paired.csv", csv_text(paired))
    atomic.write_text(out_dir / "paired.md", render_paired(paired, cfg))
    log.info("wrote %s/{seeds,paired}.{csv,md} (%d, %d rows)", out_dir, len(seeds), len(paired))
