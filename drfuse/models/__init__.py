"""Model registry: every model of the project, built by name from the `model:` settings.

See docs/architecture.md ("Model interface") for what every model's forward and loss take.
"""

from __future__ import annotations

import importlib

# name -> (module, factory); modules are imported only when their model is asked for.
MODELS = {
    "drfuse": ("drfuse.models.drfuse", "build_drfuse"),
    "drfuse_no_disentangle": ("drfuse.models.drfuse", "build_drfuse_no_disentangle"),
    "drfuse_mse": ("drfuse.models.drfuse", "build_drfuse_mse"),
    "drfuse_no_rank": ("drfuse.models.drfuse", "build_drfuse_no_rank"),
    "transformer": ("drfuse.models.unimodal", "build_transformer"),
    "resnet50": ("drfuse.models.unimodal", "build_resnet"),
    "mmtm": ("drfuse.models.mmtm", "build_mmtm"),
    "daft": ("drfuse.models.daft", "build_daft"),
    "medfuse": ("drfuse.models.medfuse", "build_medfuse"),
    "medfuse2": ("drfuse.models.medfuse", "build_medfuse2"),
}


def build_model(name: str, model_cfg: dict):
    if name not in MODELS:
        from drfuse.errors import UserError

        raise UserError(f"unknown model {name!r} (config experiments); known: {', '.join(MODELS)}")
    module_name, factory = MODELS[name]
    return getattr(importlib.import_module(module_name), factory)(model_cfg)
