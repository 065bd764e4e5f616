"""Loading and checking the configuration: one place for the Snakefile and the CLI.

Every stage receives the merged configuration as a plain dict. `check` validates a configuration
against `workflow/schemas/config.schema.yaml` (unknown keys, wrong types and unknown model names at
any level, `builtin_overrides` and `per_model` included) after turning strings into numbers or
booleans where the schema wants one (Snakemake's `--config train='{epochs: 5}'` passes "5").
When both MIMIC paths are empty the workflow runs on the built-in synthetic data and the
`builtin_overrides` section is merged on top (`resolve`), so the demo runs in minutes on a laptop
while config.yaml keeps the paper's settings.

`checked_resolve` then checks what the schema cannot say (`check_values`: the split shares sum
to 1, Table 4's ablations are DrFuse-family models, the experiment plan), so a bad value is refused
before any job. `load` reads a file for the CLI: a partial one (only the settings that change, like
`snakemake --configfile`) is merged over the project's config.yaml first.

`OPERATIONAL` lists the settings that change how fast or where a stage runs, never its results:
rules leave them out of their params, so flipping one re-runs nothing.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from drfuse.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
# The checkout's config.yaml (the Snakefile's `configfile:`): what a partial file is merged over.
PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"

# section -> settings that never change a result (threads, devices, precision switches, chunking).
# Threads and memory of a job come from Snakemake (`{threads}`, `mem_mb`), not from here.
OPERATIONAL: dict[str, tuple[str, ...]] = {
    "train": ("device", "amp", "compile", "pad_images", "num_threads", "channels_last", "checkpoint_interval_s"),
    "features": ("chunk_stays",),
}


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


def result_settings(cfg: dict, section: str) -> dict:
    """The settings of one section that change results (the section minus `OPERATIONAL`)."""
    skip = OPERATIONAL.get(section, ())
    return {k: v for k, v in cfg[section].items() if k not in skip}


# ---------------------------------------------------------------- schema check


@lru_cache(maxsize=1)
def schema() -> dict:
    if not SCHEMA_PATH.is_file():
        raise UserError(f"config schema not found: {SCHEMA_PATH} (run from a checkout of the project)")
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _deref(node: dict) -> dict:
    """Follow local `$ref`s ("#/$defs/name"), keeping sibling keywords (e.g. `required`)."""
    while "$ref" in node:
        target = schema()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _types(node: dict) -> list[str]:
    t = node.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _from_string(text: str, types: list[str]) -> Any:
    """A command-line string as the number or boolean the schema wants; unchanged otherwise."""
    if "string" in types:
        return text
    if "boolean" in types and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            pass
    return text


def coerce(value: Any, node: dict | None = None) -> Any:
    """A copy of `value` with strings turned into the numbers / booleans the schema asks for
    (`--config` values and YAML's `1e-4`, which PyYAML reads as a string)."""
    node = _deref(schema() if node is None else node)
    types = _types(node)
    if isinstance(value, str):
        return _from_string(value, types)
    if isinstance(value, dict):
        props, extra = node.get("properties", {}), node.get("additionalProperties")
        return {
            k: coerce(v, props[k]) if k in props else coerce(v, extra) if isinstance(extra, dict) else v
            for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [coerce(v, node["items"]) for v in value]
    return value


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(error) -> str:
    """One line naming the setting at fault and what is allowed."""
    where = _where(error.absolute_path)
    keyword, node = error.validator, error.schema
    if keyword == "additionalProperties":
        known = sorted(node.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        names = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in extra)
        return f"{names}: not a setting; known settings here: {', '.join(known)}"
    if "propertyNames" in error.schema_path:  # a per_model key
        allowed = ", ".join(map(str, error.validator_value)) if keyword == "enum" else error.message
        return f"{where}.{error.instance}: not a model name; allowed: {allowed}"
    if keyword == "enum":
        return f"{where} = {error.instance!r}: allowed values are {', '.join(map(str, error.validator_value))}"
    if keyword == "type":
        return f"{where} = {error.instance!r}: must be of type {' or '.join(_types(node))}"
    if keyword == "required":
        return f"{where}: {error.message}"
    return f"{where} = {error.instance!r}: {error.message}"


def check(cfg: dict, source: str = "config") -> dict:
    """Coerce and validate a configuration; the first problem is a one-line UserError."""
    import jsonschema

    cfg = coerce(cfg)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise UserError(f"{source}: {_message(errors[0])}{more}")
    return cfg


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


def check_values(cfg: dict) -> None:
    """What the schema cannot say, on the resolved configuration: the split's shares, and the
    experiment plan (Table 4's ablations are DrFuse-family models, image-only models train on the
    matched set: `drfuse.experiments.experiment_runs`, and the mortality task's runs). A one-line
    UserError naming the setting."""
    from drfuse.data.splits import check_settings as check_split
    from drfuse.experiments import experiment_runs, mortality_runs

    check_split(cfg["split"])
    experiment_runs(cfg)
    mortality_runs(cfg)


def checked_resolve(cfg: dict, source: str = "config") -> dict:
    """`check` the configuration as written, `resolve` it, and `check` the result again (the
    overrides may only hold part of a section; the merged whole must be complete), then
    `check_values`."""
    resolved = check(resolve(check(cfg, source)), f"{source} (after builtin_overrides)")
    check_values(resolved)
    return resolved


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        with path.open() as fh:
            cfg = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from exc
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, cohort, ...), got {type(cfg).__name__}")
    return cfg


def is_partial(cfg: dict) -> bool:
    """True when a required setting is missing somewhere: a file of the settings that change."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    return any(error.validator == "required" for error in validator.iter_errors(coerce(cfg)))


def load(path: str | Path = "config.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """Read a config file, merge `overrides` (e.g. from the command line), check and resolve it.

    A partial file (a required setting missing) is merged over the project's config.yaml first,
    as `snakemake --configfile` merges it over the Snakefile's; a complete one (config.yaml
    itself, the workflow's resolved copies) stands alone."""
    path = Path(path)
    cfg = _read(path)
    if is_partial(cfg) and PROJECT_CONFIG.is_file() and path.resolve() != PROJECT_CONFIG:
        cfg = deep_merge(_read(PROJECT_CONFIG), cfg)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return checked_resolve(cfg, str(path))


def data_source(cfg: dict) -> str:
    """A short label for tables and reports saying which data the numbers came from: the MIMIC-IV
    release detected by ingest, its row-count warnings and the unreadable images, read from the
    results folder when those stages have run (see `drfuse.provenance`)."""
    from drfuse.provenance import describe

    return describe(Path(cfg["data"]["results_dir"]), builtin=uses_builtin_data(cfg))
