"""The experiment plan: which models are trained on which training set, and what is predicted.

Everything here is derived from the `experiments:` section of the configuration, so adding a model,
a seed or a grid point is a config edit. Run names are registry model names
(`drfuse.models.MODELS`) or grid-search variants `drfuse-gNN` (DrFuse with one point of the
paper's grid of loss weights and learning rates). A run's configuration is the global one with
the model's `per_model:` entry merged in (and a grid point on top); `run_params` is what of it the
model declares it reads: the train rule's params.
"""

from __future__ import annotations

import itertools
import re

from drfuse.config import deep_merge
from drfuse.errors import UserError

TEST_SETS = ("full", "matched")
GRID_RUN = re.compile(r"^drfuse-g(\d+)$")
# Models that see only the CXR: trained and tested on the matched subset alone.
IMAGE_ONLY_MODELS = {"resnet50"}


def grid_points(cfg: dict) -> list[dict]:
    """The grid of DrFuse settings, in a fixed order (index = the NN of `drfuse-gNN`)."""
    grid = cfg["experiments"]["grid_search"]
    keys = ("lambda_jsd", "lambda_orth", "lambda_attn", "lr")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_runs(cfg: dict) -> list[str]:
    if not cfg["experiments"]["grid_search"]["enabled"]:
        return []
    return [f"drfuse-g{i:02d}" for i in range(len(grid_points(cfg)))]


def resolve_run(run_name: str, cfg: dict) -> tuple[str, dict]:
    """Map a run name to (registry model name, configuration for that run).

    The model's `per_model` entry is merged over the global `model:` / `train:` sections; a grid
    run `drfuse-gNN` is DrFuse with its grid point on top of that."""
    match = GRID_RUN.match(run_name)
    model = "drfuse" if match else run_name
    run_cfg = deep_merge(cfg, cfg.get("per_model", {}).get(model, {}))
    if not match:
        return model, run_cfg
    points = grid_points(cfg)
    index = int(match.group(1))
    if index >= len(points):
        raise UserError(f"grid run {run_name} does not exist: experiments.grid_search has {len(points)} points")
    point = points[index]
    override = {"model": {k: point[k] for k in ("lambda_jsd", "lambda_orth", "lambda_attn")}, "train": {"lr": point["lr"]}}
    return model, deep_merge(run_cfg, override)


def run_params(run_name: str, cfg: dict) -> dict:
    """The settings a training run's results depend on: the `model:` and `train:` keys its model
    declares in the registry, from the run's resolved configuration. These are the train rule's
    params, so a changed setting re-trains only the runs that read it."""
    from drfuse.models import spec

    model, run_cfg = resolve_run(run_name, cfg)
    declared = spec(model)
    return {
        "model": {k: run_cfg["model"][k] for k in declared.model_keys if k in run_cfg["model"]},
        "train": {k: run_cfg["train"][k] for k in declared.train_keys if k in run_cfg["train"]},
    }


def in_drfuse_family(model: str) -> bool:
    """DrFuse and its ablations (drfuse.models.drfuse): an image warm-up, two CNN trunks."""
    from drfuse.models import spec

    return spec(model).module == "drfuse.models.drfuse"


def warmup_settings(model: str, run_cfg: dict) -> dict | None:
    """What the image warm-up of a run of `model` with its resolved `run_cfg` reads
    (`drfuse.models.TRAIN_WARMUP`); None for a run without one (not the DrFuse family, or
    `train.cxr_warmup_epochs: 0`). The warm-up trains on the stays with an image, the matched
    training set's whatever the run's training set, so two runs with equal settings and seed have
    the same warm-up, to the last bit."""
    from drfuse.models import DRFUSE_ARCHITECTURE, TRAIN_WARMUP

    if not in_drfuse_family(model) or not run_cfg["train"]["cxr_warmup_epochs"]:
        return None
    return {
        "model": {k: run_cfg["model"][k] for k in DRFUSE_ARCHITECTURE},
        "train": {k: run_cfg["train"][k] for k in TRAIN_WARMUP},
    }


def shares_warmup(run_name: str, cfg: dict) -> bool:
    """True for a run whose warm-up is DrFuse's own (the same settings): in the workflow it starts
    from the `warmup` job's result instead of repeating it. In the default config: DrFuse on both
    training sets and its three ablations; a grid run (another lr) warms up by itself."""
    own = warmup_settings(*resolve_run(run_name, cfg))
    return own is not None and own == warmup_settings(*resolve_run("drfuse", cfg))


