"""The workflow as a user runs it: the configuration check, the experiment plan, the README's
SLURM / GPU / conda recipes as dry runs, lint and formatting, the pinned environments, hostile
inputs (paths with spaces and `$(...)`, bad settings, unwritable folders), and the whole DAG end to
end on a tiny built-in dataset, followed by the re-run checks on the finished run."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import polars as pl
import polars.selectors as cs
import pytest
import yaml

from drfuse import config as config_mod
from drfuse.errors import UserError
from drfuse.experiments import experiment_runs, mortality_runs, prediction_targets, resolve_run, run_priority

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
README = (ROOT / "README.md").read_text()

# The README's recipes, verbatim (test_readme_shows_the_tested_recipes keeps them in the README).
SLURM_ENV = "export DRFUSE_SLURM_ACCOUNT=myacct DRFUSE_SLURM_PARTITION=cpu DRFUSE_SLURM_GPU_PARTITION=gpu"
SLURM_RECIPE = "snakemake --profile profiles/slurm"
GPU_RECIPE = "snakemake --profile profiles/gpu --resources gpu=4"
GPU_LINE = "snakemake --cores all --resources gpu=4"  # the same without the profile
CONDA_RECIPE = "snakemake --cores all --sdm conda"
OVERRIDE_RECIPE = "snakemake --cores all --configfile my-run.yaml"

# The end-to-end run: every stage and every table of the default experiment plan, tiny sizes.
E2E_CONFIG = {
    "builtin_overrides": {
        "synth": {"n_subjects": 200, "image_size": [96, 80]},
        "images": {"cache_size": 40},
        "model": {"d_model": 16, "n_heads": 2, "ff_dim": 32, "dropout": 0.0, "backbone": "resnet18", "image_size": 36},
        "train": {"batch_size": 64, "epochs": 1, "patience": 1, "lr": 1e-3},
    },
    "recipe": {"warmup": {"train": {"cxr_warmup_epochs": 1}}},  # our recipe's warm-up in one epoch
    "evaluation": {"n_bootstrap": 20},
    # both tasks; in-hospital mortality with an image-only, an EHR, a fusion baseline and the DrFuse family
    "experiments": {
        "tasks": ["phenotyping", "mortality"],
        "mortality": {"models": ["resnet50", "transformer", "mmtm", "drfuse"], "train_sets": ["full", "matched"]},
    },
}


def run_snakemake(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=full_env)


def recipe_args(recipe: str) -> list[str]:
    assert recipe.startswith("snakemake ")
    return recipe.split()[1:]


def results_config(tmp_path: Path, results: Path | None = None) -> Path:
    """config.yaml with results in tmp (so tests never write into the checkout): a --configfile
    for Snakemake, a --config for the CLI."""
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*.yaml')))}.yaml"
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["data"]["results_dir"] = str(results or tmp_path / "results")
    path.write_text(yaml.safe_dump(cfg))
    return path


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """rule -> job count from a dry run's job stats ({} when nothing is to be done)."""
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def job_blocks(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """rule -> the dry run's printed blocks of its jobs (resources, threads, shell command)."""
    out = result.stdout + result.stderr
    blocks: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if m:
            blocks.setdefault(m.group(1), []).append(block)
    return blocks


def drfuse_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drfuse", *args], cwd=cwd, capture_output=True, text=True)


# ---------------------------------------------------------------- configuration


def test_default_config_passes_the_check_and_resolves_to_the_demo():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = config_mod.checked_resolve(raw)
    assert config_mod.uses_builtin_data(cfg)
    assert cfg["model"]["backbone"] == raw["builtin_overrides"]["model"]["backbone"]
    assert "builtin_overrides" not in cfg
    # the demo's from-scratch 48-px CNN trains with the flip only (docs/deviations.md, "built-in demo")
    assert cfg["train"]["augment"] == {"flip_p": 0.5, "degrees": 0.0, "translate": 0.0, "scale": [1.0, 1.0]}


def test_real_mimic_paths_keep_the_paper_settings():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["data"].update(mimic_iv_dir="/data/mimiciv/2.2", mimic_cxr_dir="/data/mimic-cxr-jpg/2.0.0")
    cfg = config_mod.checked_resolve(raw)
    assert cfg["model"]["backbone"] == "resnet50" and cfg["model"]["d_model"] == 256
    assert cfg["train"]["batch_size"] == 16 and cfg["train"]["lr"] == 1e-4
    assert cfg["train"]["augment"] == {"flip_p": 0.5, "degrees": 45.0, "translate": 0.15, "scale": [0.85, 1.15]}


def test_only_one_mimic_path_is_an_error_naming_both_settings():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["data"]["mimic_iv_dir"] = "/data/mimiciv"
    with pytest.raises(UserError, match="mimic_cxr_dir"):
        config_mod.checked_resolve(raw)


# (override, the one-line message) for the hostile-configuration probes of issue 14.
BAD_CONFIGS = [
    ({"train": {"epoch": 5}}, "train.epoch: not a setting; known settings here: adam_betas, amp, augment"),
    ({"train": {"lr": "fast"}}, "train.lr = 'fast': must be of type number"),
    (
        {"experiments": {"table2": {"models": ["drfuse", "drfuze"]}}},
        "experiments.table2.models[1] = 'drfuze': allowed values are drfuse, ",
    ),
    ({"per_model": {"drfuze": {"train": {"lr": 0.1}}}}, "per_model.drfuze: not a model name; allowed: drfuse, "),
    (
        {"builtin_overrides": {"train": {"epochs": "many"}}},
        "builtin_overrides.train.epochs = 'many': must be of type integer",
    ),
    (
        {"builtin_overrides": {"modle": {"d_model": 8}}},
        "builtin_overrides.modle: not a setting; known settings here: cohort, ",
    ),
    ({"images": {"max_missing_share": 2}}, "images.max_missing_share = 2: 2 is greater than the maximum of 1"),
    # issue 26: values the schema cannot judge alone, refused before any job too
    (
        {"split": {"fractions": [0.5, 0.5, 0.5]}},
        "split.fractions = [0.5, 0.5, 0.5]: expected the train, val and test shares, three numbers each in (0, 1) "
        "summing to 1 (they sum to 1.5)",
    ),
    (
        {"experiments": {"tasks": ["mortality", "sepsis"]}},
        "experiments.tasks[1] = 'sepsis': allowed values are phenotyping, mortality",
    ),
    (
        {"experiments": {"table4": {"ablations": ["drfuse_mse", "transformer"]}}},
        "experiments.table4.ablations: transformer is not a DrFuse-family model (Table 4 compares DrFuse with its "
        "ablations); allowed: drfuse, drfuse_no_disentangle, drfuse_mse, drfuse_no_rank",
    ),
]


@pytest.mark.parametrize("override,message", BAD_CONFIGS, ids=[m.split(":")[0] for _, m in BAD_CONFIGS])
def test_bad_settings_are_one_line_naming_the_setting_in_load_cli_and_snakemake(tmp_path, override, message):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad = config_mod.deep_merge(raw, override)
    bad["data"]["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError) as err:
        config_mod.load(path)
    assert message in str(err.value)
    # the CLI: exit 1, one line, before any work (no synth output)
    cli = drfuse_cli("--config", str(path), "synth", "--out", str(tmp_path / "synth"))
    assert cli.returncode == 1 and message in cli.stderr and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1 and not (tmp_path / "synth").exists()
    # Snakemake: refused before any job is planned
    dry = run_snakemake("-n", "--configfile", str(path))
    out = dry.stdout + dry.stderr
    assert dry.returncode != 0 and message in out and "Job stats" not in out


def test_a_partial_config_file_is_merged_over_config_yaml_by_the_cli_as_by_snakemake(tmp_path):
    """Issue-26 probe: `drfuse --config my-run.yaml` with the README's partial file failed with
    "'data' is a required property (and 21 more problem(s))"."""
    partial = tmp_path / "my-run.yaml"
    partial.write_text(yaml.safe_dump({"data": {"results_dir": str(tmp_path / "r")}, "evaluation": {"n_bootstrap": 7}}))
    cfg = config_mod.load(partial)
    project = config_mod.load(ROOT / "config.yaml")
    assert cfg["evaluation"]["n_bootstrap"] == 7 and cfg["data"]["results_dir"] == str(tmp_path / "r")
    assert {k: v for k, v in cfg.items() if k not in ("data", "evaluation")} == {
        k: v for k, v in project.items() if k not in ("data", "evaluation")
    }
    # the CLI gets past the configuration (to the stage's own input check), and says what it merges over
    cli = drfuse_cli(
        "--config", str(partial), "cohort", "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "c")
    )
    assert cli.returncode == 1 and "none.duckdb: database not found" in cli.stderr and "required" not in cli.stderr
    assert "merged over the project's config.yaml" in " ".join(drfuse_cli("--help").stdout.split())
    # a partial file is checked like any other: its bad setting named, with the file
    partial.write_text(yaml.safe_dump({"train": {"epoch": 5}}))
    with pytest.raises(UserError, match=rf"^{re.escape(str(partial))}: train.epoch: not a setting"):
        config_mod.load(partial)
    # a complete file stands alone: one without per_model entries gets none back from config.yaml
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["per_model"] = {}
    del raw["builtin_overrides"]["per_model"]
    complete = tmp_path / "complete.yaml"
    complete.write_text(yaml.safe_dump(raw))
    assert config_mod.load(complete).get("per_model") == {}


def test_strings_from_the_command_line_become_numbers_where_the_schema_says_so(tmp_path):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["train"].update(epochs="5", lr="1e-3", amp="false")
    raw["experiments"]["seeds"] = ["0", "1"]
    cfg = config_mod.check(raw)
    assert (cfg["train"]["epochs"], cfg["train"]["lr"], cfg["train"]["amp"]) == (5, 1e-3, False)
    assert cfg["experiments"]["seeds"] == [0, 1] and cfg["data"]["results_dir"] == "results"
    # Snakemake passes nested --config values as strings ("5"): accepted
    conf = results_config(tmp_path)
    dry = run_snakemake("-n", "--configfile", str(conf), "--config", "evaluation={n_bootstrap: 50, seed: 1, ci: 0.9}")
    assert planned_jobs(dry)["evaluate"] == 1


def test_experiment_plan_covers_tables_2_to_4():
    cfg = config_mod.load(ROOT / "config.yaml")
    runs = experiment_runs(cfg)
    assert len(runs) == len(set(runs))
    names = {(m, t) for m, t, _ in runs}
    for model in ("transformer", "mmtm", "daft", "medfuse", "medfuse2", "drfuse_paper", "drfuse"):
        assert {(model, "full"), (model, "matched")} <= names
    assert ("resnet50", "matched") in names and ("resnet50", "full") not in names
    for ablation in ("drfuse_no_disentangle", "drfuse_mse", "drfuse_no_rank"):  # under both recipes
        assert {(ablation, "matched"), (ablation.replace("drfuse", "drfuse_paper"), "matched")} <= names
    assert len(names) == 7 * 2 + 1 + 6
    targets = prediction_targets(cfg)
    assert "predict/resnet50/matched/seed0/matched.parquet" in targets
    assert "predict/resnet50/matched/seed0/full.parquet" not in targets
    assert "predict/drfuse/full/seed0/matched.parquet" in targets


def test_mortality_plan_runs_every_model_on_its_training_sets():
    """experiments.mortality: each model (the DrFuse family under each recipe) on each training set,
    an image-only model on the matched set only; its predictions under mortality/; none when the
    task is off, whatever else the plan holds."""
    cfg = config_mod.load(ROOT / "config.yaml")
    runs = mortality_runs(cfg)
    names = {(m, t) for m, t, _ in runs}
    for model in ("transformer", "mmtm", "daft", "medfuse", "medfuse2", "drfuse_paper", "drfuse"):
        assert {(model, "full"), (model, "matched")} <= names
    assert ("resnet50", "matched") in names and len(names) == 7 * 2 + 1 and len(runs) == len(set(runs))
    targets = prediction_targets(cfg, "mortality")
    assert "mortality/predict/resnet50/matched/seed0/matched.parquet" in targets and len(targets) == 14 * 2 + 1
    assert not any(t.startswith("mortality/") for t in prediction_targets(cfg))  # phenotyping's own
    off = config_mod.deep_merge(cfg, {"experiments": {"tasks": ["phenotyping"]}})
    assert mortality_runs(off) == [] and prediction_targets(off, "mortality") == []
    assert experiment_runs(off) == experiment_runs(cfg)


def test_grid_search_adds_one_run_per_grid_point_with_its_settings():
    cfg = config_mod.load(ROOT / "config.yaml")
    cfg["experiments"]["grid_search"]["enabled"] = True
    grid = [m for m, t, s in experiment_runs(cfg) if m.startswith("drfuse-g") and t == "full"]
    assert len(grid) == 3 * 3 * 3 * 2
    model, run_cfg = resolve_run("drfuse-g53", cfg)  # the last point: l1 = l2 = 1, l3 = 1, lr = 1e-3
    assert model == "drfuse"
    assert (run_cfg["model"]["lambda_jsd"], run_cfg["model"]["lambda_orth"], run_cfg["model"]["lambda_attn"]) == (
        1.0,
        1.0,
        1.0,
    )
    assert run_cfg["train"]["lr"] == 1e-3
    with pytest.raises(UserError, match="grid"):
        resolve_run("drfuse-g54", cfg)


# ---------------------------------------------------------------- profiles and recipes


def test_readme_shows_the_tested_recipes():
    for recipe in (SLURM_ENV, SLURM_RECIPE, GPU_RECIPE, GPU_LINE, CONDA_RECIPE, OVERRIDE_RECIPE):
        assert recipe in README, recipe
    # nothing on the SLURM command line replaces the profile's resources
    assert "--default-resources slurm" not in README and "--set-resources train:" not in README


def test_default_profile_holds_nothing_about_the_machine():
    # profiles/default is loaded on top of every --profile: a key here would override the cluster's
    keys = set(yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text()))
    assert not keys & {"cores", "jobs", "executor", "resources", "default-resources", "set-resources", "set-threads"}


def test_slurm_recipe_dry_run_keeps_the_profile_resources_and_threads(tmp_path):
    env = dict(re.findall(r"(\w+)=(\S+)", SLURM_ENV))
    dry = run_snakemake(*recipe_args(SLURM_RECIPE), "-n", "--configfile", str(results_config(tmp_path)), env=env)
    jobs = planned_jobs(dry)
    assert jobs["train"] + jobs["train_image_only"] == 21 and "predict" not in jobs  # a training job predicts too
    blocks = job_blocks(dry)
    expected = {  # rule -> what the profile sets (README recipe: account and partitions from env)
        "synth": ("threads: 8", "mem_mb=8000", "runtime=60", "slurm_partition=cpu"),
        "ingest": ("threads: 8", "mem_mb=24000", "runtime=120", "slurm_partition=cpu"),
        "cohort": ("threads: 8", "mem_mb=16000", "runtime=60", "slurm_partition=cpu"),
        "features": ("threads: 8", "mem_mb=16000", "runtime=60", "slurm_partition=cpu"),
        "images": ("threads: 16", "runtime=120", "slurm_partition=cpu"),
        "warmup": ("threads: 8", "mem_mb=32000", "runtime=720", "gpu=1", "slurm_partition=gpu"),
        "train": ("threads: 8", "mem_mb=32000", "runtime=720", "gpu=1", "slurm_partition=gpu"),
        "train_image_only": ("threads: 8", "mem_mb=32000", "runtime=720", "gpu=1", "slurm_partition=gpu"),
        "mortality_cohort": ("threads: 8", "mem_mb=16000", "runtime=60", "slurm_partition=cpu"),
        "warmup_mortality": ("threads: 8", "mem_mb=32000", "runtime=720", "gpu=1", "slurm_partition=gpu"),
        "train_mortality": ("threads: 8", "mem_mb=32000", "runtime=720", "gpu=1", "slurm_partition=gpu"),
        "train_image_only_mortality": ("threads: 8", "mem_mb=32000", "runtime=720", "gpu=1", "slurm_partition=gpu"),
        # the bootstrap and the t-SNE take minutes on MIMIC: cluster jobs, not the submit host's
        "evaluate": ("mem_mb=8000", "runtime=60", "slurm_partition=cpu"),
        "figures": ("mem_mb=8000", "runtime=60", "slurm_partition=cpu"),
        "evaluate_mortality": ("mem_mb=8000", "runtime=60", "slurm_partition=cpu"),
        "figures_mortality": ("mem_mb=8000", "runtime=60", "slurm_partition=cpu"),
    }
    for rule, wanted in expected.items():
        for block in blocks[rule]:
            for item in (*wanted, "slurm_account=myacct"):
                assert item in block, (rule, item, block)
    assert "--threads 8 --gpus 1" in blocks["train"][0]  # a GPU job trains on CUDA or fails
    assert "--threads 8 --memory-mb 24000" in blocks["ingest"][0]  # DuckDB gets the job's share
    assert "--threads 8 --memory-mb 16000" in blocks["cohort"][0]
    assert "--threads 8 " in blocks["synth"][0]  # not the profile's 64 cores
    # light rules run on the submit host (a dry run does not say which): the tables, the planted
    # check and the named targets, which run nothing
    local = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.findall(r"^ *localrules:\n((?: +\w+,\n)+)", path.read_text(), re.M):
            local.update(re.findall(r"\w+", block))
    assert local == {
        "all",
        "tables",
        "planted",
        "table1",
        "table2",
        "table3",
        "table4",
        "predictions",
        "report",
        "tables_mortality",
        "planted_mortality",
    }
    # a job that fails (killed at its time limit) is submitted again with more time: a training run
    # resumes from its last.pt
    assert yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())["retries"] >= 1
    again = job_blocks(
        run_snakemake(
            *recipe_args(SLURM_RECIPE), "-n", "--attempt", "2", "--configfile", str(results_config(tmp_path)), env=env
        )
    )
    for rule, runtime in (
        ("train", 1440),
        ("warmup", 1440),
        ("ingest", 240),
        ("cohort", 120),
        ("evaluate", 120),
        ("train_mortality", 1440),
    ):
        assert f"runtime={runtime}," in again[rule][0], (rule, again[rule][0])


