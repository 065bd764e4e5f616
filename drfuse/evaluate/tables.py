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
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from drfuse.config import data_source
from drfuse.errors import UserError
from drfuse.evaluate.bootstrap import select_run
from drfuse.evaluate.pooling import load_resamples, pooled_interval, resample_matrix
from drfuse.evaluate.render import csv_text, markdown, write_table, write_text_atomic
from drfuse.phenotypes import PHENOTYPES

log = logging.getLogger(__name__)

PAPER_DIR = resources.files("drfuse.evaluate") / "paper"
MODEL_NAMES = {
    "resnet50": "ResNet50",
    "transformer": "Transformer",
    "mmtm": "MMTM",
    "daft": "DAFT",
    "medfuse": "MedFuse",
    "medfuse2": "MedFuse-II",
    "drfuse": "DrFuse",
}
ABLATION_NAMES = {
    "drfuse_no_disentangle": "w/o disentangled",
    "drfuse_mse": "MSE alignment",
    "drfuse_no_rank": "w/o attn. ranking",
    "drfuse": "DrFuse",
}
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


def display_name(model: str) -> str:
    """The paper's name of a model or ablation; other runs (e.g. grid points) keep their own."""
    return {**MODEL_NAMES, **ABLATION_NAMES}.get(model, model)


def ordered_models(models) -> list[str]:
    """The paper's models, then its ablations, in the paper's order; other runs sorted after them."""
    models = set(models)
    known = [m for m in dict.fromkeys([*MODEL_NAMES, *ABLATION_NAMES]) if m in models]
    return known + sorted(models - set(known))


def paper_label(name: str) -> str:
    return PAPER_LABELS.get(name, name)


@lru_cache(maxsize=None)
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


def bootstrap_rows(boot: pd.DataFrame, model: str, train_set: str, test_set: str, seeds: list[int], label: str, metric: str = "prauc") -> pd.DataFrame:
    """One run's rows of bootstrap.parquet: one label (or every label with "*"), every seed."""
    sel = select_run(boot, "bootstrap.parquet", model, train_set, test_set, seeds, metric)
    return sel[sel["label"] == label] if label != "*" else sel


def _summary(boot: pd.DataFrame, resamples: pd.DataFrame, model: str, train_set: str, test_set: str, seeds: list[int], ci: float) -> dict:
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
        rows.append({"dataset": dataset, "missing_modality": missing, **{s: int(counts.get(s, 0)) for s in ("train", "val", "test")}})
    return pd.DataFrame(rows, columns=list(paper_table(1).columns))


def table2_runs(cfg: dict) -> list[tuple[str, str, str]]:
    """(model, train_set, test_set) of Table 2's rows, in the paper's order."""
    exp = cfg["experiments"]["table2"]
    return [
        (model, train_set, test_set)
        for model in MODEL_NAMES if model in exp["models"]
        for train_set in TEST_SETS if train_set in exp["train_sets"]
        for test_set in TEST_SETS
    ]


def table4_variants(cfg: dict) -> list[str]:
    """Table 4's rows: the configured ablations and DrFuse, in the paper's order."""
    exp = cfg["experiments"]
    configured = set(exp["table4"]["ablations"]) | ({"drfuse"} & (set(exp["table2"]["models"]) | set(exp["table3"]["models"])))
    return [v for v in ABLATION_NAMES if v in configured]