# The warm-up job comes before every training run: five of them wait for it.
WARMUP_PRIORITY = 4


def run_priority(run_name: str, train_set: str) -> int:
    """The train rule's scheduling priority: the longest runs first, so that none of them starts
    last while the other cores idle (on the demo's 2 cores the last run, started 13 minutes in, once
    ran alone for 45 s). Full-set runs (six times the matched set's stays per epoch) before
    matched-set ones; within a set the DrFuse family (an image warm-up, two CNN trunks) first."""
    model = "drfuse" if GRID_RUN.match(run_name) else run_name
    return 2 * (train_set == "full") + int(in_drfuse_family(model))


def drfuse_family() -> list[str]:
    """The registry's DrFuse-family models: what Table 4 may list as ablations."""
    from drfuse.models import MODELS

    return [model for model in MODELS if in_drfuse_family(model)]


def experiment_runs(cfg: dict) -> list[tuple[str, str, int]]:
    """Every (run name, training set, seed) the configured tables need, without duplicates.

    Checked here, so that the Snakefile and the CLI refuse the same plans before any job
    (`drfuse.config.check_values`): Table 4 compares DrFuse with its ablations, so each must be
    a DrFuse-family model; an image-only model trains on the matched set only."""
    exp = cfg["experiments"]
    others = [model for model in exp["table4"]["ablations"] if not in_drfuse_family(model)]
    if others:
        raise UserError(
            f"config experiments.table4.ablations: {', '.join(others)} "
            f"{'is not a DrFuse-family model' if len(others) == 1 else 'are not DrFuse-family models'} (Table 4 "
            f"compares DrFuse with its ablations); allowed: {', '.join(drfuse_family())}"
        )
    runs: list[tuple[str, str]] = []
    for model in exp["table2"]["models"]:
        runs += [(model, train_set) for train_set in exp["table2"]["train_sets"]]
    runs += [(model, exp["table3"]["train_set"]) for model in exp["table3"]["models"]]
    runs += [(model, exp["table4"]["train_set"]) for model in exp["table4"]["ablations"]]
    if exp["table4"]["ablations"]:
        runs.append(("drfuse", exp["table4"]["train_set"]))
    for run in grid_runs(cfg):
        runs += [(run, train_set) for train_set in exp["table2"]["train_sets"]]
    for model, train_set in runs:
        if model in IMAGE_ONLY_MODELS and train_set != "matched":
            raise UserError(f"config experiments: {model} sees only the chest X-ray and trains on 'matched' only")
    unique = list(dict.fromkeys(runs))
    return [(model, train_set, seed) for model, train_set in unique for seed in exp["seeds"]]


def test_sets_for(model: str) -> tuple[str, ...]:
    return ("matched",) if model in IMAGE_ONLY_MODELS else TEST_SETS


def prediction_targets(cfg: dict) -> list[str]:
    """Prediction files (relative to the results dir) of every run on each of its test sets."""
    return [
        f"predict/{model}/{train_set}/seed{seed}/{test_set}.parquet"
        for model, train_set, seed in experiment_runs(cfg)
        for test_set in test_sets_for(model)
    ]


def select_grid(results_dir, cfg: dict) -> list[dict]:
    """The paper's model selection: per training set and seed, the grid point with the best
    validation score (macro PRAUC unless `train.select_on` says otherwise; from each run's
    run.json). One row per grid run, `selected` marked."""
    import json
    from pathlib import Path

    rows = []
    for run, train_set, seed in experiment_runs(cfg):
        if not GRID_RUN.match(run):
            continue
        path = Path(results_dir) / "train" / run / train_set / f"seed{seed}" / "run.json"
        if not path.is_file():
            raise UserError(f"grid search: {path} is missing; train the grid runs first")
        summary = json.loads(path.read_text())
        point = grid_points(cfg)[int(GRID_RUN.match(run).group(1))]
        rows.append({"run": run, "train_set": train_set, "seed": seed, **point, "val_score": summary["best_val_score"]})
    for train_set, seed in {(r["train_set"], r["seed"]) for r in rows}:
        group = [r for r in rows if (r["train_set"], r["seed"]) == (train_set, seed)]
        best = max(group, key=lambda r: r["val_score"])
        for r in group:
            r["selected"] = r is best
    return rows