def _gpu_lines(blocks: dict, rule: str) -> set[tuple[str | None, str]]:
    """(the `gpu` resource, the `--gpus` flag) of each of a dry run's jobs of a rule."""
    found = set()
    for block in blocks[rule]:
        resource = re.search(r"^\s+resources: .*?\bgpu=(\d+)", block, re.M)
        found.add((resource.group(1) if resource else None, re.search(r"--gpus (\d+)", block).group(1)))
    return found


def test_gpu_recipes_with_and_without_the_profile_give_every_training_job_one_gpu(tmp_path):
    conf = results_config(tmp_path)
    for recipe in (GPU_RECIPE, GPU_LINE):
        blocks = job_blocks(run_snakemake(*recipe_args(recipe), "-n", "--configfile", str(conf)))
        for rule in (
            "warmup",
            "train",
            "train_image_only",
            "warmup_mortality",
            "train_mortality",
            "train_image_only_mortality",
        ):
            assert _gpu_lines(blocks, rule) == {("1", "1")}, (recipe, rule)  # counted, and trains on CUDA or fails
        for rule in ("ingest", "cohort", "features", "images", "evaluate", "mortality_cohort", "evaluate_mortality"):
            assert not any(re.search(r"resources: .*\bgpu=", b) for b in blocks[rule]), rule
    # without a count nothing asks for a GPU: device auto may fall back (with a warning)
    plain = job_blocks(run_snakemake("-n", "--cores", "2", "--configfile", str(conf)))
    assert _gpu_lines(plain, "train") == _gpu_lines(plain, "warmup") == {("0", "0")}
    # a run set to the CPU is never counted as a GPU job, the others still are
    cpu_mmtm = tmp_path / "cpu-mmtm.yaml"
    cpu_mmtm.write_text(yaml.safe_dump({"per_model": {"mmtm": {"train": {"device": "cpu"}}}}))
    dry = run_snakemake(*recipe_args(GPU_LINE), "-n", "--configfile", str(conf), str(cpu_mmtm))
    by_model: dict[str, set] = {}
    for block in job_blocks(dry)["train"]:
        model = re.search(r"wildcards: model=(\w+)", block).group(1)
        by_model.setdefault(model, set()).update(_gpu_lines({"train": [block]}, "train"))
    assert by_model.pop("mmtm") == {("0", "0")} and by_model and all(v == {("1", "1")} for v in by_model.values())


