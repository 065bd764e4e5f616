"""`cohort/cxr_files.txt`: the MIMIC-CXR-JPG files the cohort needs, one path per line.

Paths are relative to the MIMIC-CXR-JPG root (`files/p10/p10000032/s5.../<dicom_id>.jpg`), sorted
and unique: on real data about 10,600 of the release's 377,000 images. Only the metadata CSV is
needed before the cohort stage, so a user can download just these files afterwards (README:
"Downloading only the images the cohort needs") instead of the whole 570 GB tree.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from drfuse import atomic
from drfuse.errors import UserError

FILE_NAME = "cxr_files.txt"


def write_cxr_file_list(stays_path: Path, out_path: Path) -> int:
    """Write the distinct `cxr_path` of the stays with `has_cxr`; return how many."""
    stays_path, out_path = Path(stays_path), Path(out_path)
    if not stays_path.is_file():
        raise UserError(f"stays table not found: {stays_path} (run the cohort stage)")
    stays = pl.read_parquet(stays_path, columns=["has_cxr", "cxr_path"])
    paths = (
        stays.filter(pl.col("has_cxr").fill_null(False) & pl.col("cxr_path").is_not_null())["cxr_path"]
        .unique()
        .sort()
        .to_list()
    )
    atomic.write_text(out_path, "".join(f"{p}\n" for p in paths))
    return len(paths)
