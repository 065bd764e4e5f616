"""The `synth:` section of config.yaml, checked once, with defaults for the optional settings."""

from __future__ import annotations

from dataclasses import dataclass

from drfuse.errors import UserError
from drfuse.synth.channels import check_labels

# Optional settings (config.yaml may leave them out) and their defaults.
DEFAULTS = {
    "images": True,  # false: write the CXR metadata but no JPEG files (benchmarks at MIMIC scale)
    "cxr_share": 0.18,  # share of ICU stays with an AP image in [intime, intime + 48 h]
    "year_span": 80,  # anchor years are drawn from [first_year, first_year + year_span)
    "jpeg_quality": 90,
    "gzip_level": 1,  # zlib level: 1 is ~2x faster than 6 end to end, files ~35 % larger
    "chunk_stays": 2000,  # ICU stays per event chunk: bounds memory at any scale
    "modal_inconsistency": [],  # labels whose positives show their signal in one modality each (drfuse.synth.channels)
    "mortality_signal": True,  # who dies in hospital drawn from planted evidence, mostly EHR (drfuse.synth.mortality)
}


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


def parse(settings: dict) -> SynthSettings:
    """Validate `settings` (the config's synth section); errors name the setting at fault."""
    if not isinstance(settings, dict):
        raise UserError(f"config: synth must be a mapping, got {type(settings).__name__}")
    for key in ("n_subjects", "seed", "image_size", "first_year", "icd10_from_year"):
        if key not in settings:
            raise UserError(f"config: synth.{key} is missing")

    def integer(key: str, value, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise UserError(f"config: synth.{key} must be an integer {bound}, got {value!r}")
        return value

    size = settings["image_size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise UserError(f"config: synth.image_size must be [height, width], got {size!r}")
    height, width = (integer("image_size", v, 32, 8192) for v in size)
    opt = {**DEFAULTS, **{k: settings[k] for k in DEFAULTS if k in settings}}
    share = opt["cxr_share"]
    if not isinstance(share, (int, float)) or not 0.0 < share < 0.9:
        raise UserError(f"config: synth.cxr_share must be a number in (0, 0.9), got {share!r}")
    for key in ("images", "mortality_signal"):
        if not isinstance(opt[key], bool):
            raise UserError(f"config: synth.{key} must be true or false, got {opt[key]!r}")
    parsed = SynthSettings(
        n_subjects=integer("n_subjects", settings["n_subjects"], 1, 5_000_000),
        seed=integer("seed", settings["seed"], 0),
        image_height=height,
        image_width=width,
        first_year=integer("first_year", settings["first_year"], 2000, 2500),
        icd10_from_year=integer("icd10_from_year", settings["icd10_from_year"], 1900, 2700),
        images=opt["images"],
        cxr_share=float(share),
        year_span=integer("year_span", opt["year_span"], 1, 200),
        jpeg_quality=integer("jpeg_quality", opt["jpeg_quality"], 10, 100),
        gzip_level=integer("gzip_level", opt["gzip_level"], 1, 9),
        chunk_stays=integer("chunk_stays", opt["chunk_stays"], 1),
        modal_inconsistency=check_labels(opt["modal_inconsistency"]),
        mortality_signal=opt["mortality_signal"],
    )
    return parsed
