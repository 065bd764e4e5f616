"""Model registry: every model of the project, built by name from the `model:` settings.

Each entry also declares the settings its runs read: `model_keys` (of `model:`, what the model and
its training read) and `train_keys` (of `train:`, what changes its training). A training run's
Snakemake params are exactly these values (after `per_model` and grid points are merged in), so a
changed setting re-trains only the models that read it (`drfuse.experiments.run_params`).
tests/test_models.py checks that a model built from its declared keys alone is the same model, and
tests/test_workflow.py that every setting of the schema is declared by some model or operational
(`drfuse.config.OPERATIONAL`). A new model, or a new setting, is one entry / one name here.

See docs/architecture.md ("Model interface") for what every model's forward and loss take.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from drfuse.phenotypes import N_PHENOTYPES

# Settings read by every model's training (drfuse.train.engine, drfuse.train.run).
TRAIN_ALL = (
    "lr", "lr_multipliers", "adam_betas", "weight_decay", "lr_scheduler", "batch_size", "epochs", "patience",
    "select_on", "val_set",

)  # fmt: skip
# Training of a model that sees images: the image augmentation. The fusion models also drop the
# CXR of a share of each matched batch, each family by its own setting (the model's
# `cxr_drop_setting`, drfuse.train.run.training_cxr_drop), and can train their image branch alone
# first (`cxr_warmup_epochs`, a model's `warmup_loss`) and their EHR encoder at a lower learning
# rate (`ehr_lr_factor`, a model's `ehr_encoder_prefix`; drfuse.train.engine).
TRAIN_CXR = (*TRAIN_ALL, "augment")
# Both families can train their image branch alone first and their EHR encoder at a fraction of
# the lr (the generic parts of our recipe, `recipe:` in config.yaml); at the paper's values (0
# epochs, factor 1) they change nothing.
TRAIN_RECIPE = ("cxr_warmup_epochs", "ehr_lr_factor")
TRAIN_FUSION = (*TRAIN_CXR, "cxr_drop", *TRAIN_RECIPE)
TRAIN_BASELINE_FUSION = (*TRAIN_CXR, "baseline_cxr_drop", *TRAIN_RECIPE)

# Model settings by building block (drfuse.models.encoders).
EHR_TRANSFORMER = ("d_model", "n_heads", "ff_dim", "dropout", "max_len")
EHR_LSTM = ("d_model", "dropout", "lstm_layers")
CNN = ("backbone", "pretrained_weights", "cnn_width", "image_size")
# encoders.baseline_cnn: `baseline_*`, falling back to `pretrained_weights` when the backbones agree.
BASELINE_CNN = (
    "baseline_backbone",
    "baseline_pretrained_weights",
    "backbone",
    "pretrained_weights",
    "cnn_width",
    "image_size",
)
DRFUSE_ARCHITECTURE = (*EHR_TRANSFORMER, *CNN, "aux_head")
DRFUSE = (
    *DRFUSE_ARCHITECTURE,
    "attention_query",
    "attention_prior",
    "lambda_jsd",
    "lambda_orth",
    "lambda_attn",
    "margin",
    "rank_order",
    "rank_gap",
    "rank_negatives",
)
# What the DrFuse family's image warm-up reads (drfuse.experiments.warmup_settings): the
# architecture (the initial weights) and these of `train:`, the optimiser's among them (its
# state is carried into the joint training); not the loss weights, nor the epochs after it.
TRAIN_WARMUP = (
    "lr", "lr_multipliers", "adam_betas", "weight_decay", "lr_scheduler", "batch_size", "augment", "cxr_warmup_epochs",
    "ehr_lr_factor",
)  # fmt: skip
MEDFUSE_INIT = ("medfuse_init_ehr", "medfuse_init_cxr")


# The two recipes a run can train under (`ModelSpec.recipe`): "paper" takes the settings as
# configured (config.yaml's `model:` / `train:` hold the paper's values), "ours" adds the changes
# of config.yaml's `recipe:` section (drfuse.experiments.resolve_run).
RECIPES = ("paper", "ours")


@dataclass(frozen=True)
class ModelSpec:
    module: str
    factory: str
    model_keys: tuple[str, ...]
    train_keys: tuple[str, ...]
    recipe: str = "paper"
    # the model's plain name, whose `per_model` entry applies under both recipes (`drfuse` for
    # `drfuse_paper`, `mmtm` for `mmtm_ours`); None: the name itself
    base: str | None = None


def _both_recipes(name: str, other: str, module: str, factory: str, model_keys, train_keys, default: str):
    """Registry entries of one model under both recipes: `name` under `default`, `other` under the other."""
    second = "ours" if default == "paper" else "paper"
    return {
        name: ModelSpec(module, factory, tuple(model_keys), train_keys, default),
        other: ModelSpec(module, factory, tuple(model_keys), train_keys, second, base=name),
    }


def _drfuse_family() -> dict[str, ModelSpec]:
    """DrFuse and its three ablations (paper Table 4), under our recipe (`drfuse`, `drfuse_mse`, ...)
    and the paper's (`drfuse_paper`, `drfuse_paper_mse`, ...)."""
    family = {
        "drfuse": ("build_drfuse", DRFUSE),
        # l1 = l2 = 0 are fixed by the ablation: lambda_jsd and lambda_orth are not read.
        "drfuse_no_disentangle": (
            "build_drfuse_no_disentangle", [k for k in DRFUSE if k not in ("lambda_jsd", "lambda_orth")]),
        "drfuse_mse": ("build_drfuse_mse", DRFUSE),
        "drfuse_no_rank": ("build_drfuse_no_rank", DRFUSE),
    }  # fmt: skip
    out: dict[str, ModelSpec] = {}
    for name, (factory, keys) in family.items():
        paper = name.replace("drfuse", "drfuse_paper", 1)
        out |= _both_recipes(name, paper, "drfuse.models.drfuse", factory, keys, TRAIN_FUSION, default="ours")
    return out


