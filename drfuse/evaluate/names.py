"""What a run is called in the tables and figures, the paper's row it stands beside, and the order.

A run of a model that trains under one recipe keeps the paper's name (`Transformer`); a model with
runs under both recipes (`drfuse.models.RECIPES`) says which (`DrFuse (paper recipe)`, `DrFuse
(our recipe)`, `MMTM` and `MMTM (our recipe)`: the fusion baselines' own recipe is the paper's).
A recipe-study variant says what it changed (`DrFuse (our recipe) without warmup`, `DrFuse (paper
recipe) with warmup`); a grid run keeps its run name. Only a run trained as the paper trained it
has a paper row (`paper_row`): DrFuse under the paper's recipe stands beside the paper's DrFuse,
DrFuse under ours beside nothing.
"""

from __future__ import annotations

from drfuse.experiments import GRID_RUN, RECIPE_VARIANT, in_drfuse_family
from drfuse.models import MODELS

# plain model name (drfuse.models.ModelSpec.base) -> its name in the paper, in the paper's order
PAPER_NAMES = {
    "resnet50": "ResNet50",
    "transformer": "Transformer",
    "mmtm": "MMTM",
    "daft": "DAFT",
    "medfuse": "MedFuse",
    "medfuse2": "MedFuse-II",
    "drfuse_no_disentangle": "w/o disentangled",
    "drfuse_mse": "MSE alignment",
    "drfuse_no_rank": "w/o attn. ranking",
    "drfuse": "DrFuse",
}
RECIPE_NAMES = {"paper": "paper recipe", "ours": "our recipe"}
RECIPE_ORDER = ("paper", "ours")


def plain_name(model: str) -> str:
    """A registry model's name without its recipe: `drfuse` for `drfuse_paper`, `mmtm` for `mmtm_ours`."""
    return MODELS[model].base or model


def _has_two_recipes(model: str) -> bool:
    return any(spec.base == plain_name(model) for spec in MODELS.values())


def display_name(run: str) -> str:
    """The name of a run in tables and figures (see the module docstring)."""
    if GRID_RUN.match(run) or (run not in MODELS and not RECIPE_VARIANT.match(run)):
        return run
    variant = None if run in MODELS else RECIPE_VARIANT.match(run)
    model = variant["model"] if variant else run
    name = PAPER_NAMES.get(plain_name(model), model)
    recipe = MODELS[model].recipe
    if in_drfuse_family(model) or (_has_two_recipes(model) and recipe == "ours"):
        name = f"{name} ({RECIPE_NAMES[recipe]})"
    if variant:
        name += f" {'with' if variant['sign'] == '+' else 'without'} {variant['change']}"
    return name


def paper_row(run: str) -> str | None:
    """The paper's name of the row a run stands beside: only runs trained under the paper's recipe."""
    if run not in MODELS or MODELS[run].recipe != "paper":
        return None
    return PAPER_NAMES.get(plain_name(run))


def order_key(run: str) -> tuple:
    """The paper's models in its order (DrFuse's ablations just before DrFuse), each under the paper's
    recipe first, then the recipe variants; runs of no registry model (grid runs) last, by name."""
    variant = None if run in MODELS else RECIPE_VARIANT.match(run)
    model = variant["model"] if variant else run
    if GRID_RUN.match(run) or model not in MODELS:
        return (len(PAPER_NAMES), 0, 0, run)
    position = list(PAPER_NAMES).index(plain_name(model)) if plain_name(model) in PAPER_NAMES else len(PAPER_NAMES)
    return (position, RECIPE_ORDER.index(MODELS[model].recipe), variant is not None, run)


def ordered_models(runs) -> list[str]:
    """Distinct runs in the tables' order (`order_key`)."""
    return sorted(set(runs), key=order_key)