def table2(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    seeds, ci = list(cfg["experiments"]["seeds"]), float(cfg["evaluation"]["ci"])
    rows = []
    for model, train_set, test_set in table2_runs(cfg):
        summary = _summary(boot, resamples, model, train_set, test_set, seeds, ci)
        rows.append({"model": MODEL_NAMES[model], "train_set": train_set, "test_set": test_set, **summary})
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
    models = [m for m in MODEL_NAMES if m in exp["models"]]
    values = pd.DataFrame(index=list(PHENOTYPES))
    for model in models:
        sel = bootstrap_rows(boot, model, exp["train_set"], exp["test_set"], seeds, "*")
        sel = sel[sel["label"] != "macro"]
        values[MODEL_NAMES[model]] = sel.groupby("label")["estimate"].mean().reindex(values.index)
    avg_rank, rel = rank_and_relative(values, [MODEL_NAMES[m] for m in UNI_MODAL])
    out = values.copy()
    for col in rel.columns:
        out[f"{col} rel"] = rel[col]
    out.insert(0, "prevalence", prevalence.reindex(values.index).to_numpy(float))
    out.insert(0, "label", [paper_label(n) for n in values.index])
    rank_row = {"label": AVERAGE_RANK, "prevalence": np.nan, **avg_rank.to_dict()}
    return pd.concat([out, pd.DataFrame([rank_row])], ignore_index=True)


def table4(boot: pd.DataFrame, resamples: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    exp = cfg["experiments"]
    seeds, ci = list(exp["seeds"]), float(cfg["evaluation"]["ci"])
    rows = []
    for variant in table4_variants(cfg):
        row = {"variant": ABLATION_NAMES[variant]}
        for test_set in TEST_SETS:
            s = _summary(boot, resamples, variant, exp["table4"]["train_set"], test_set, seeds, ci)
            row |= {f"prauc_{test_set}": s["prauc"], f"ci_low_{test_set}": s["ci_low"], f"ci_high_{test_set}": s["ci_high"], f"prauc_std_{test_set}": s["prauc_std"]}
            row["n_seeds"] = s["n_seeds"]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(paper_table(4).columns) + ["prauc_std_matched", "prauc_std_full", "n_seeds"])


# ---------------------------------------------------------------- ours beside the paper's


def fmt(x, digits=3) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _ci(est, low, high, std=np.nan) -> str:
    spread = "" if pd.isna(std) else f" ± {fmt(std)}"
    return f"{fmt(est)}{spread} ({fmt(low)}, {fmt(high)})"


def _rel(x) -> str:
    return "" if pd.isna(x) else f" ({x:+.1%})"


POOLED_NOTE = "pooled interval: the percentile interval of the per-resample mean over seeds, every seed on the same resamples"


def _notes(cfg: dict, extra: str = "") -> list[str]:
    seeds = cfg["experiments"]["seeds"]
    ev = cfg["evaluation"]
    return [
        f"Ours: {data_source(cfg)}; seed(s) {', '.join(map(str, seeds))}"
        + (f" (mean ± std across seeds; {POOLED_NOTE})" if len(seeds) > 1 else "")
        + f"; {ev['n_bootstrap']} bootstrap resamples, {ev['ci']:.0%} percentile intervals. "
        + "Paper: Yao et al., AAAI 2024 (MIMIC-IV v1.0 + MIMIC-CXR-JPG)."
        + (f" {extra}" if extra else "")
    ]


def render_table1(t1: pd.DataFrame, cfg: dict) -> tuple:
    paper = paper_table(1).set_index("dataset")
    header = ["Dataset", "Missing modality"] + [f"{s.capitalize()} {w}" for s in ("train", "val", "test") for w in ("ours", "paper")]
    rows = [
        [r.dataset, r.missing_modality] + [x for s in ("train", "val", "test") for x in (f"{getattr(r, s):,}", f"{paper.loc[r.dataset, s]:,}")]
        for r in t1.itertuples()
    ]
    return "Table 1: stays per split (matched = stays with a usable CXR)", header, rows, _notes(cfg)


def render_table2(t2: pd.DataFrame, cfg: dict) -> tuple:
    paper = paper_table(2).set_index(["model", "train_set", "test_set"])
    header = ["Model", "Trained on", "Tested on", "PRAUC (95% CI) ours", "PRAUC (95% CI) paper"]
    rows = []
    for r in t2.itertuples():
        p = paper.loc[(r.model, r.train_set, r.test_set)] if (r.model, r.train_set, r.test_set) in paper.index else None
        theirs = "-" if p is None else _ci(p.prauc, p.ci_low, p.ci_high)
        rows.append([r.model, r.train_set, r.test_set, _ci(r.prauc, r.ci_low, r.ci_high, r.prauc_std), theirs])
    return "Table 2: macro PRAUC over the 25 phenotypes", header, rows, _notes(cfg)


def render_table3(t3: pd.DataFrame, cfg: dict) -> tuple:
    models = [c for c in t3.columns if c not in ("label", "prevalence") and not c.endswith(" rel")]
    paper = paper_table(3).set_index("label")
    in_paper = [m for m in models if m in paper.columns]
    # the paper's numbers get the same arithmetic, over the same models, so the columns compare
    p_rank, p_rel = rank_and_relative(paper[in_paper], [MODEL_NAMES[m] for m in UNI_MODAL])
    header = ["Label", "Prevalence ours", "Prevalence paper"] + [f"{m} {w}" for m in models for w in ("ours", "paper")]
    rows = []
    for r in t3.to_dict("records"):
        is_rank = r["label"] == AVERAGE_RANK
        row = [r["label"], "" if is_rank else fmt(r["prevalence"], 2), "" if is_rank else fmt(paper.loc[r["label"], "prevalence"], 2)]
        for m in models:
            if is_rank:
                row += [fmt(r[m], 2), fmt(p_rank.get(m), 2)]
            else:
                theirs = "-" if m not in in_paper else fmt(paper.loc[r["label"], m]) + (_rel(p_rel.loc[r["label"], m]) if m in p_rel else "")
                row += [fmt(r[m]) + _rel(r.get(f"{m} rel")), theirs]
        rows.append(row)
    setting = cfg["experiments"]["table3"]
    title = f"Table 3: PRAUC per phenotype (trained on {setting['train_set']}, tested on {setting['test_set']})"
    extra = "Percentages: relative difference against the best uni-modal model. Average Rank: 1 = best, ties share the best rank."
    return title, header, rows, _notes(cfg, extra)


def render_table4(t4: pd.DataFrame, cfg: dict) -> tuple:
    paper = paper_table(4).set_index("variant")
    header = ["Variant"] + [f"PRAUC@{t} {w}" for t in TEST_SETS for w in ("ours", "paper")]
    rows = []
    for r in t4.to_dict("records"):
        row = [r["variant"]]
        for t in TEST_SETS:
            p = paper.loc[r["variant"]] if r["variant"] in paper.index else None
            theirs = "-" if p is None else _ci(p[f"prauc_{t}"], p[f"ci_low_{t}"], p[f"ci_high_{t}"])
            row += [_ci(r[f"prauc_{t}"], r[f"ci_low_{t}"], r[f"ci_high_{t}"], r[f"prauc_std_{t}"]), theirs]
        rows.append(row)
    title = f"Table 4: ablations, trained on {cfg['experiments']['table4']['train_set']}"
    return title, header, rows, _notes(cfg)


def grid_choice(results_dir: Path, cfg: dict, out_dir: Path) -> pd.DataFrame:
    """The grid point selected on the validation score for each training set and seed (the paper's
    protocol): rows (run, train_set, seed); the whole grid goes to tables/grid_search.csv."""
    from drfuse.experiments import select_grid

    grid = pd.DataFrame(select_grid(results_dir, cfg))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "grid_search.csv", grid.to_csv(index=False))
    chosen = grid[grid["selected"]]
    log.info("grid search: selected %s", ", ".join(f"{r.run} ({r.train_set}, seed {r.seed})" for r in chosen.itertuples()))
    return chosen[["run", "train_set", "seed"]]


