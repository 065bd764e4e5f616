"""Loading `config.yaml`: one place that knows about the built-in demo overrides.

Every stage receives the merged configuration as a plain dict. When both MIMIC paths are empty the
workflow runs on the built-in synthetic data and the `builtin_overrides` section is merged on top,
so the demo runs in minutes on a laptop while config.yaml keeps the paper's settings.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from drfuse.errors import UserError


def deep_merge(base: dict, override: dict) -> dict:
    """Return a copy of `base` with `override` merged in, recursing into nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def uses_builtin_data(cfg: dict) -> bool:
    """True when no MIMIC path is configured: the pipeline generates and uses synthetic data."""
    data = cfg.get("data", {})
    return not data.get("mimic_iv_dir") and not data.get("mimic_cxr_dir")


def resolve(cfg: dict) -> dict:
    """Apply the built-in overrides when running on synthetic data; check the data paths."""
    data = cfg.get("data", {})
    if bool(data.get("mimic_iv_dir")) != bool(data.get("mimic_cxr_dir")):
        raise UserError(
            "config: set both data.mimic_iv_dir and data.mimic_cxr_dir (real MIMIC) or neither "
            f"(built-in synthetic data); got mimic_iv_dir={data.get('mimic_iv_dir')!r}, "
            f"mimic_cxr_dir={data.get('mimic_cxr_dir')!r}"
        )
    resolved = copy.deepcopy(cfg)
    if uses_builtin_data(cfg):
        resolved = deep_merge(resolved, cfg.get("builtin_overrides", {}))
    resolved.pop("builtin_overrides", None)
    return resolved


def load(path: str | Path = "config.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """Read a config file, merge `overrides` (e.g. from the command line), then `resolve` it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file not found: {path}")
    with path.open() as fh:
        cfg = yaml.safe_load(fh) or {}
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return resolve(cfg)


def data_source(cfg: dict) -> str:
    """A short label for tables and reports saying which data the numbers came from."""
    return "built-in synthetic data" if uses_builtin_data(cfg) else f"MIMIC-IV at {cfg['data']['mimic_iv_dir']}"
