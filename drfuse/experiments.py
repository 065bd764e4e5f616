"""The experiment plan: which models are trained on which training set, and what is predicted.

Everything here is derived from the `experiments:` section of the configuration, so adding a model,
a seed or a grid point is a config edit. Run names are
- registry model names (`drfuse.models.MODELS`), each under one of two recipes: `paper` (the
  settings as configured; config.yaml's `model:` / `train:` hold the paper's values) or `ours` (the
  changes of config.yaml's `recipe:` section on top): `drfuse` and its ablations under ours,
  `drfuse_paper`, `drfuse_paper_mse`, ... under the paper's; the fusion baselines under the paper's,
  `mmtm_ours`, ... with ours (of it, what they read: the warm-up and the EHR encoder's lr);
- recipe-study variants: `drfuse-<change>` (our recipe without one change of `recipe:`) and
  `drfuse_paper+<change>` (the paper's with one change);
- grid-search variants `drfuse-gNN` (DrFuse with one point of the paper's grid of loss weights and
  learning rates).
In the `experiments:` lists a DrFuse-family name without a recipe (`drfuse`, `drfuse_no_rank`, ...)
stands for its runs under each recipe of `experiments.recipes` (`family_runs`).
A run's configuration (`resolve_run`) is the global one, the `per_model:` entries of the model's
plain name and of its own name merged in, then its recipe's changes, then `experiments.select_on`
and a grid point; `run_params` is what of it the model declares it reads: the train rule's params.

Tasks (`experiments.tasks`, `drfuse.tasks`): phenotyping's runs are those of Tables 2-4
(`experiment_runs`); in-hospital mortality's those of `experiments.mortality` (`mortality_runs`),
under `mortality/` in the results folder. A run of either task reads the same settings.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from drfuse.config import deep_merge
from drfuse.errors import UserError

TEST_SETS = ("full", "matched")
GRID_RUN = re.compile(r"^drfuse-g(\d+)$")
# `<model>-<change>` / `<model>+<change>`: a change of `recipe:` removed / added (names: [a-z_]+)
RECIPE_VARIANT = re.compile(r"^(?P<model>\w+?)(?P<sign>[+-])(?P<change>[a-z_]+)$")
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


def registry_model(run_name: str) -> str:
    """The registry model a run trains: itself, DrFuse for a grid run, the variant's model."""
    if GRID_RUN.match(run_name):
        return "drfuse"
    variant = RECIPE_VARIANT.match(run_name)
    return variant["model"] if variant else run_name


def recipe_changes(run_name: str, cfg: dict) -> list[str]:
    """The changes of `recipe:` that a run trains with: all of them under our recipe, none under the
    paper's; a recipe-study variant removes (`-`) one from ours or adds (`+`) one to the paper's."""
    from drfuse.models import spec

    model = registry_model(run_name)
    recipe = spec(model).recipe
    changes = list(cfg["recipe"]) if recipe == "ours" else []
    variant = None if GRID_RUN.match(run_name) else RECIPE_VARIANT.match(run_name)
    if variant is None:
        return changes
    change, removing = variant["change"], variant["sign"] == "-"
    if change not in cfg["recipe"]:
        raise UserError(f"run {run_name}: {change!r} is not a change of config `recipe:` ({', '.join(cfg['recipe'])})")
    if removing != (recipe == "ours"):
        raise UserError(
            f"run {run_name}: a change is removed from a model under our recipe (`drfuse-{change}`) "
            f"and added to one under the paper's (`drfuse_paper+{change}`); {model} trains under {recipe!r}"
        )
    return [c for c in changes if c != change] if removing else [change]


def _per_model(model: str, cfg: dict) -> dict:
    """The `per_model` entries that apply to a model: its plain name's, then its own name's."""
    from drfuse.models import spec

    entries = cfg["per_model"]
    base = spec(model).base
    return deep_merge(entries.get(base, {}), entries.get(model, {})) if base else entries.get(model, {})


def _set_values(override: dict) -> dict[tuple[str, str], object]:
    return {(section, key): value for section, settings in override.items() for key, value in settings.items()}


