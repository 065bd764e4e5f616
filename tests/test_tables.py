"""Tables 1-4 and the figures from small realistic inputs: columns, counts and the arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drfuse.evaluate.bootstrap import evaluate
from drfuse.evaluate.figures import build_figures
from drfuse.evaluate.tables import PAPER_LABELS, build_tables, paper_table, table3
from drfuse.images.cache import DATA_FILE, INDEX_FILE, SIZE_KEY
from drfuse.phenotypes import PHENOTYPES
from tests.test_metrics import fake_scores, write_predictions

PAPER3 = ["ResNet50", "Transformer", "MedFuse", "MedFuse-II", "DrFuse"]
SPLITS = {"train": 60, "val": 12, "test": 40}


def make_results(root: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """A cohort of 112 stays, 2/3 with a CXR matched; 3 of those images unreadable (not cached)."""
    rng = np.random.default_rng(0)
    n = sum(SPLITS.values())
    split = np.repeat(list(SPLITS), list(SPLITS.values()))
    has_cxr = rng.random(n) < 0.67
    has_cxr[-2:] = True  # the last two test stays: in both test sets (unreadable images are in train)
    stays = pd.DataFrame(
        {
            "stay_id": np.arange(30_000_000, 30_000_000 + n, dtype=np.int64),
            "subject_id": np.arange(n, dtype=np.int64),
            "split": split,
            "has_cxr": has_cxr,
            "dicom_id": [f"d{i:04d}" if h else None for i, h in enumerate(has_cxr)],
        }
    )
    prevalence = paper_table(3)["prevalence"].to_numpy()
    for k, lab in enumerate(PHENOTYPES):
        stays[lab] = (rng.random(n) < prevalence[k]).astype(np.int8)
        stays.loc[stays.index[-2:], lab] = np.array([0, 1], np.int8)  # both classes in both test sets
    (root / "cohort").mkdir(parents=True)
    stays.to_parquet(root / "cohort" / "stays.parquet", index=False)

    unreadable = set(stays.loc[has_cxr, "dicom_id"].iloc[[0, 5, 9]])
    cached = [d for d in stays["dicom_id"].dropna() if d not in unreadable]
    size = 4
    table = pa.table(
        {"dicom_id": cached, "row": np.arange(len(cached)), "source_path": [f"files/{d}.jpg" for d in cached]}
    )
    (root / "images").mkdir()
    pq.write_table(table.replace_schema_metadata({SIZE_KEY: str(size).encode()}), root / "images" / INDEX_FILE)
    np.zeros((len(cached), size, size), np.uint8).tofile(root / "images" / DATA_FILE)
    usable = has_cxr & stays["dicom_id"].isin(cached).to_numpy()
    return stays, usable


def make_predictions(root: Path, stays: pd.DataFrame, usable: np.ndarray, models: list[str], seeds=(0,)) -> list[Path]:
    test = (stays["split"] == "test").to_numpy()
    y_all = stays[list(PHENOTYPES)].to_numpy()
    paths = []
    for i, model in enumerate(models):
        for train_set in ("matched", "full"):
            for seed in seeds:
                for test_set, mask in (("full", test), ("matched", test & usable)):
                    y = y_all[mask]
                    p = fake_scores(y, seed=100 * i + 10 * seed + (train_set == "full"))
                    path = write_predictions(
                        root, model, train_set, seed, test_set, stays.loc[mask, "stay_id"].to_numpy(), y, p
                    )
                    if model in ("drfuse_paper", "drfuse"):
                        add_drfuse_outputs(path, len(y))
                    paths.append(path)
    return paths


def add_drfuse_outputs(path: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    df = pd.read_parquet(path)
    attn = rng.dirichlet([2, 1, 1], size=(n, len(PHENOTYPES))).astype(np.float32)
    for k, lab in enumerate(PHENOTYPES):
        for j, part in enumerate(("ehr", "shared", "cxr")):
            df[f"attn:{lab}:{part}"] = attn[:, k, j]
    df.to_parquet(path, index=False)
    reps = {
        name: rng.normal(j, 1.0, size=(n, 16)).astype(np.float32)
        for j, name in enumerate(("ehr_distinct", "ehr_shared", "cxr_distinct", "cxr_shared"))
    }
    np.savez(path.with_suffix(".npz"), **reps)


@pytest.fixture
def cfg(tiny_cfg_copy):
    tiny_cfg_copy["experiments"]["seeds"] = [0, 1]
    tiny_cfg_copy["evaluation"]["n_bootstrap"] = 30
    return tiny_cfg_copy


def test_tables_and_figures_end_to_end(tmp_path, cfg):
    stays, usable = make_results(tmp_path)
    # mmtm and daft are left out of the config: their tables rows must vanish without a crash
    cfg["experiments"]["table2"]["models"] = ["transformer", "medfuse", "medfuse2", "drfuse"]
    cfg["experiments"]["table4"]["ablations"] = ["drfuse_no_disentangle", "drfuse_mse", "drfuse_no_rank"]
    ablations = ["drfuse_no_disentangle", "drfuse_mse", "drfuse_no_rank"]
    models = ["resnet50", "transformer", "medfuse", "medfuse2", "drfuse_paper", "drfuse"]
    models += [a.replace("drfuse", "drfuse_paper") for a in ablations] + ablations
    paths = make_predictions(tmp_path, stays, usable, models, seeds=(0, 1))
    ev = cfg["evaluation"]
    evaluate(
        paths,
        tmp_path / "eval" / "bootstrap.parquet",
        ev["n_bootstrap"],
        ev["seed"],
        ev["ci"],
        resamples_path=tmp_path / "eval" / "resamples.parquet",
    )
    out = tmp_path / "tables"
    build_tables(tmp_path, cfg, out)

    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1.columns) == list(paper_table(1).columns)
    split = stays["split"].to_numpy()
    assert t1.iloc[0][["train", "val", "test"]].tolist() == [60, 12, 40]
    assert t1.iloc[1][["train", "val", "test"]].tolist() == [
        int((usable & (split == s)).sum()) for s in ("train", "val", "test")
    ]
    assert t1.iloc[1][["train", "val", "test"]].sum() == stays["has_cxr"].sum() - 3

    t2 = pd.read_csv(out / "table2.csv")
    assert list(t2.columns) == list(paper_table(2).columns) + ["prauc_std", "n_seeds"]
    assert t2["model"].unique().tolist() == [
        "Transformer",
        "MedFuse",
        "MedFuse-II",
        "DrFuse (paper recipe)",
        "DrFuse (our recipe)",
    ]
    assert len(t2) == 5 * 4 and (t2["n_seeds"] == 2).all()
    boot = pd.read_parquet(tmp_path / "eval" / "bootstrap.parquet")
    sel = boot.query(
        "model == 'medfuse2' and train_set == 'full' and test_set == 'matched' "
        "and label == 'macro' and metric == 'prauc'"
    )
    row = t2.query("model == 'MedFuse-II' and train_set == 'full' and test_set == 'matched'").iloc[0]
    assert row["prauc"] == pytest.approx(sel["estimate"].mean(), abs=1e-6)
    assert row["prauc_std"] == pytest.approx(sel["estimate"].std(ddof=1), abs=1e-6)
    # the pooled interval: percentile interval of the per-resample mean over the two seeds
    res = pd.read_parquet(tmp_path / "eval" / "resamples.parquet").query(
        "model == 'medfuse2' and train_set == 'full' and test_set == 'matched' and metric == 'prauc'"
    )
    per_resample = res.pivot(index="resample", columns="seed", values="value").mean(axis=1)
    assert row["ci_low"] == pytest.approx(np.quantile(per_resample, 0.025), abs=1e-6)
    assert row["ci_high"] == pytest.approx(np.quantile(per_resample, 0.975), abs=1e-6)
    # each seed's own number and interval stay in seeds.csv
    seeds = pd.read_csv(out / "seeds.csv").query(
        "table == 2 and model == 'MedFuse-II' and train_set == 'full' and test_set == 'matched'"
    )
    assert seeds.set_index("seed")["ci_low"].to_dict() == pytest.approx(
        sel.set_index("seed")["ci_low"].to_dict(), abs=1e-6
    )

    t3 = pd.read_csv(out / "table3.csv")
    # the paper's columns in its order, its DrFuse under the paper's recipe, then ours and the extras
    drfuse = ["DrFuse (paper recipe)", "DrFuse (our recipe)"]
    assert list(t3.columns) == list(paper_table(3).columns)[:-1] + drfuse + ["MedFuse rel", "MedFuse-II rel"] + [
        f"{d} rel" for d in drfuse
    ]
    assert t3["label"].tolist() == paper_table(3)["label"].tolist() + ["Average Rank"]
    matched_test = (split == "test") & usable
    assert t3["prevalence"].iloc[:25].to_numpy() == pytest.approx(
        stays.loc[matched_test, list(PHENOTYPES)].mean().to_numpy(), abs=1e-6
    )

    t4 = pd.read_csv(out / "table4.csv")
    diffs = [f"diff{part}_{t}" for t in ("matched", "full") for part in ("", "_ci_low", "_ci_high")]
    assert list(t4.columns) == list(paper_table(4).columns) + ["prauc_std_matched", "prauc_std_full", "n_seeds"] + diffs
    paper_variants = paper_table(4)["variant"].tolist()
    assert t4["variant"].tolist() == [f"{v} ({r})" for r in ("paper recipe", "our recipe") for v in paper_variants]
    # an ablation's difference: paired with DrFuse under its own recipe, the mean over seeds
    est = (
        boot.query("label == 'macro' and metric == 'prauc' and train_set == 'matched' and test_set == 'full'")
        .groupby("model")["estimate"]
        .mean()
    )
    row = t4.set_index("variant").loc["MSE alignment (our recipe)"]
    assert row["diff_full"] == pytest.approx(est["drfuse_mse"] - est["drfuse"], abs=1e-6)
    assert row["diff_ci_low_full"] <= row["diff_full"] <= row["diff_ci_high_full"]
    assert np.isnan(t4.set_index("variant").loc["DrFuse (paper recipe)", "diff_matched"])
    md4 = (out / "table4.md").read_text()
    assert (
        "0.446 (0.411, 0.501)" in md4.split("w/o disentangled (paper recipe)")[1].split("\n")[0]
    )  # the paper's, beside its recipe

    md2, tex3 = (out / "table2.md").read_text(), (out / "table3.tex").read_text()
    assert "built-in synthetic data" in md2
    paper_row = [line for line in md2.splitlines() if line.startswith("| DrFuse (paper recipe) | full | matched |")]
    assert paper_row and paper_row[0].endswith("| 0.470 (0.420, 0.512) |")  # the paper's DrFuse full->matched
    ours_row = [line for line in md2.splitlines() if line.startswith("| DrFuse (our recipe) | full | matched |")]
    assert ours_row and ours_row[0].endswith("| - |")  # nothing of the paper's beside our recipe
    assert (
        "Best epoch by validation macro PRAUC: Transformer, DrFuse (paper recipe), DrFuse (our recipe); "
        "by AUROC: MedFuse, MedFuse-II." in md2
    )
    assert r"\begin{tabular}" in tex3 and "Conduction disorders" in tex3 and "0.625" in tex3
    for i in (1, 2, 3, 4):
        for ext in ("csv", "md", "tex"):
            assert (out / f"table{i}.{ext}").stat().st_size > 60

    figures = tmp_path / "figures"
    build_figures(tmp_path, cfg, figures)
    for name in ("tsne.png", "attention.png", "pr_curves.png"):
        data = (figures / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_table3_arithmetic_reproduces_the_papers_ranks_and_differences(cfg):
    """Fed the paper's own per-label PRAUCs, Table 3 gives the paper's Average Rank row and the
    relative differences its text quotes (MedFuse -40.5 % on conduction disorders, DrFuse -1 % there
    and +24.2 % on other upper respiratory disease)."""
    paper = paper_table(3)
    ours_by_paper = {PAPER_LABELS.get(lab, lab): lab for lab in PHENOTYPES}
    assert list(ours_by_paper) == paper["label"].tolist()  # the paper's order is ours
    names = {
        "ResNet50": "resnet50",
        "Transformer": "transformer",
        "MedFuse": "medfuse",
        "MedFuse-II": "medfuse2",
        "DrFuse": "drfuse_paper",
    }
    cfg["experiments"]["recipes"] = ["paper"]
    rows = [
        {
            "model": names[m],
            "train_set": "matched",
            "test_set": "matched",
            "seed": s,
            "label": ours_by_paper[r["label"]],
            "metric": "prauc",
            "estimate": r[m] + (0.01 if s else -0.01),
        }
        for _, r in paper.iterrows()
        for m in PAPER3
        for s in (0, 1)
    ]
    prevalence = pd.Series(paper["prevalence"].to_numpy(), index=list(PHENOTYPES))
    t3 = table3(pd.DataFrame(rows), cfg, prevalence).set_index("label")
    ours = [*PAPER3[:-1], "DrFuse (paper recipe)"]
    assert t3.loc["Average Rank", ours].tolist() == pytest.approx([3.96, 3.24, 2.68, 2.84, 2.04], abs=1e-12)
    assert t3.loc["Conduction disorders", "MedFuse rel"] == pytest.approx((0.372 - 0.625) / 0.625)
    assert round(t3.loc["Conduction disorders", "MedFuse rel"], 3) == -0.405
    assert round(t3.loc["Conduction disorders", "DrFuse (paper recipe) rel"], 2) == -0.01
    assert round(t3.loc["Other upper respiratory disease", "DrFuse (paper recipe) rel"], 3) == 0.242
    assert t3.loc["Shock", "DrFuse (paper recipe)"] == pytest.approx(0.542)  # mean of the two seeds

    # without the uni-modal models: no reference, so no relative difference, ranks over what is left
    cfg["experiments"]["table3"]["models"] = ["medfuse", "drfuse"]
    t3b = table3(pd.DataFrame(rows), cfg, prevalence).set_index("label")
    assert list(t3b.columns) == [
        "prevalence",
        "MedFuse",
        "DrFuse (paper recipe)",
        "MedFuse rel",
        "DrFuse (paper recipe) rel",
    ]
    assert t3b["MedFuse rel"].isna().all()
    assert t3b.loc["Average Rank", ["MedFuse", "DrFuse (paper recipe)"]].sum() == pytest.approx(
        3.0 + (paper["MedFuse"] == paper["DrFuse"]).mean()
    )


def test_grid_search_reports_the_point_with_the_best_validation_prauc(tmp_path):
    import json

    from drfuse import config as config_mod
    from drfuse.evaluate.tables import use_grid_selection

    cfg = config_mod.load(Path(__file__).resolve().parents[1] / "config.yaml")
    grid = cfg["experiments"]["grid_search"]
    grid.update(enabled=True, lambda_jsd=[0.0, 1.0], lambda_orth=[1.0], lambda_attn=[0.5], lr=[1e-4])
    val = {
        ("drfuse-g00", "full"): 0.40,
        ("drfuse-g01", "full"): 0.45,
        ("drfuse-g00", "matched"): 0.52,
        ("drfuse-g01", "matched"): 0.50,
    }
    rows = []
    for (run, train_set), score in val.items():
        run_dir = tmp_path / "train" / run / train_set / "seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({"best_val_score": score}))
        for test_set in ("full", "matched"):
            rows.append(
                {"model": run, "train_set": train_set, "seed": 0, "test_set": test_set, "estimate": score + 0.01}
            )
    rows.append({"model": "drfuse", "train_set": "full", "seed": 0, "test_set": "full", "estimate": 0.1})
    rows.append({"model": "transformer", "train_set": "full", "seed": 0, "test_set": "full", "estimate": 0.3})

    boot = use_grid_selection(pd.DataFrame(rows), tmp_path, cfg, tmp_path / "tables")

    drfuse = boot[boot["model"] == "drfuse"].set_index(["train_set", "test_set"])["estimate"]
    assert drfuse[("full", "full")] == pytest.approx(0.46)  # drfuse-g01 won on full
    assert drfuse[("matched", "matched")] == pytest.approx(0.53)  # drfuse-g00 won on matched
    assert len(drfuse) == 4 and "transformer" in set(boot["model"])
    assert not boot["model"].str.startswith("drfuse-g").any()
    table = pd.read_csv(tmp_path / "tables" / "grid_search.csv")
    assert sorted(table.loc[table["selected"], "run"]) == ["drfuse-g00", "drfuse-g01"]
    assert set(table.columns) >= {"lambda_jsd", "lambda_orth", "lambda_attn", "lr", "val_score"}
