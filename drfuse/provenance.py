"""Where the numbers came from: the detected MIMIC-IV release, ingest's row-count warnings and the
images that could not be used, read from a results folder for the notes under every table and
for `tables/provenance.md` (shown in the Snakemake report).
"""

from __future__ import annotations

import json
from pathlib import Path

from drfuse import atomic

MANIFEST = Path("ingest") / "manifest.json"
BAD_IMAGES = Path("images") / "bad_images.csv"
IMAGE_INDEX = Path("images") / "index.parquet"


def facts(results_dir: Path) -> dict:
    """What the ingest and images stages recorded (keys absent when a stage has not run)."""
    results_dir = Path(results_dir)
    out: dict = {}
    manifest = results_dir / MANIFEST
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        out["version"] = m.get("version")
        out["release"] = m.get("release")
        out["warnings"] = list(m.get("warnings", []))
    bad, index = results_dir / BAD_IMAGES, results_dir / IMAGE_INDEX
    if bad.is_file() and index.is_file():
        import polars as pl

        out["bad_images"] = pl.read_csv(bad, infer_schema_length=0).height
        out["images"] = pl.scan_parquet(index).select(pl.len()).collect().item()
    return out


def describe(results_dir: Path, builtin: bool) -> str:
    """One sentence: data, release, warnings, unusable images."""
    f = facts(results_dir)
    if builtin:
        text = "built-in synthetic data"
    elif f.get("version"):
        release = f["release"] or f"{f['version']} (exact release unknown)"
        text = f"MIMIC-IV v{release} + MIMIC-CXR-JPG"
    else:
        text = "MIMIC-IV + MIMIC-CXR-JPG"
    warnings = f.get("warnings") or []
    if warnings:
        text += f"; {len(warnings)} ingest warning(s): " + " | ".join(warnings)
    elif "warnings" in f and not builtin:
        text += "; row counts as published"
    if "bad_images" in f:
        total = f["bad_images"] + f["images"]
        text += f"; {f['bad_images']:,} of {total:,} cohort images missing or unreadable"
    return text


def write_markdown(results_dir: Path, builtin: bool, out_path: Path) -> None:
    """`tables/provenance.md`: the same facts, one per line, for the report."""
    f = facts(results_dir)
    lines = ["# Data", "", f"- source: {describe(results_dir, builtin).split(';')[0]}"]
    if f.get("version"):
        lines.append(f"- MIMIC-IV version detected by ingest: {f['version']} (release {f['release'] or 'unknown'})")
    lines += [f"- ingest warning: {w}" for w in f.get("warnings", [])]
    if "bad_images" in f:
        lines.append(
            f"- images missing or unreadable: {f['bad_images']:,} of {f['bad_images'] + f['images']:,} "
            "(list: images/bad_images.csv)"
        )
    atomic.write_text(out_path, "\n".join(lines) + "\n")
