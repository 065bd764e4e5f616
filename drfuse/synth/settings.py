"""The `synth:` section of config.yaml as the generator's settings.

config.yaml holds every setting with its default, and workflow/schemas/config.schema.yaml checks
their types and ranges (`drfuse.config.check`): `parse` takes a section from a checked
configuration, so it checks only that the section is complete and what the schema cannot say,
the labels of `modal_inconsistency`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from drfuse.errors import UserError
from drfuse.synth.channels import check_labels


@dataclass(frozen=True)
class SynthSettings:
    n_subjects: int
    seed: int
    image_height: int
    image_width: int
    first_year: int
    icd10_from_year: int
    images: bool
    cxr_share: float
    year_span: int
    jpeg_quality: int
    gzip_level: int
    chunk_stays: int
    modal_inconsistency: tuple[str, ...]
    mortality_signal: bool


# the settings of the section, in the fields' order: image_size [height, width] holds two of them
KEYS = tuple(dict.fromkeys("image_size" if f.name.startswith("image_") else f.name for f in fields(SynthSettings)))


def parse(settings: dict) -> SynthSettings:
    """`settings`, the schema-checked `synth:` section, complete (config.yaml's, changed where
    wanted); a missing setting or a label without a signal in both modalities is a UserError
    naming it."""
    missing = [key for key in KEYS if key not in settings]
    if missing:
        raise UserError(
            f"config: synth.{', synth.'.join(missing)} missing: the generator takes a whole synth section "
            "(config.yaml's holds every setting with its default)"
        )
    values = {key: settings[key] for key in KEYS if key != "image_size"}
    height, width = settings["image_size"]
    values["modal_inconsistency"] = check_labels(values["modal_inconsistency"])
    return SynthSettings(**values, image_height=height, image_width=width)


def from_config_yaml(**changes) -> dict:
    """config.yaml's `synth:` section (every setting with its default; not `builtin_overrides`)
    with `changes`, checked by the schema: a section for calling `drfuse.synth.generate` directly
    (tests, benchmarks)."""
    import yaml

    from drfuse import config as config_mod

    cfg = yaml.safe_load(config_mod.PROJECT_CONFIG.read_text())
    return config_mod.check(config_mod.deep_merge(cfg, {"synth": changes}))["synth"]
