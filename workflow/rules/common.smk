# Shared definitions: the checked configuration, paths, the command prefix and the experiment list.
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from drfuse import config as drfuse_config
from drfuse.data.mimic_version import source_files
from drfuse.errors import UserError
from drfuse.experiments import (
    IMAGE_ONLY_MODELS,
    TEST_SETS,
    WARMUP_PRIORITY,
    prediction_targets,
    resolve_run,
    run_params,
    run_priority,
    shares_warmup,
    tasks,
    warmup_settings,
)
from drfuse.models import MODELS
from drfuse.train import locks

# The configuration is checked (unknown keys, types, model names; the same code as `drfuse
# --config`) and resolved (built-in demo overrides) before any job is planned.
try:
    CFG = drfuse_config.checked_resolve(config, "config")
except UserError as exc:
    raise WorkflowError(str(exc)) from None
R = Path(CFG["data"]["results_dir"])
BUILTIN = drfuse_config.uses_builtin_data(CFG)

# The CLI reads the resolved configuration from a file named by a hash of its content: a changed
# setting gives a new file, while each rule's params decide whether it re-runs. Written when the
# run starts (not by a dry run); the folder is made now, so an unwritable results_dir is one line.
_cfg_text = json.dumps(CFG, sort_keys=True, indent=1)
CONFIG_FILE = (
    R
    / "config"
    / f"resolved-{hashlib.sha256(_cfg_text.encode()).hexdigest()[:12]}.json"
)
try:
    CONFIG_FILE.parent.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise WorkflowError(
        f"data.results_dir: cannot create {CONFIG_FILE.parent}: {exc.strerror}"
    ) from None


# One workflow run at a time per results folder (two checkouts may name the same absolute
# results_dir): held from the start of a real run (not a dry run) to its end, naming its holder.
RESULTS_LOCK = []


onstart:
    try:
        RESULTS_LOCK.append(locks.take_results_lock(R))
    except UserError as exc:
        raise WorkflowError(str(exc)) from None
    if not CONFIG_FILE.exists():
        CONFIG_FILE.write_text(_cfg_text)


onsuccess:
    release_results_lock()


onerror:
    release_results_lock()


def release_results_lock():
    while RESULTS_LOCK:
        locks.unlock(RESULTS_LOCK.pop())


if BUILTIN:
    MIMIC_IV_DIR = R / "synth" / "mimic-iv"
    MIMIC_CXR_DIR = R / "synth" / "mimic-cxr-jpg"
else:
    MIMIC_IV_DIR = Path(CFG["data"]["mimic_iv_dir"])
    MIMIC_CXR_DIR = Path(CFG["data"]["mimic_cxr_dir"])

# Rules run this checkout's package (PYTHONPATH = the workflow's base directory) with the Python
# that runs Snakemake (a venv need not be activated); under `--sdm conda` or `--sdm apptainer`
# with the environment's Python. Every part is shell-quoted: paths may hold spaces or `$(...)`.
_envs = {m.name for m in workflow.deployment_settings.deployment_method}
PYTHON = "python" if _envs & {"CONDA", "APPTAINER"} else sys.executable
DRFUSE = " ".join(
    [
        f"PYTHONPATH={shlex.quote(workflow.basedir)}",
        shlex.quote(PYTHON),
        "-m drfuse --config",
        shlex.quote(str(CONFIG_FILE)),
    ]
)

# Run names: registry models, grid-search runs `drfuse-gNN` (DrFuse at one grid point) and the
# recipe study's variants `drfuse-<change>`, `drfuse_paper+<change>` (drfuse.experiments).
# Image-only models are predicted on the matched test set only.
_EHR_MODELS = [m for m in MODELS if m not in IMAGE_ONLY_MODELS]
_CHANGES = "|".join(CFG.get("recipe", {})) or "(?!)"
EHR_RUN = "|".join(
    [
        *_EHR_MODELS,
        r"drfuse-g\d+",
        f"drfuse-(?:{_CHANGES})",
        f"drfuse_paper\\+(?:{_CHANGES})",
    ]
)
IMAGE_ONLY_RUN = "|".join(sorted(IMAGE_ONLY_MODELS))