def test_every_rule_is_listed_with_a_one_line_description(tmp_path):
    """`snakemake --list-rules` (the rules' docstrings), the named targets among them."""
    listed = run_snakemake("--list-rules", "--configfile", str(results_config(tmp_path))).stdout.splitlines()
    described = dict(re.fullmatch(r"(\w+) \((.+)\)", line).groups() for line in listed)
    # 12 phenotyping stage rules (synth, planted: built-in data), 8 of the mortality task, all, 6 named targets
    assert len(described) == len(listed) == 27
    assert {
        "all",
        "synth",
        "train",
        "train_image_only",
        "warmup",
        "evaluate",
        "tables",
        "figures",
        "planted",
        "table1",
        "table2",
        "table3",
        "table4",
        "predictions",
        "report",
    } <= set(described)
    assert "matched test set" in described["train_image_only"] and "both test sets" in described["train"]
    assert (
        "in-hospital mortality" in described["train_mortality"] and "AUROC and AUPRC" in described["tables_mortality"]
    )


def test_named_targets_build_what_they_name(tmp_path):
    conf = str(results_config(tmp_path))
    table2 = planned_jobs(run_snakemake("table2", "-n", "--cores", "2", "--configfile", conf))
    assert table2["table2"] == table2["tables"] == table2["evaluate"] == 1 and "figures" not in table2
    predictions = planned_jobs(run_snakemake("predictions", "-n", "--cores", "2", "--configfile", conf))
    assert predictions["train"] + predictions["train_image_only"] == 21 and "evaluate" not in predictions
    assert (
        predictions["train_mortality"] + predictions["train_image_only_mortality"] == 15
        and "evaluate_mortality" not in predictions
    )
    assert "snakemake --cores all table2" in README and "snakemake --cores all predictions" in README
    report = planned_jobs(run_snakemake("report", "-n", "--cores", "2", "--configfile", conf))
    everything = planned_jobs(run_snakemake("-n", "--cores", "2", "--configfile", conf))
    assert {k: v for k, v in report.items() if k != "report"} == {k: v for k, v in everything.items() if k != "all"}
    assert "snakemake --cores all report" in README