def as_drfuse(frame: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Rows of the chosen grid runs renamed to DrFuse; every other grid run and DrFuse dropped."""
    picked = frame.merge(chosen, left_on=["model", "train_set", "seed"], right_on=["run", "train_set", "seed"]).drop(columns="run")
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
    entries += [("3", m, t3["train_set"], t3["test_set"], "*") for m in MODEL_NAMES if m in t3["models"]]
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
    """Write tables/table{1..4}.{csv,md,tex}, seeds.{csv,md} and paired.{csv,md} from
    eval/bootstrap.parquet, eval/resamples.parquet and the cohort files."""
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
    for name, (df, (title, header, rows, notes)) in built.items():
        write_table(out_dir, name, df, title, header, rows, notes)
        log.info("wrote %s/%s.{csv,md,tex} (%d rows)", out_dir, name, len(df))

    seeds = seeds_table(boot, cfg)
    write_text_atomic(out_dir / "seeds.csv", csv_text(seeds))
    write_text_atomic(out_dir / "seeds.md", render_seeds(seeds, cfg))
    from drfuse.evaluate.paired import paired_table, render_paired  # paired builds on this module

    paired = paired_table(boot, resamples, cfg)
    write_text_atomic(out_dir / "paired.csv", csv_text(paired))
    write_text_atomic(out_dir / "paired.md", render_paired(paired, cfg))
    log.info("wrote %s/{seeds,paired}.{csv,md} (%d, %d rows)", out_dir, len(seeds), len(paired))