# The tasks of experiments.tasks: phenotyping (the rules of data.smk to evaluate.smk, Tables 1-4)
# and mortality (workflow/rules/mortality.smk, under results/mortality/). `all` asks for the
# outputs of each task that is on; the two tasks share only the data stages.
TASKS = tasks(CFG)
PREDICTIONS = [str(R / p) for p in prediction_targets(CFG)]
PHENOTYPING_OUTPUTS = [
    str(R / "tables" / f"table{i}.{ext}")
    for i in (1, 2, 3, 4)
    for ext in ("csv", "md", "tex")
] + [str(R / "figures" / f) for f in ("tsne.png", "attention.png", "pr_curves.png")]
PHENOTYPING_OUTPUTS += [
    str(R / "tables" / f"{name}.{ext}")
    for name in ("seeds", "paired")
    for ext in ("csv", "md")
]

# The planted-structure check needs an answer key (the built-in data's own, or data.answer_key)
# and the runs trained and tested on the matched subset.
if CFG["data"].get("answer_key"):
    ANSWER_KEY = Path(CFG["data"]["answer_key"])
elif BUILTIN:
    ANSWER_KEY = R / "synth" / "answer_key" / "label_groups.csv"
else:
    ANSWER_KEY = None
ANSWER_CHANNELS = (
    [R / "synth" / "answer_key" / "channels.parquet"]
    if BUILTIN and not CFG["data"].get("answer_key")
    else []
)
PLANTED_PREDICTIONS = [
    p
    for p in PREDICTIONS
    if Path(p).parts[-3] == "matched" and Path(p).stem == "matched"
]
PLANTED = ANSWER_KEY is not None and bool(PLANTED_PREDICTIONS)
if PLANTED:
    PHENOTYPING_OUTPUTS += [
        str(R / "tables" / "planted.csv"),
        str(R / "tables" / "planted.md"),
        str(R / "figures" / "planted.png"),
    ]
FINAL_OUTPUTS = list(PHENOTYPING_OUTPUTS) if "phenotyping" in TASKS else []


def warm_start(wildcards):
    """The input of a training run that starts after DrFuse's image warm-up (the warmup rule's
    output), for a run whose warm-up settings are DrFuse's (drfuse.experiments.shares_warmup);
    others warm up themselves."""
    if not shares_warmup(wildcards.model, CFG):
        return {}
    return {"warmup": expand(rules.warmup.output.warmup, seed=wildcards.seed)[0]}


def mortality_warm_start(wildcards):
    """As warm_start, from the mortality task's warm-up (workflow/rules/mortality.smk)."""
    if not shares_warmup(wildcards.model, CFG):
        return {}
    return {
        "warmup": expand(rules.warmup_mortality.output.warmup, seed=wildcards.seed)[0]
    }


# Whether Snakemake counts GPUs: `--resources gpu=N` (command line, profiles/gpu), or inside a
# cluster job, whose own resources Snakemake passes the same way.
GPUS_COUNTED = "gpu" in workflow.global_resources


def gpus(run_name):
    """The `gpu` resource of a training job of run_name: 1 where GPUs are counted and the run may
    use one (its `train.device` is not cpu), else 0 (workflow/rules/train.smk)."""
    return int(
        GPUS_COUNTED and resolve_run(run_name, CFG)[1]["train"]["device"] != "cpu"
    )


def table_outputs():
    """table{1..4}.{csv,md,tex} (the CSVs in the report), the grid search and recipe study tables
    when enabled, and the data provenance note."""
    out = {}
    for i in (1, 2, 3, 4):
        for ext in ("csv", "md", "tex"):
            path = R / "tables" / f"table{i}.{ext}"
            if ext == "csv":
                path = report(
                    path, caption=f"../report/table{i}.rst", category="Tables"
                )
            out[f"table{i}_{ext}"] = path
    for name in ("seeds", "paired"):
        out[f"{name}_csv"] = report(
            R / "tables" / f"{name}.csv",
            caption=f"../report/{name}.rst",
            category="Tables",
        )
        out[f"{name}_md"] = R / "tables" / f"{name}.md"
    if CFG["experiments"]["grid_search"]["enabled"]:
        out["grid"] = R / "tables" / "grid_search.csv"
    if CFG["experiments"]["recipe_study"]["enabled"]:
        for ext in ("csv", "md", "tex"):
            path = R / "tables" / f"recipe.{ext}"
            if ext == "csv":
                path = report(path, caption="../report/recipe.rst", category="Tables")
            out[f"recipe_{ext}"] = path
    out["provenance"] = report(
        R / "tables" / "provenance.md",
        caption="../report/provenance.rst",
        category="Data",
    )
    return out


# The software environment of every rule under `--sdm conda` (path relative to workflow/rules/).
CONDA_ENV = "../../envs/drfuse.yaml"


wildcard_constraints:
    train_set="full|matched",
    test_set="full|matched",
    seed=r"\d+",