def test_training_jobs_are_scheduled_longest_first(tmp_path):
    """Full-set runs before matched-set runs, the DrFuse family first within each (run_priority)."""
    blocks = job_blocks(run_snakemake("-n", "--cores", "2", "--configfile", str(results_config(tmp_path))))
    priority = {}
    for block in blocks["train"] + blocks["train_image_only"]:
        run = re.search(r"wildcards: model=(\w+), train_set=(\w+)", block).groups()
        found = re.search(r"^\s+priority: (\d+)$", block, re.M)
        priority[run] = int(found.group(1)) if found else 0
    assert len(priority) == 21
    assert priority[("drfuse", "full")] == priority[("drfuse_paper", "full")] == 3
    assert {priority[(m, "full")] for m in ("transformer", "mmtm", "daft", "medfuse", "medfuse2")} == {2}
    assert {priority[(m, "matched")] for m in DRFUSE_FAMILY} == {1}
    assert {priority[(m, "matched")] for m in ("transformer", "resnet50", "mmtm", "daft", "medfuse", "medfuse2")} == {0}
    assert run_priority("drfuse-g07", "full") == 3  # a grid run is DrFuse


def test_conda_recipe_runs_the_checkout_with_the_environments_python(tmp_path):
    # No conda on the test machine: a stand-in answers the three queries Snakemake makes while
    # planning (version, info, channel priority); nothing is created in a dry run.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "conda").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "--version") echo "conda 24.11.0";;\n'
        f'  "info --json") echo \'{{"conda_version": "24.11.0", "envs_dirs": ["{tmp_path}/envs"], '
        f'"platform": "linux-64", "conda_prefix": "{tmp_path}/conda", "root_prefix": "{tmp_path}/conda"}}\';;\n'
        '  "config --get channel_priority --json") echo \'{"get": {"channel_priority": "strict"}}\';;\n'
        "  *) exit 1;;\n"
        "esac\n"
    )
    (fake / "conda").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    dry = run_snakemake(*recipe_args(CONDA_RECIPE), "-n", "--configfile", str(results_config(tmp_path)), env=env)
    assert planned_jobs(dry)["train"] == 20
    for blocks in job_blocks(dry).values():
        for block in blocks:
            if "Shell command:" in block and "drfuse" in block:
                assert f"PYTHONPATH={ROOT} python -m drfuse" in block, block


def _pins(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"([A-Za-z0-9_.\-]+)==([0-9][^\s\\]*)", text)}


def test_environments_list_the_pins_of_requirements():
    req = _pins((ROOT / "requirements.txt").read_text())
    env_text = (ROOT / "envs" / "drfuse.yaml").read_text()
    env = _pins(env_text)
    workflow_only = {"snakemake", "snakemake-executor-plugin-slurm"}
    assert env == {k: v for k, v in req.items() if k not in workflow_only}
    assert "-e " not in env_text and ".." not in env_text  # no relative editable install
    deps = [
        re.split(r"[<>=\[]", d)[0].lower()
        for d in __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ]
    assert set(deps) <= set(req), set(deps) - set(req)  # every dependency is pinned
    # pylibjpeg-libjpeg is GPLv3: in the optional dicom extra only, never in a default, test or image install
    extras = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "pylibjpeg" not in " ".join(deps) and "pylibjpeg" not in " ".join(extras["test"])
    assert "pylibjpeg-libjpeg>=2.1" in extras["dicom"] and "pylibjpeg" not in (ROOT / "requirements.txt").read_text()
    assert "-e .[test]" in (ROOT / "requirements.txt").read_text()


