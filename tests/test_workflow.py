"""The workflow as a user runs it: the config schema, the experiment plan, a SLURM dry run, and the
whole DAG end to end on a tiny built-in dataset."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import polars.selectors as cs
import pytest
import yaml

from drfuse import config as config_mod
from drfuse.errors import UserError
from drfuse.experiments import experiment_runs, prediction_targets, resolve_run

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# The end-to-end run: every stage and every table of the default experiment plan, tiny sizes.
E2E_CONFIG = {
    "builtin_overrides": {
        "synth": {"n_subjects": 200, "image_size": [96, 80]},
        "images": {"cache_size": 40},
        "model": {"d_model": 16, "n_heads": 2, "ff_dim": 32, "dropout": 0.0, "backbone": "resnet18", "image_size": 36},
        "train": {"batch_size": 64, "epochs": 1, "patience": 1, "lr": 1e-3},
    },
    "evaluation": {"n_bootstrap": 20},
}


def run_snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)


def test_default_config_passes_the_schema_and_resolves_to_the_demo():
    from snakemake.utils import validate

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(raw, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    cfg = config_mod.resolve(raw)
    assert config_mod.uses_builtin_data(cfg)
    assert cfg["model"]["backbone"] == raw["builtin_overrides"]["model"]["backbone"]
    assert "builtin_overrides" not in cfg


def test_real_mimic_paths_keep_the_paper_settings():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["data"].update(mimic_iv_dir="/data/mimiciv/2.2", mimic_cxr_dir="/data/mimic-cxr-jpg/2.0.0")
    cfg = config_mod.resolve(raw)
    assert cfg["model"]["backbone"] == "resnet50" and cfg["model"]["d_model"] == 256
    assert cfg["train"]["batch_size"] == 16 and cfg["train"]["lr"] == 1e-4


def test_only_one_mimic_path_is_an_error_naming_both_settings():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["data"]["mimic_iv_dir"] = "/data/mimiciv"
    with pytest.raises(UserError, match="mimic_cxr_dir"):
        config_mod.resolve(raw)


def test_experiment_plan_covers_tables_2_to_4():
    cfg = config_mod.load(ROOT / "config.yaml")
    runs = experiment_runs(cfg)
    assert len(runs) == len(set(runs))
    names = {(m, t) for m, t, _ in runs}
    for model in ("transformer", "mmtm", "daft", "medfuse", "medfuse2", "drfuse"):
        assert {(model, "full"), (model, "matched")} <= names
    assert ("resnet50", "matched") in names and ("resnet50", "full") not in names
    for ablation in ("drfuse_no_disentangle", "drfuse_mse", "drfuse_no_rank"):
        assert (ablation, "matched") in names
    targets = prediction_targets(cfg)
    assert "predict/resnet50/matched/seed0/matched.parquet" in targets
    assert "predict/resnet50/matched/seed0/full.parquet" not in targets
    assert "predict/drfuse/full/seed0/matched.parquet" in targets


def test_grid_search_adds_one_run_per_grid_point_with_its_settings():
    cfg = config_mod.load(ROOT / "config.yaml")
    cfg["experiments"]["grid_search"]["enabled"] = True
    grid = [m for m, t, s in experiment_runs(cfg) if m.startswith("drfuse-g") and t == "full"]
    assert len(grid) == 3 * 3 * 3 * 2
    model, run_cfg = resolve_run("drfuse-g53", cfg)  # the last point: l1 = l2 = 1, l3 = 1, lr = 1e-3
    assert model == "drfuse"
    assert (run_cfg["model"]["lambda_jsd"], run_cfg["model"]["lambda_orth"], run_cfg["model"]["lambda_attn"]) == (1.0, 1.0, 1.0)
    assert run_cfg["train"]["lr"] == 1e-3
    with pytest.raises(UserError, match="grid"):
        resolve_run("drfuse-g54", cfg)


def test_slurm_profile_dry_run_schedules_the_whole_dag():
    result = run_snakemake("-n", "--profile", "profiles/slurm")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    for rule in ("synth", "ingest", "cohort", "features", "images", "train", "predict", "evaluate", "tables", "figures"):
        assert rule in out


def test_every_rule_has_a_log_and_a_benchmark():
    text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    n_rules = text.count("\nrule ") + text.count("\n    rule ")
    assert n_rules >= 10
    assert text.count("log:") == n_rules and text.count("benchmark:") == n_rules


def test_whole_workflow_end_to_end_on_tiny_builtin_data(tmp_path):
    results = tmp_path / "results"
    tiny = dict(E2E_CONFIG, data={"mimic_iv_dir": "", "mimic_cxr_dir": "", "results_dir": str(results)})
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny))
    result = run_snakemake("--cores", "2", "--configfile", str(config_file))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]

    for i in (1, 2, 3, 4):
        for ext in ("csv", "md", "tex"):
            path = results / "tables" / f"table{i}.{ext}"
            assert path.stat().st_size > 0, path
    paper = {i: pl.read_csv(ROOT / "drfuse" / "evaluate" / "paper" / f"table{i}.csv") for i in (1, 2, 3, 4)}
    for i in (1, 2, 3, 4):
        ours = pl.read_csv(results / "tables" / f"table{i}.csv")
        assert ours.columns[: len(paper[i].columns)] == paper[i].columns
        # Empty cells are allowed (a label without positives in a tiny test set, the rank row's
        # prevalence); every number present must be finite.
        values = [v for column in ours.select(cs.numeric()).iter_columns() for v in column.drop_nulls()]
        assert values and all(math.isfinite(v) for v in values), f"table{i}"
    table2 = pl.read_csv(results / "tables" / "table2.csv")
    assert table2.height == 24  # 6 models x 2 training sets x 2 test sets
    for name in ("tsne.png", "attention.png", "pr_curves.png"):
        png = results / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    check_planted_paired_and_seeds(results, seeds=[0], n_models=10)  # 7 models + 3 ablations

    # Nothing left to do: a second run finds every output up to date.
    again = run_snakemake("-n", "--cores", "2", "--configfile", str(config_file))
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    # A second seed, on a smaller plan: only the new seed's runs train, and every table pools both.
    two_seeds = dict(tiny, experiments={
        "seeds": [0, 1],
        "table2": {"models": ["transformer", "drfuse"], "train_sets": ["matched"]},
        "table3": {"models": ["resnet50", "transformer", "drfuse"], "train_set": "matched", "test_set": "matched"},
        "table4": {"ablations": [], "train_set": "matched"},
    })
    config_file.write_text(yaml.safe_dump(two_seeds))
    result = run_snakemake("--cores", "2", "--configfile", str(config_file))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    trained = sorted(p.parent.relative_to(results / "train").as_posix() for p in (results / "train").glob("*/*/seed1/best.pt"))
    assert trained == ["drfuse/matched/seed1", "resnet50/matched/seed1", "transformer/matched/seed1"]
    table2 = pl.read_csv(results / "tables" / "table2.csv")
    assert table2.height == 4 and (table2["n_seeds"] == 2).all()
    assert "pooled interval" in (results / "tables" / "table2.md").read_text()
    check_planted_paired_and_seeds(results, seeds=[0, 1], n_models=3)


def check_planted_paired_and_seeds(results: Path, seeds: list[int], n_models: int) -> None:
    """The planted-structure check, the paired bootstrap and each seed's numbers of a finished run."""
    key = pl.read_csv(results / "synth" / "answer_key" / "label_groups.csv")
    planted = pl.read_csv(results / "tables" / "planted.csv", infer_schema_length=None)
    groups = planted.filter(pl.col("section") == "group")
    assert set(groups["group"]) == set(key["group"])
    assert groups.select("model", "seed").unique().height == n_models * (len(seeds) + 1)  # + the mean
    criteria = planted.filter((pl.col("section") == "criterion") & (pl.col("model") == "DrFuse"))
    assert set(criteria["criterion"]) == {"attention_share", "prauc_ratio_cxr", "prauc_ratio_ehr"}
    assert criteria["value"].is_not_null().all() and criteria["passed"].is_not_null().all()
    assert "Acceptance criteria" in (results / "tables" / "planted.md").read_text()
    assert (results / "figures" / "planted.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    paired = pl.read_csv(results / "tables" / "paired.csv", schema_overrides={"seed": pl.String})
    assert set(paired["seed"]) == {*map(str, seeds), "pooled"}
    matched = paired.filter((pl.col("train_set") == "matched") & (pl.col("test_set") == "matched") & (pl.col("seed") == "pooled"))
    assert matched.height == n_models - 1 and "ResNet50" in matched["model"].to_list()
    assert paired.select(pl.col("ci_low") <= pl.col("ci_high")).to_series().all()
    per_seed = pl.read_csv(results / "tables" / "seeds.csv")
    assert sorted(per_seed["seed"].unique()) == seeds and set(per_seed["table"]) == {2, 3, 4}
    assert (results / "tables" / "seeds.md").stat().st_size > 0 and (results / "tables" / "paired.md").stat().st_size > 0


def test_grid_search_reports_the_point_with_the_best_validation_prauc(tmp_path):
    import json

    import pandas as pd

    from drfuse.evaluate.tables import use_grid_selection

    cfg = config_mod.load(ROOT / "config.yaml")
    grid = cfg["experiments"]["grid_search"]
    grid.update(enabled=True, lambda_jsd=[0.0, 1.0], lambda_orth=[1.0], lambda_attn=[0.5], lr=[1e-4])
    val = {("drfuse-g00", "full"): 0.40, ("drfuse-g01", "full"): 0.45, ("drfuse-g00", "matched"): 0.52, ("drfuse-g01", "matched"): 0.50}
    rows = []
    for (run, train_set), score in val.items():
        run_dir = tmp_path / "train" / run / train_set / "seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({"best_val_prauc": score}))
        for test_set in ("full", "matched"):
            rows.append({"model": run, "train_set": train_set, "seed": 0, "test_set": test_set, "estimate": score + 0.01})
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
    assert set(table.columns) >= {"lambda_jsd", "lambda_orth", "lambda_attn", "lr", "val_prauc"}
