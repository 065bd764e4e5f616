"""Rebuild tests/data/ from the open data in ../shared (run from the project root:
`python tests/data/make_subset.py`). Rows are copied as text, so every kept line is byte-identical
to the source file; see tests/data/README.md for what is here and its licences."""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent
# Adults with ICU stays, chart and lab events, ICD-9 and ICD-10 diagnoses; one, two and three stays.
SUBJECTS = {"10000032", "10002930", "10006580", "10007795", "10015860", "10017492", "10021312"}
TABLES = {
    "hosp": ["patients", "admissions", "transfers", "diagnoses_icd", "labevents", "d_labitems"],
    "icu": ["icustays", "chartevents", "d_items"],
}
WHOLE = {"d_labitems", "d_items"}  # dictionaries: kept whole
CXR = [
    "nih-chestxray14/images/00000075_000.png",
    "nih-chestxray14/images/00000100_000.png",
    "nih-chestxray14/images/00000129_000.png",
    "nih-chestxray14/images/00000282_000.png",
    "nih-chestxray14/images/00000284_000.png",
    "nih-chestxray14/images/00000353_000.png",
    "torchxrayvision-tests/00000001_000.png",
    "dicom/nih-gcp_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm",
    "dicom/siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
    "mimic-cxr-format-SYNTHETIC/mimic-cxr-2.0.0-metadata.csv",
]


def subset_table(src: Path, dst: Path, keep_all: bool) -> int:
    with gzip.open(src, "rt", newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    col = None if keep_all else header.index("subject_id")
    kept = [lines[0]] + [ln for ln in lines[1:] if keep_all or next(csv.reader(io.StringIO(ln)))[col] in SUBJECTS]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(dst, "wb", compresslevel=9, mtime=0) as fh:  # mtime 0: reproducible bytes
        fh.write("".join(kept).encode())
    return len(kept) - 1


def main() -> None:
    demo = SHARED / "mimic-iv-demo"
    for module, tables in TABLES.items():
        for table in tables:
            n = subset_table(
                demo / module / f"{table}.csv.gz", OUT / "mimic-iv-demo" / module / f"{table}.csv.gz", table in WHOLE
            )
            print(f"{module}/{table}: {n} rows")
    shutil.copy(demo / "LICENSE.txt", OUT / "mimic-iv-demo" / "LICENSE.txt")
    for rel in CXR:
        dst = OUT / "cxr-samples" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED / "cxr-samples" / rel, dst)


if __name__ == "__main__":
    main()