def _fake_command(folder: Path, name: str, script: str) -> dict:
    """A stand-in executable `name` in folder; the environment that puts it (and this Python) first."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("#!/bin/sh\n" + script)
    (folder / name).chmod(0o755)
    return {"PATH": os.pathsep.join([str(folder), str(Path(sys.executable).parent), os.environ["PATH"]])}


def test_containers_install_every_pin_of_requirements_and_torch_from_the_chosen_index(tmp_path):
    """Dockerfile and drfuse.def install through envs/container-install.sh, run here with a
    stand-in pip that records what it is asked to install."""
    record = tmp_path / "pip.log"
    env = _fake_command(
        tmp_path / "bin",
        "pip",
        f'echo "ARGS $*" >> {record}\nfor a; do if [ -f "$a" ]; then cat "$a" >> {record}; fi; done\n',
    )
    cpu_index = "https://download.pytorch.org/whl/cpu"
    result = subprocess.run(
        ["sh", str(ROOT / "envs" / "container-install.sh"), cpu_index],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    calls = record.read_text().split("ARGS ")[1:]
    assert len(calls) == 2
    assert "--index-url" not in calls[0] and f"--index-url {cpu_index} -r" in calls[1]
    installed = [_pins(call) for call in calls]
    assert set(installed[1]) == {"torch", "torchvision"} and installed[0].keys().isdisjoint(installed[1])
    assert {**installed[0], **installed[1]} == _pins((ROOT / "requirements.txt").read_text())
    assert all("-e " not in call and "pylibjpeg" not in call for call in calls)  # no test extras, no GPLv3 code
    for name in ("Dockerfile", "drfuse.def"):
        text = (ROOT / name).read_text()
        assert "envs/container-install.sh" in text and "pip install --no-cache-dir --no-deps /opt/drfuse" in text, name
        assert "TORCH_INDEX=https://pypi.org/simple" in text and "driver >= 580" in text, name
    assert re.search(r"^%files\n(    \S+ /opt/drfuse/\S+\n)+", (ROOT / "drfuse.def").read_text(), re.M)


APPTAINER_BUILD = "apptainer build drfuse.sif drfuse.def"
APPTAINER_RECIPE = (
    "snakemake --cores all --resources gpu=4 --configfile my-run.yaml --sdm apptainer "
    '--apptainer-args "--nv --bind /data/mimiciv/2.2,/data/mimic-cxr-jpg/2.0.0"'
)


def test_apptainer_recipe_runs_jobs_in_the_image_with_the_gpu_driver_and_the_data_bound(tmp_path):
    """The README's line, run on one stage with a stand-in `apptainer` that records how Snakemake
    calls it and then runs the job's command on the host."""
    assert APPTAINER_BUILD in README and APPTAINER_RECIPE in README and "`container: drfuse.sif`" in README
    record = tmp_path / "apptainer.log"
    env = _fake_command(
        tmp_path / "bin",
        "apptainer",
        'if [ "$1" = --version ]; then echo "apptainer version 1.3.4"; exit 0; fi\n'
        f'printf "%s\\n" "$*" >> {record}\n'
        "for command; do :; done\n"  # the last argument: the job's command
        'exec bash -c "$command"\n',
    )
    image = tmp_path / "drfuse.sif"
    image.write_text("a stand-in image\n")
    results = tmp_path / "results"
    run_config = tmp_path / "my-run.yaml"
    run_config.write_text(
        yaml.safe_dump(
            {
                "container": str(image),
                "data": {"results_dir": str(results)},
                "builtin_overrides": {"synth": {"n_subjects": 60, "image_size": [48, 40]}},
            }
        )
    )
    args = [str(run_config) if a == "my-run.yaml" else a for a in shlex.split(APPTAINER_RECIPE)[1:]]
    result = run_snakemake(*args, str(results / "synth" / "answer_key" / "label_groups.csv"), env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    calls = record.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith(f"exec --home {ROOT}")
    assert " --nv --bind /data/mimiciv/2.2,/data/mimic-cxr-jpg/2.0.0 " in calls[0] and f" {image} bash -c " in calls[0]
    assert f"PYTHONPATH={ROOT} python -m drfuse --config" in calls[0] and " synth --out " in calls[0]
    assert (results / "synth" / "answer_key" / "label_groups.csv").is_file()


def test_every_rule_has_a_log_a_benchmark_and_the_conda_env():
    """Every rule that runs a command; the named targets (targets.smk) run none."""
    text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    n_rules = len(re.findall(r"^\s+shell:$", text, re.M))
    assert n_rules >= 10
    for directive in ("log", "benchmark", "conda"):
        assert len(re.findall(rf"^\s+{directive}:$", text, re.M)) == n_rules, directive


# Lint findings kept on purpose (justified beside the rules, workflow/rules/data.smk): the command
# prefix {DRFUSE} is not a param, since params decide what re-runs.
KEPT_LINT = "Shell command directly uses variable DRFUSE from outside of the rule"


def test_lint_has_no_finding_but_the_justified_one(tmp_path):
    result = run_snakemake("--lint", "--configfile", str(results_config(tmp_path)))
    out = result.stdout + result.stderr
    findings = []
    subject = None
    for line in out.splitlines():
        if line.startswith("Lints for "):
            subject = line
        elif line.startswith("    * ") and subject:
            findings.append((subject, line[6:].rstrip(":")))
    assert findings, out[-3000:]  # the parser read the report
    unexpected = [f for f in findings if f[1] != KEPT_LINT]
    assert not unexpected, unexpected
    # one per shell rule (synth, ingest, cohort, features, images, warmup, train, train_image_only,
    # evaluate, tables, figures, planted, and the mortality task's 8), none hidden elsewhere
    assert len(findings) == len({s for s, _ in findings}) == 20


def test_snakefmt_check_is_clean():
    pytest.importorskip("snakefmt", reason="snakefmt is in the test extras: pip install -e .[test]")
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- hostile paths, unwritable folders


def test_unwritable_results_dir_is_one_line_in_cli_and_snakemake(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    conf = results_config(tmp_path, results=blocker / "results")
    cli = drfuse_cli("--config", str(conf), "synth", "--out", str(blocker / "results" / "synth"))
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1 and str(blocker / "results") in cli.stderr
    dry = run_snakemake("-n", "--configfile", str(conf))
    out = dry.stdout + dry.stderr
    assert (
        dry.returncode != 0
        and f"data.results_dir: cannot create {blocker / 'results' / 'config'}: Not a directory" in out
    )


def test_a_second_workflow_run_into_the_same_results_folder_fails_naming_the_first(tmp_path):
    """Issue-26 probe: two checkouts with one absolute results_dir ran at once; one failed with
    "mimiciv.duckdb: database not found" after the other re-ingested."""
    import socket

    from drfuse.train import locks

    results = tmp_path / "results"
    conf = results_config(tmp_path, results=results)
    fd = locks.take_results_lock(results)  # this process stands for the first run
    try:
        run = run_snakemake("--cores", "1", "--configfile", str(conf))
        out = run.stdout + run.stderr
        assert run.returncode != 0 and "Job stats" in out  # planned, then refused before its first job
        assert f"data.results_dir {results} is in use by another workflow run (pid {os.getpid()} on host " in out
        assert f"{socket.gethostname()}, started " in out and str(results / ".workflow.lock") in out
        assert not (results / "synth").exists() and not (results / "logs").exists()
        assert planned_jobs(run_snakemake("-n", "--configfile", str(conf)))["synth"] == 1  # a dry run takes no lock
    finally:
        locks.unlock(fd)
    assert locks.holder(results / ".workflow.lock").startswith(f"pid {os.getpid()} ")  # nobody took it meanwhile


def _mimic_copy(root: Path, demo_subset_dir: Path) -> tuple[Path, Path]:
    """A writable copy of the vendored MIMIC-IV demo subset and CXR metadata for its stays."""
    import gzip
    import shutil

    iv, cxr = root / "mimic-iv", root / "mimic-cxr-jpg"
    shutil.copytree(demo_subset_dir, iv)
    cxr.mkdir()
    stays = pl.read_csv(iv / "icu" / "icustays.csv.gz", try_parse_dates=True)
    with gzip.open(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as fh:
        fh.write("dicom_id,subject_id,study_id,ViewPosition,StudyDate,StudyTime\n")
        for k, (subject, intime) in enumerate(stays.select("subject_id", "intime").iter_rows()):
            fh.write(f"d{k},{subject},{50_000_000 + k},AP,{intime:%Y%m%d},{intime:%H%M%S}.000\n")
    return iv, cxr


def test_a_mimic_file_changed_added_or_removed_in_place_reruns_ingest(tmp_path, demo_subset_dir):
    """Issue-26 probe: a MIMIC file edited or removed in place left `snakemake -n` saying "Nothing to
    be done" (the folders are ancient() inputs): stale results, a missing table unnoticed."""
    iv, cxr = _mimic_copy(tmp_path, demo_subset_dir)
    results = tmp_path / "results"
    conf = tmp_path / "my-run.yaml"
    conf.write_text(
        yaml.safe_dump({"data": {"mimic_iv_dir": str(iv), "mimic_cxr_dir": str(cxr), "results_dir": str(results)}})
    )
    db = str(results / "mimiciv.duckdb")
    run = run_snakemake(db, "--cores", "1", "--configfile", str(conf))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    manifest = json.loads((results / "ingest" / "manifest.json").read_text())
    patients = iv / "hosp" / "patients.csv.gz"
    assert manifest["source_files"][str(patients)] == [patients.stat().st_size, patients.stat().st_mtime_ns]
    assert str(cxr / "mimic-cxr-2.0.0-metadata.csv.gz") in manifest["source_files"]

    def dry() -> dict[str, int]:
        return planned_jobs(run_snakemake(db, "-n", "--configfile", str(conf)))

    assert dry() == {}  # unchanged: nothing to do
    stat = patients.stat()
    os.utime(patients, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # edited in place (same size)
    assert dry() == {"ingest": 1}
    os.utime(patients, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dry() == {}
    (iv / "hosp" / "admissions.csv").write_text("subject_id\n")  # a second candidate for a table: added
    assert dry() == {"ingest": 1}
    (iv / "hosp" / "admissions.csv").unlink()
    (iv / "icu" / "chartevents.csv.gz").unlink()  # removed
    assert dry() == {"ingest": 1}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The whole workflow once, into a results folder whose path holds a space and `$(...)`."""
    base = tmp_path_factory.mktemp("e2e")
    marker = base / "pwned"
    results = base / "my results" / f"x$(touch {marker})"
    config_file = base / "tiny.yaml"
    tiny = dict(E2E_CONFIG, data={"mimic_iv_dir": "", "mimic_cxr_dir": "", "results_dir": str(results)})
    config_file.write_text(yaml.safe_dump(tiny))
    result = run_snakemake("--cores", "2", "--configfile", str(config_file))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return {"results": results, "config": config_file, "marker": marker, "base": base}


def test_whole_workflow_end_to_end_on_tiny_builtin_data(finished_run):
    results = finished_run["results"]
    assert results.is_dir() and "$(" in str(results) and " " in str(results)
    assert not finished_run["marker"].exists(), "a path in a shell command ran as a command"
    for i in (1, 2, 3, 4):
        for ext in ("csv", "md", "tex"):
            path = results / "tables" / f"table{i}.{ext}"
            assert path.stat().st_size > 0, path
    paper = {i: pl.read_csv(ROOT / "drfuse" / "evaluate" / "paper" / f"table{i}.csv") for i in (1, 2, 3, 4)}
    # the paper's columns in its order; Table 3 names its model columns as the runs, the paper's
    # DrFuse column is DrFuse's under the paper's recipe
    paper[3] = paper[3].rename({"DrFuse": "DrFuse (paper recipe)"})
    for i in (1, 2, 3, 4):
        ours = pl.read_csv(results / "tables" / f"table{i}.csv")
        assert ours.columns[: len(paper[i].columns)] == paper[i].columns
        # Empty cells are allowed (a label without positives in a tiny test set, the rank row's
        # prevalence); every number present must be finite.
        values = [v for column in ours.select(cs.numeric()).iter_columns() for v in column.drop_nulls()]
        assert values and all(math.isfinite(v) for v in values), f"table{i}"
    label_modes = pl.read_csv(results / "tables" / "label_modes.csv")  # written by the cohort rule
    assert label_modes.height == 25 and label_modes["prevalence_ahrq"].sum() > 0
    table2 = pl.read_csv(results / "tables" / "table2.csv")
    assert table2.height == 28  # 7 models (DrFuse under both recipes) x 2 training sets x 2 test sets
    for name in ("tsne.png", "attention.png", "pr_curves.png"):
        png = results / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # the cohort's CXR file list: every has_cxr stay's path once, as the images stage reads them
    stays = pl.read_parquet(results / "cohort" / "stays.parquet")
    listed = (results / "cohort" / "cxr_files.txt").read_text().splitlines()
    assert listed == sorted(set(stays.filter(pl.col("has_cxr"))["cxr_path"].to_list())) and listed
    assert all((results / "synth" / "mimic-cxr-jpg" / p).is_file() for p in listed)
    # provenance: the data and the images that could not be used, in the tables and the report
    note = (results / "tables" / "table1.md").read_text()
    assert "built-in synthetic data" in note and "cohort images missing or unreadable" in note
    assert "images missing or unreadable: 0 of" in (results / "tables" / "provenance.md").read_text()
    # a training job on a machine without CUDA says so loudly in its log
    log = (results / "logs" / "train" / "drfuse.matched.seed0.log").read_text()
    assert "TRAINING ON THE CPU" in log
    # each training job predicted both test sets with its best checkpoint
    assert (results / "predict" / "drfuse" / "full" / "seed0" / "full.parquet").is_file()
    assert (results / "predict" / "drfuse" / "full" / "seed0" / "matched.npz").is_file()
    # the DrFuse family started after the one shared image warm-up, whose epoch is their first
    warmup = pl.read_csv(results / "warmup" / "seed0" / "metrics.csv")
    assert warmup["epoch"].to_list() == [1]
    for model, train_set in (("drfuse", "full"), ("drfuse", "matched"), ("drfuse_no_rank", "matched")):
        run_dir = results / "train" / model / train_set / "seed0"
        run = json.loads((run_dir / "run.json").read_text())
        assert run["warm_start"] == str(results / "warmup" / "seed0" / "warmup.pt"), (model, train_set)
        epochs = pl.read_csv(run_dir / "metrics.csv")
        assert epochs["epoch"].to_list() == [1, 2] and epochs["train_loss"][0] == warmup["train_loss"][0]
    # the paper-recipe runs have no warm-up
    paper = pl.read_csv(results / "train" / "drfuse_paper" / "matched" / "seed0" / "metrics.csv")
    assert paper["epoch"].to_list() == [1] and paper["val_prauc"].is_not_null().all()
    check_planted_paired_and_seeds(results, seeds=[0], n_models=14)  # 8 models + 3 ablations x 2 recipes
    check_mortality(results)


def check_mortality(results: Path) -> None:
    """The in-hospital mortality task of the finished run: its cohort, runs, table, figure, checks."""
    cohort = pl.read_parquet(results / "cohort" / "mortality.parquet")
    stays = pl.read_parquet(results / "cohort" / "stays.parquet")
    assert 0 < cohort.height < stays.height and cohort.columns == ["stay_id", "in_hospital_mortality"]
    table = pl.read_csv(results / "tables" / "mortality.csv")
    # resnet50 on matched (one test set); transformer, MMTM and DrFuse under both recipes on both sets
    assert table.height == 1 + 4 * 2 * 2 and set(table["model"]) == {
        "ResNet50",
        "Transformer",
        "MMTM",
        "DrFuse (paper recipe)",
        "DrFuse (our recipe)",
    }
    assert (table["n_seeds"] == 1).all() and (table["n_stays"] > 0).all()
    defined = table.filter(pl.col("deaths") > 0)
    assert (
        defined.height
        and defined["auroc"].is_not_null().all()
        and (defined["auroc_ci_low"] <= defined["auroc_ci_high"]).all()
    )
    md = (results / "tables" / "mortality.md").read_text()
    assert (
        "AUROC MedFuse paper" in md
        and "0.865" in md
        and "PyHealth" in md
        and (results / "tables" / "mortality.tex").is_file()
    )
    paired = pl.read_csv(results / "tables" / "mortality_paired.csv", schema_overrides={"seed": pl.String})
    assert set(paired["metric"]) == {"AUROC", "AUPRC"} and set(paired["reference"]) == {
        "DrFuse (paper recipe)",
        "DrFuse (our recipe)",
    }
    assert (results / "figures" / "attention_mortality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    planted = pl.read_csv(results / "tables" / "planted_mortality.csv", infer_schema_length=None)
    criteria = planted.filter(pl.col("section") == "criterion")
    assert set(criteria["criterion"]) == {"attention_favours_planted", "prauc_ratio_ehr"}
    assert set(criteria["model"]) == {"DrFuse (paper recipe)", "DrFuse (our recipe)"}
    assert (criteria["passed"].is_not_null() | criteria["note"].is_not_null()).all()
    assert "Acceptance criteria (in-hospital mortality)" in (results / "tables" / "planted_mortality.md").read_text()
    run = json.loads((results / "mortality" / "train" / "drfuse" / "matched" / "seed0" / "run.json").read_text())
    assert run["task"] == "mortality" and run["warm_start"] == str(
        results / "mortality" / "warmup" / "seed0" / "warmup.pt"
    )


def check_planted_paired_and_seeds(results: Path, seeds: list[int], n_models: int) -> None:
    """The planted-structure check, the paired bootstrap and each seed's numbers of a finished run."""
    key = pl.read_csv(results / "synth" / "answer_key" / "label_groups.csv")
    planted = pl.read_csv(results / "tables" / "planted.csv", infer_schema_length=None)
    groups = planted.filter(pl.col("section") == "group")
    assert set(groups["group"]) == set(key["group"])
    assert groups.select("model", "seed").unique().height == n_models * (len(seeds) + 1)  # + the mean
    for drfuse in ("DrFuse (paper recipe)", "DrFuse (our recipe)"):
        criteria = planted.filter((pl.col("section") == "criterion") & (pl.col("model") == drfuse))
        assert set(criteria["criterion"]) == {
            "attention_share_cxr",
            "attention_share_ehr",
            "prauc_ratio_cxr",
            "prauc_ratio_ehr",
        }
        # a verdict, or a note saying why there is none (a tiny run's reference may not have learned)
        assert (criteria["passed"].is_not_null() | criteria["note"].is_not_null()).all()
        assert criteria.filter(pl.col("criterion").str.starts_with("attention"))["value"].is_not_null().all()
    assert "Acceptance criteria" in (results / "tables" / "planted.md").read_text()
    assert (results / "figures" / "planted.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    paired = pl.read_csv(results / "tables" / "paired.csv", schema_overrides={"seed": pl.String})
    assert set(paired["seed"]) == {*map(str, seeds), "pooled"}
    matched = paired.filter(
        (pl.col("train_set") == "matched") & (pl.col("test_set") == "matched") & (pl.col("seed") == "pooled")
    )
    # DrFuse under the paper's recipe against every other run, then under ours against the rest
    assert matched.height == 2 * (n_models - 1) - 1 and "ResNet50" in matched["model"].to_list()
    assert paired.select(pl.col("ci_low") <= pl.col("ci_high")).to_series().all()
    per_seed = pl.read_csv(results / "tables" / "seeds.csv")
    assert sorted(per_seed["seed"].unique()) == seeds and set(per_seed["table"]) == {2, 3, 4}
    assert (results / "tables" / "seeds.md").stat().st_size > 0 and (
        results / "tables" / "paired.md"
    ).stat().st_size > 0


def test_finished_run_has_nothing_to_do(finished_run):
    dry = run_snakemake("-n", "--cores", "2", "--configfile", str(finished_run["config"]))
    assert planned_jobs(dry) == {}


def test_report_bundles_tables_figures_and_the_data_provenance(finished_run, tmp_path):
    report = tmp_path / "report.html"
    result = run_snakemake("--cores", "1", "--configfile", str(finished_run["config"]), "--report", str(report))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    html = report.read_text(errors="replace")
    for name in ("table2.csv", "pr_curves.png", "provenance.md"):
        assert name in html, name


OUR_RECIPE = {"drfuse": 2, "drfuse_no_disentangle": 1, "drfuse_mse": 1, "drfuse_no_rank": 1}
DRFUSE_FAMILY = {**OUR_RECIPE, **{m.replace("drfuse", "drfuse_paper"): n for m, n in OUR_RECIPE.items()}}
EVAL = {"evaluate": 1, "tables": 1, "figures": 1, "planted": 1, "all": 1}  # planted: matched->matched runs
MORTALITY_EVAL = {"evaluate_mortality": 1, "tables_mortality": 1, "figures_mortality": 1, "planted_mortality": 1}
# the mortality task's jobs of E2E_CONFIG: its cohort, warm-up and 9 runs and what evaluates them
MORTALITY_JOBS = {
    "mortality_cohort": 1,
    "warmup_mortality": 1,
    "train_mortality": 8,
    "train_image_only_mortality": 1,
    **MORTALITY_EVAL,
    "all": 1,
}
# (what is changed, extra snakemake arguments or a config override, jobs planned)
# Every operational setting flipped at once (one dry run instead of one per setting: a param that
# depended on any of them would change, and its rule be planned).
OPERATIONAL_FLIPS = {
    "builtin_overrides": {
        "train": {
            "device": "cpu",
            "amp": False,
            "compile": True,
            "pad_images": True,
            "channels_last": False,
            "num_threads": 2,
            "checkpoint_interval_s": 5,
        },  # fmt: skip
        "features": {"chunk_stays": 7},
    }
}
RESOURCE_FLIPS = [  # threads (ingest, features, images follow --cores), memory, GPUs
    "--cores", "1", "--set-threads", "train=2", "--set-resources", "ingest:mem_mb=1000", "train:gpu=1",
    "train_image_only:gpu=1",

]  # fmt: skip
# (what is changed, a config override or extra snakemake arguments, jobs planned)
RERUNS = [
    ("operational settings", OPERATIONAL_FLIPS, {}),
    ("threads, memory, GPUs", RESOURCE_FLIPS, {}),
    # a loss weight is not read by the shared image warm-up: it is not repeated; a model's settings
    # re-train its runs of both tasks
    (
        "model.lambda_attn",
        {"model": {"lambda_attn": 0.7}},
        {"train": 10, "train_mortality": 4, **EVAL, **MORTALITY_EVAL},
    ),
    # a change added to our recipe re-trains the runs under it (and its warm-ups), not the paper recipe's
    (
        "recipe.ehr_lr",
        {"recipe": {"ehr_lr": {"train": {"ehr_lr_factor": 0.5}}}},
        {"warmup": 1, "train": 5, "warmup_mortality": 1, "train_mortality": 2, **EVAL, **MORTALITY_EVAL},
    ),
    # a setting no change of our recipe sets: every fusion model's runs under both recipes, both tasks
    (
        "train.ehr_lr_factor",
        {"train": {"ehr_lr_factor": 0.5}},
        {"warmup": 1, "train": 18, "warmup_mortality": 1, "train_mortality": 6, **EVAL, **MORTALITY_EVAL},
    ),
    (
        "model.baseline_backbone",
        {"builtin_overrides": {"model": {"baseline_backbone": "resnet34"}}},
        {"train": 6, "train_mortality": 2, **EVAL, **MORTALITY_EVAL},
    ),
    # the bootstrap also gives the planted check's intervals for labels shown per patient in one modality
    (
        "evaluation.n_bootstrap",
        {"evaluation": {"n_bootstrap": 30}},
        {"evaluate": 1, "tables": 1, "planted": 1, "all": 1, "evaluate_mortality": 1, "tables_mortality": 1},
    ),
    # issue 26: the planted check's thresholds are the planted rules' alone; the seed is also t-SNE's
    (
        "evaluation.planted",
        {"evaluation": {"planted": {"min_prauc_ratio": 0.8}}},
        {"planted": 1, "planted_mortality": 1, "all": 1},
    ),
    (
        "evaluation.seed",
        {"evaluation": {"seed": 1}},
        {
            "evaluate": 1,
            "tables": 1,
            "figures": 1,
            "planted": 1,
            "all": 1,
            "evaluate_mortality": 1,
            "tables_mortality": 1,
        },
    ),
    (
        "per_model.transformer",
        {"per_model": {"transformer": {"train": {"weight_decay": 0.01}}}},
        {"train": 2, "train_mortality": 2, **EVAL, **MORTALITY_EVAL},
    ),
    # issue 29: a task left out or re-run alone touches nothing of the other's
    ("experiments.tasks: phenotyping alone", {"experiments": {"tasks": ["phenotyping"]}}, {}),
    ("experiments.tasks: mortality alone", {"experiments": {"tasks": ["mortality"]}}, {}),
    ("the mortality cohort forced", ["--forcerun", "mortality_cohort"], MORTALITY_JOBS),
    ("the phenotyping tables forced", ["--forcerun", "tables"], {"tables": 1, "all": 1}),
    (
        "experiments.mortality.models",
        {"experiments": {"mortality": {"models": ["resnet50", "transformer", "drfuse"]}}},
        {"evaluate_mortality": 1, "tables_mortality": 1, "figures_mortality": 1, "planted_mortality": 1, "all": 1},
    ),
]


def test_every_operational_setting_is_flipped_in_the_rerun_check():
    flipped = {(section, key) for section, keys in OPERATIONAL_FLIPS["builtin_overrides"].items() for key in keys}
    assert flipped == {(section, key) for section, keys in config_mod.OPERATIONAL.items() for key in keys}


@pytest.mark.parametrize("what,change,expected", RERUNS, ids=[r[0] for r in RERUNS])
def test_a_changed_setting_reruns_only_what_reads_it(finished_run, tmp_path, what, change, expected):
    args = ["-n", "--cores", "2", "--configfile", str(finished_run["config"])]
    if isinstance(change, dict):
        extra = tmp_path / "change.yaml"
        extra.write_text(yaml.safe_dump(change))
        args += [str(extra)]
    else:
        args += change
    dry = run_snakemake(*args)
    jobs = planned_jobs(dry)
    assert jobs == expected, what
    trained = {m.group(1) for m in re.finditer(r"wildcards: model=(\w+), train_set", dry.stdout + dry.stderr)}
    if what == "model.lambda_attn":  # the DrFuse family's settings
        assert trained == set(DRFUSE_FAMILY)
    if what == "recipe.ehr_lr":
        assert trained == set(OUR_RECIPE)
    if what == "train.ehr_lr_factor":
        assert trained == set(DRFUSE_FAMILY) | {"mmtm", "daft", "medfuse", "medfuse2"}
    if what == "model.baseline_backbone":
        assert trained == {"mmtm", "daft", "medfuse"}


def test_package_and_docs_name_no_machine_path():
    # the docs must stand alone: no path of the machine they were written on
    for path in [*ROOT.joinpath("drfuse").rglob("*.py"), *ROOT.joinpath("docs").glob("*.md"), ROOT / "README.md"]:
        text = path.read_text()
        assert "/work/" not in text and "shared/spec" not in text, path


def test_a_job_given_a_gpu_trains_on_cuda_or_fails_in_one_line(tiny_results, tiny_cfg, tmp_path):
    # what profiles/gpu and profiles/slurm do to a training job: `--gpus 1` (Snakemake's resource)

    import torch

    cfg = config_mod.deep_merge(tiny_cfg, {"train": {"device": "auto", "epochs": 1}})
    conf = tmp_path / "cfg.json"
    conf.write_text(json.dumps(cfg))
    out = tmp_path / "run"
    cli = drfuse_cli(
        "--config", str(conf), "train", "--model", "transformer", "--train-set", "full",
        "--results", str(tiny_results), "--out", str(out), "--threads", "1", "--gpus", "1",
    )  # fmt: skip
    if torch.cuda.is_available():
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert json.loads((out / "run.json").read_text())["device"].startswith("cuda")
    else:
        assert cli.returncode == 1 and "Traceback" not in cli.stderr
        line = cli.stderr.strip().splitlines()[-1]
        assert "train.device is 'cuda' (set in the config, or this job was given a GPU by profiles/gpu" in line
        assert "torch sees no usable CUDA device" in line and not (out / "run.json").exists()


def test_tables_and_report_name_the_release_the_warnings_and_the_bad_images(tmp_path):

    from drfuse import provenance

    (tmp_path / "ingest").mkdir()
    warning = "chartevents: 313,000,000 rows, MIMIC-IV v2.2 has 313,645,063: incomplete or modified files?"
    (tmp_path / "ingest" / "manifest.json").write_text(
        json.dumps({"version": "2.x", "release": "2.2", "warnings": [warning], "row_count_warnings": [warning]})
    )
    (tmp_path / "images").mkdir()
    pl.DataFrame(
        {"dicom_id": ["a", "b"], "path": ["files/a.jpg", "files/b.jpg"], "reason": ["missing file"] * 2}
    ).write_csv(tmp_path / "images" / "bad_images.csv")
    pl.DataFrame({"dicom_id": [f"d{i}" for i in range(98)], "row": list(range(98))}).write_parquet(
        tmp_path / "images" / "index.parquet"
    )
    cfg = {"data": {"mimic_iv_dir": "/m/iv", "mimic_cxr_dir": "/m/cxr", "results_dir": str(tmp_path)}}
    note = config_mod.data_source(cfg)  # the note under every table
    assert note.startswith("MIMIC-IV v2.2 + MIMIC-CXR-JPG; 1 ingest warning(s): chartevents: 313,000,000 rows")
    assert note.endswith("; 2 of 100 cohort images missing or unreadable")
    provenance.write_markdown(tmp_path, False, tmp_path / "tables" / "provenance.md")
    md = (tmp_path / "tables" / "provenance.md").read_text()
    assert "- MIMIC-IV version detected by ingest: 2.x (release 2.2)" in md and f"- ingest warning: {warning}" in md
    assert "- images missing or unreadable: 2 of 100" in md
    # before the stages have run: the source alone
    assert (
        config_mod.data_source({"data": {**cfg["data"], "results_dir": str(tmp_path / "none")}})
        == "MIMIC-IV + MIMIC-CXR-JPG"
    )


def test_a_second_seed_trains_only_its_runs_and_every_table_pools_both(finished_run):
    """Last in this module: it adds seed-1 runs to the finished run, which the dry-run checks above
    must not see."""
    results = finished_run["results"]
    tiny = yaml.safe_load(finished_run["config"].read_text())
    config_file = finished_run["base"] / "two-seeds.yaml"
    two_seeds = dict(
        tiny,
        experiments={
            "seeds": [0, 1],
            "tasks": ["phenotyping"],
            "table2": {"models": ["transformer", "drfuse"], "train_sets": ["matched"]},
            "table3": {"models": ["resnet50", "transformer", "drfuse"], "train_set": "matched", "test_set": "matched"},
            "table4": {"ablations": [], "train_set": "matched"},
        },
    )
    config_file.write_text(yaml.safe_dump(two_seeds))
    result = run_snakemake("--cores", "2", "--configfile", str(config_file))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    trained = sorted(
        p.parent.relative_to(results / "train").as_posix() for p in (results / "train").glob("*/*/seed1/best.pt")
    )
    assert trained == [
        "drfuse/matched/seed1",
        "drfuse_paper/matched/seed1",
        "resnet50/matched/seed1",
        "transformer/matched/seed1",
    ]
    table2 = pl.read_csv(results / "tables" / "table2.csv")
    assert table2.height == 6 and (table2["n_seeds"] == 2).all()
    assert "pooled interval" in (results / "tables" / "table2.md").read_text()
    check_planted_paired_and_seeds(results, seeds=[0, 1], n_models=4)