def resolve_run(run_name: str, cfg: dict) -> tuple[str, dict]:
    """Map a run name to (registry model name, configuration for that run).

    The global `model:` / `train:` sections, then the `per_model` entries of the model's plain name
    and its own name, then the changes of `recipe:` its recipe applies (`recipe_changes`), then
    `experiments.select_on` (unless `own`) and, for a grid run `drfuse-gNN`, its grid point."""
    model = registry_model(run_name)
    per_model = _per_model(model, cfg)
    run_cfg = deep_merge(cfg, per_model)
    for change in recipe_changes(run_name, cfg):
        clash = {k: v for k, v in _set_values(cfg["recipe"][change]).items() if _set_values(per_model).get(k, v) != v}
        if clash:
            (section, key), value = next(iter(clash.items()))
            raise UserError(
                f"per_model sets {section}.{key} for {model}, which recipe.{change} sets to {value!r} for "
                "the runs under our recipe: change it in `recipe:` (or set it per_model for the other recipe's name)"
            )
        run_cfg = deep_merge(run_cfg, cfg["recipe"][change])
    select_on = cfg["experiments"]["select_on"]
    if select_on != "own":
        run_cfg = deep_merge(run_cfg, {"train": {"select_on": select_on}})
    match = GRID_RUN.match(run_name)
    if not match:
        return model, run_cfg
    points = grid_points(cfg)
    index = int(match.group(1))
    if index >= len(points):
        raise UserError(f"grid run {run_name} does not exist: experiments.grid_search has {len(points)} points")
    point = points[index]
    override = {
        "model": {k: point[k] for k in ("lambda_jsd", "lambda_orth", "lambda_attn")},
        "train": {"lr": point["lr"]},
    }
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
    """DrFuse and its ablations under either recipe (drfuse.models.drfuse): two CNN trunks, and an
    image warm-up under our recipe."""
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
    from the `warmup` job's result instead of repeating it. In the default config: DrFuse under our
    recipe on both training sets and its three ablations; a grid run (another lr) or a recipe
    variant with other warm-up settings warms up by itself, the paper's recipe has no warm-up."""
    own = warmup_settings(*resolve_run(run_name, cfg))
    return own is not None and own == warmup_settings(*resolve_run("drfuse", cfg))


# The warm-up job comes before every training run: five of them wait for it.
WARMUP_PRIORITY = 4


def run_priority(run_name: str, train_set: str) -> int:
    """The train rule's scheduling priority: the longest runs first, so that none of them starts
    last while the other cores idle. Full-set runs (six times the matched set's stays per epoch) before
    matched-set ones; within a set the DrFuse family (two CNN trunks) first."""
    return 2 * (train_set == "full") + int(in_drfuse_family(registry_model(run_name)))


def family_runs(model: str, cfg: dict) -> list[str]:
    """The runs a model named in an `experiments:` list stands for: a DrFuse-family name without a
    recipe (`drfuse`, `drfuse_mse`, ...) one per recipe of `experiments.recipes` (`drfuse_paper`
    for the paper's, `drfuse` for ours), every other name itself."""
    from drfuse.models import spec

    if not in_drfuse_family(model) or spec(model).base is not None:
        return [model]
    names = {"ours": model, "paper": model.replace("drfuse", "drfuse_paper", 1)}
    return [names[recipe] for recipe in cfg["experiments"]["recipes"]]


def drfuse_runs(cfg: dict) -> list[str]:
    """DrFuse under each recipe of `experiments.recipes`, in that order."""
    return family_runs("drfuse", cfg)


def study_runs(cfg: dict) -> tuple[list[str], list[str]]:
    """The recipe study's runs (`experiments.recipe_study`): (DrFuse's recipe variants, the fusion
    baselines with our recipe); empty when the study is off."""
    study = cfg["experiments"]["recipe_study"]
    if not study["enabled"]:
        return [], []
    changes = list(cfg["recipe"])
    variants = [f"drfuse-{c}" for c in changes] + [f"drfuse_paper+{c}" for c in changes]
    return variants, [f"{b}_ours" for b in study["baselines"]]


