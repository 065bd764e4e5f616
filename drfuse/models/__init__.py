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

# Settings read by every model's training (drfuse.train.engine, drfuse.train.run).
TRAIN_ALL = (
    "lr", "lr_multipliers", "adam_betas", "weight_decay", "lr_scheduler", "batch_size", "epochs", "patience", "select_on",
    "val_set",
)  # fmt: skip
# Training of a model that sees images: the image augmentation. The fusion models also drop the
# CXR of a share of each matched batch, each family by its own setting (the model's
# `cxr_drop_setting`, drfuse.train.run.training_cxr_drop); the DrFuse family can also train its
# image branch alone first (`cxr_warmup_epochs`) and its EHR encoder at a lower learning rate
# (`ehr_lr_factor`, drfuse.train.engine).
TRAIN_CXR = (*TRAIN_ALL, "augment")
TRAIN_FUSION = (*TRAIN_CXR, "cxr_drop", "cxr_warmup_epochs", "ehr_lr_factor")
TRAIN_BASELINE_FUSION = (*TRAIN_CXR, "baseline_cxr_drop")

# Model settings by building block (drfuse.models.encoders).
EHR_TRANSFORMER = ("d_model", "n_heads", "ff_dim", "dropout", "max_len")
EHR_LSTM = ("d_model", "dropout", "lstm_layers")
CNN = ("backbone", "pretrained_weights", "cnn_width", "image_size")
# encoders.baseline_cnn: `baseline_*`, falling back to `pretrained_weights` when the backbones agree.
BASELINE_CNN = ("baseline_backbone", "baseline_pretrained_weights", "backbone", "pretrained_weights", "cnn_width", "image_size")
DRFUSE_ARCHITECTURE = (*EHR_TRANSFORMER, *CNN, "aux_head")
DRFUSE = (*DRFUSE_ARCHITECTURE, "lambda_jsd", "lambda_orth", "lambda_attn", "margin", "rank_order", "rank_gap")
# What the DrFuse family's image warm-up reads (drfuse.experiments.warmup_settings): the
# architecture (the initial weights) and these of `train:`, the optimiser's among them (its
# state is carried into the joint training); not the loss weights, nor the epochs after it.
TRAIN_WARMUP = (
    "lr", "lr_multipliers", "adam_betas", "weight_decay", "lr_scheduler", "batch_size", "augment", "cxr_warmup_epochs",
    "ehr_lr_factor",
)  # fmt: skip
MEDFUSE_INIT = ("medfuse_init_ehr", "medfuse_init_cxr")


@dataclass(frozen=True)
class ModelSpec:
    module: str
    factory: str
    model_keys: tuple[str, ...]
    train_keys: tuple[str, ...]


# name -> spec; modules are imported only when their model is asked for.
MODELS: dict[str, ModelSpec] = {
    "drfuse": ModelSpec("drfuse.models.drfuse", "build_drfuse", DRFUSE, TRAIN_FUSION),
    # l1 = l2 = 0 are fixed by the ablation: lambda_jsd and lambda_orth are not read.
    "drfuse_no_disentangle": ModelSpec(
        "drfuse.models.drfuse",
        "build_drfuse_no_disentangle",
        tuple(k for k in DRFUSE if k not in ("lambda_jsd", "lambda_orth")),
        TRAIN_FUSION,
    ),
    "drfuse_mse": ModelSpec("drfuse.models.drfuse", "build_drfuse_mse", DRFUSE, TRAIN_FUSION),
    "drfuse_no_rank": ModelSpec("drfuse.models.drfuse", "build_drfuse_no_rank", DRFUSE, TRAIN_FUSION),
    "transformer": ModelSpec("drfuse.models.unimodal", "build_transformer", EHR_TRANSFORMER, TRAIN_ALL),
    "resnet50": ModelSpec("drfuse.models.unimodal", "build_resnet", ("d_model", *CNN), TRAIN_CXR),
    "mmtm": ModelSpec("drfuse.models.mmtm", "build_mmtm", (*EHR_LSTM, *BASELINE_CNN, "mmtm_ratio", "mmtm_stages"), TRAIN_BASELINE_FUSION),
    "daft": ModelSpec("drfuse.models.daft", "build_daft", (*EHR_LSTM, *BASELINE_CNN, "daft_stages"), TRAIN_BASELINE_FUSION),
    "medfuse": ModelSpec("drfuse.models.medfuse", "build_medfuse", (*EHR_LSTM, *BASELINE_CNN, *MEDFUSE_INIT), TRAIN_BASELINE_FUSION),
    "medfuse2": ModelSpec("drfuse.models.medfuse", "build_medfuse2", (*EHR_TRANSFORMER, *CNN, *MEDFUSE_INIT), TRAIN_BASELINE_FUSION),
}


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        from drfuse.errors import UserError

        raise UserError(f"unknown model {name!r} (config experiments / per_model); known: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, model_cfg: dict):
    s = spec(name)
    return getattr(importlib.import_module(s.module), s.factory)(model_cfg)