def _fusion_baselines() -> dict[str, ModelSpec]:
    """MMTM, DAFT, MedFuse and MedFuse-II under their own (the paper's) recipe, and with our recipe's
    generic parts (`mmtm_ours`, ...: the settings of `recipe:` they read, the warm-up and the EHR lr)."""
    lstm_cnn = (*EHR_LSTM, *BASELINE_CNN)
    baselines = {
        "mmtm": ("drfuse.models.mmtm", "build_mmtm", (*lstm_cnn, "mmtm_ratio", "mmtm_stages")),
        "daft": ("drfuse.models.daft", "build_daft", (*lstm_cnn, "daft_stages")),
        "medfuse": ("drfuse.models.medfuse", "build_medfuse", (*lstm_cnn, *MEDFUSE_INIT)),
        "medfuse2": ("drfuse.models.medfuse", "build_medfuse2", (*EHR_TRANSFORMER, *CNN, *MEDFUSE_INIT)),
    }
    out: dict[str, ModelSpec] = {}
    for name, (module, factory, keys) in baselines.items():
        out |= _both_recipes(name, f"{name}_ours", module, factory, keys, TRAIN_BASELINE_FUSION, default="paper")
    return out


# name -> spec; modules are imported only when their model is asked for.
MODELS: dict[str, ModelSpec] = {
    **_drfuse_family(),
    "transformer": ModelSpec("drfuse.models.unimodal", "build_transformer", EHR_TRANSFORMER, TRAIN_ALL),
    "resnet50": ModelSpec("drfuse.models.unimodal", "build_resnet", ("d_model", *CNN), TRAIN_CXR),
    **_fusion_baselines(),
}


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        from drfuse.errors import UserError

        raise UserError(f"unknown model {name!r} (config experiments / per_model); known: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, model_cfg: dict, n_outputs: int = N_PHENOTYPES):
    """Model `name` from the `model:` settings, with one output per label of its task
    (`drfuse.tasks.n_outputs`: 25 phenotypes, or 1 for mortality)."""
    s = spec(name)
    return getattr(importlib.import_module(s.module), s.factory)(model_cfg, n_outputs)