def drfuse_family() -> list[str]:
    """The DrFuse-family models under their plain names (each stands for its runs under every recipe
    of `experiments.recipes`): what Table 4 may list as ablations."""
    from drfuse.models import MODELS

    return [model for model in MODELS if in_drfuse_family(model) and MODELS[model].base is None]


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
        runs += [(run, train_set) for run in family_runs(model, cfg) for train_set in exp["table2"]["train_sets"]]
    runs += [(run, exp["table3"]["train_set"]) for model in exp["table3"]["models"] for run in family_runs(model, cfg)]
    ablation_set = exp["table4"]["train_set"]
    for ablation in exp["table4"]["ablations"]:
        runs += [(run, ablation_set) for run in family_runs(ablation, cfg)]
    if exp["table4"]["ablations"]:
        runs += [(run, ablation_set) for run in drfuse_runs(cfg)]
    variants, baselines = study_runs(cfg)
    if variants:  # each variant is compared with DrFuse under its recipe, both recipes
        runs += [(run, ablation_set) for run in ("drfuse_paper", "drfuse", *variants)]
    for baseline in baselines:  # each beside the same baseline under its own recipe
        runs += [
            (run, train_set)
            for run in (baseline.removesuffix("_ours"), baseline)
            for train_set in exp["table2"]["train_sets"]
        ]
    for run in grid_runs(cfg):
        runs += [(run, train_set) for train_set in exp["table2"]["train_sets"]]
    for model, train_set in runs:
        if model in IMAGE_ONLY_MODELS and train_set != "matched":
            raise UserError(f"config experiments: {model} sees only the chest X-ray and trains on 'matched' only")
    unique = list(dict.fromkeys(runs))
    return [(model, train_set, seed) for model, train_set in unique for seed in exp["seeds"]]


def tasks(cfg: dict) -> list[str]:
    """The tasks of `experiments.tasks`, in the order of `drfuse.tasks.TASKS`."""
    from drfuse.tasks import TASKS

    return [task for task in TASKS if task in cfg["experiments"]["tasks"]]


def mortality_runs(cfg: dict) -> list[tuple[str, str, int]]:
    """Every (run name, training set, seed) of the mortality task (`experiments.mortality`: its
    models, a DrFuse-family name standing for each recipe, on its training sets; an image-only model
    on the matched set only); empty when the task is off."""
    from drfuse.tasks import MORTALITY

    if MORTALITY not in tasks(cfg):
        return []
    exp = cfg["experiments"]["mortality"]
    runs = [
        (run, train_set)
        for model in exp["models"]
        for run in family_runs(model, cfg)
        for train_set in exp["train_sets"]
        if run not in IMAGE_ONLY_MODELS or train_set == "matched"
    ]
    unique = list(dict.fromkeys(runs))
    return [(model, train_set, seed) for model, train_set in unique for seed in cfg["experiments"]["seeds"]]


def test_sets_for(model: str) -> tuple[str, ...]:
    return ("matched",) if model in IMAGE_ONLY_MODELS else TEST_SETS


def prediction_targets(cfg: dict, task: str = "phenotyping") -> list[str]:
    """Prediction files (relative to the results dir) of every run of `task` on each of its test
    sets: `predict/...` for phenotyping (all of Tables 2-4, whatever `experiments.tasks` says),
    `mortality/predict/...` for mortality (its runs when the task is on)."""
    from drfuse.tasks import PHENOTYPING, check, task_dir

    runs = experiment_runs(cfg) if check(task) == PHENOTYPING else mortality_runs(cfg)
    prefix = task_dir(Path(), task) / "predict"
    return [
        str(prefix / model / train_set / f"seed{seed}" / f"{test_set}.parquet")
        for model, train_set, seed in runs
        for test_set in test_sets_for(model)
    ]


def select_grid(results_dir, cfg: dict) -> list[dict]:
    """The paper's model selection: per training set and seed, the grid point with the best
    validation score (macro PRAUC unless `train.select_on` says otherwise; from each run's
    run.json). One row per grid run, `selected` marked."""
    import json

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
