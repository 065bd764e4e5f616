"""Cohort stage: ICU stays -> cohort/stays.parquet (+ attrition.csv, label_mapping.json).

Reads the ingested DuckDB file (read-only) and, in SQL (`sql/cohort.sql`, `labels_*.sql`,
`cxr_match.sql`, `cohort_export.sql`):
1. applies the MedFuse cohort rules (same first and last care unit; admissions with exactly one
   remaining ICU stay; anchor_age >= cohort.min_age; a diagnosis row on record), counting the
   stays removed at each step;
2. labels the 25 benchmark phenotypes (`labels.py`, source cohort.labels);
3. matches each stay's chest X-ray (`cxr_match.py`);
4. splits subjects 7:1:2 (`splits.py`, split.fractions / split.seed);
and writes `stays.parquet` per the contract in docs/architecture.md. Every file is written to a
temporary name and renamed, so a failed run leaves no finished-looking output.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from drfuse.data import cxr_match, labels, splits
from drfuse.data.sql_files import read_sql, run_sql, scalar
from drfuse.errors import UserError
from drfuse.phenotypes import PHENOTYPES

log = logging.getLogger(__name__)

REQUIRED_TABLES = ("icustays", "admissions", "patients", "diagnoses_icd")

# The stays.parquet contract (docs/architecture.md), then the 25 int8 label columns.
STAYS_SCHEMA = pa.schema(
    [
        ("stay_id", pa.int64()),
        ("subject_id", pa.int64()),
        ("hadm_id", pa.int64()),
        ("intime", pa.timestamp("us")),
        ("outtime", pa.timestamp("us")),
        ("los_hours", pa.float64()),
        ("age", pa.int64()),
        ("split", pa.string()),
        ("has_cxr", pa.bool_()),
        ("dicom_id", pa.string()),
        ("study_id", pa.int64()),
        ("cxr_time", pa.timestamp("us")),
        ("cxr_path", pa.string()),
    ]
    + [(name, pa.int8()) for name in PHENOTYPES]
)


def _attrition(con, min_age) -> list[tuple[str, int, int]]:
    steps = [
        ("ICU stays", "icustays"),
        ("same first and last care unit", "cohort_same_unit"),
        ("admission and patient on record", "cohort_on_record"),
        ("admission with exactly one ICU stay", "cohort_single_stay"),
        (f"anchor_age >= {min_age}", "cohort_adult"),
        ("with diagnosis rows", "cohort"),
    ]
    rows, previous = [], None
    for step, table in steps:
        kept = scalar(con, f"SELECT count(*) FROM {table}")
        rows.append((step, kept, 0 if previous is None else previous - kept))
        previous = kept
    return rows


def _label_matrix(stay_ids: np.ndarray, labels: pa.Table) -> np.ndarray:
    matrix = np.zeros((len(stay_ids), len(PHENOTYPES)), dtype=np.int8)
    if labels.num_rows:
        row = np.searchsorted(stay_ids, labels["stay_id"].to_numpy())
        column = {name: k for k, name in enumerate(PHENOTYPES)}
        matrix[row, [column[p] for p in labels["phenotype"].to_pylist()]] = 1
    return matrix


def _write_outputs(out_dir: Path, stays: pa.Table, attrition: list, mapping: dict) -> None:
    """All three files to temporary names first, then renamed: all or nothing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("attrition.csv", "label_mapping.json", "stays.parquet")
    tmp = {name: out_dir / f"{name}.partial" for name in names}
    try:
        with tmp["attrition.csv"].open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "stays_kept", "stays_removed"])
            writer.writerows(attrition)
        tmp["label_mapping.json"].write_text(json.dumps(mapping, indent=2) + "\n")
        pq.write_table(stays, tmp["stays.parquet"])
    except BaseException:
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    for name in names:
        os.replace(tmp[name], out_dir / name)


def build_cohort(db_path: Path, out_dir: Path, cfg: dict) -> None:
    """Cohort, labels, CXR match and splits from the ingested database -> `out_dir` files."""
    db_path, out_dir = Path(db_path), Path(out_dir)
    cohort_cfg, split_cfg = cfg["cohort"], cfg["split"]
    min_age = cohort_cfg["min_age"]
    if isinstance(min_age, bool) or not isinstance(min_age, (int, float)):
        raise UserError(f"config cohort.min_age: expected a number of years, got {min_age!r}")
    labels.check_source(cohort_cfg["labels"])  # every setting checked before any work
    cxr_match.check_settings(cohort_cfg["cxr_view"], cohort_cfg["hours"])
    splits.check_fractions(split_cfg["fractions"])
    if not db_path.is_file():
        raise UserError(f"{db_path}: database not found; run the ingest stage first")
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        raise UserError(f"{db_path}: cannot open as a DuckDB database: {exc}") from exc
    with con:
        missing = [t for t in REQUIRED_TABLES if not cxr_match.has_table(con, t)]
        if missing:
            raise UserError(f"{db_path}: tables {missing} missing; run the ingest stage again")
        run_sql(con, "cohort.sql", min_age=min_age)
        attrition = _attrition(con, min_age)
        for step, kept, removed in attrition:
            log.info("cohort %-38s kept %7d  removed %7d", step, kept, removed)
        if attrition[-1][1] == 0:
            raise UserError(f"{db_path}: no ICU stay is left after the cohort rules: {attrition}")

        mapping = labels.build_labels(con, cohort_cfg["labels"])
        log.info(
            "labels (%s): %d of %d ICD-10 diagnosis rows unmapped, %d in no benchmark group",
            mapping["label_source"], mapping["icd10_rows_unmapped"], mapping["icd10_rows"],
            mapping["icd10_rows_in_no_benchmark_group"],
        )
        n_cxr = cxr_match.match_cxr(con, cohort_cfg["cxr_view"], cohort_cfg["hours"])

        subject_ids = con.execute("SELECT DISTINCT subject_id FROM cohort").fetchnumpy()["subject_id"]
        subjects, names = splits.split_subjects(subject_ids, split_cfg["fractions"], int(split_cfg["seed"]))
        con.register("subject_split_src", pa.table({"subject_id": subjects, "split": names.tolist()}))
        con.execute("CREATE OR REPLACE TEMP TABLE subject_split AS SELECT * FROM subject_split_src")
        con.unregister("subject_split_src")

        stays = con.sql(read_sql("cohort_export.sql")).to_arrow_table()
        positives = con.sql("SELECT stay_id, phenotype FROM stay_labels").to_arrow_table()

    stay_ids = stays["stay_id"].to_numpy()
    matrix = _label_matrix(stay_ids, positives)
    columns = {name: stays[name] for name in stays.column_names}
    columns.update({name: pa.array(matrix[:, k], pa.int8()) for k, name in enumerate(PHENOTYPES)})
    table = pa.table(columns).cast(STAYS_SCHEMA)

    split_counts = {s: int(np.sum(np.asarray(table["split"].to_pylist()) == s)) for s in splits.SPLITS}
    mapping["stays"] = table.num_rows
    mapping["prevalence"] = {name: float(matrix[:, k].mean()) for k, name in enumerate(PHENOTYPES)}
    mapping["stays_without_positive_label"] = int((matrix.sum(axis=1) == 0).sum())
    _write_outputs(out_dir, table, attrition, mapping)
    log.info(
        "cohort: %d stays of %d subjects (%s), %d with a %s CXR within %s h -> %s",
        table.num_rows, len(subjects), ", ".join(f"{s} {n}" for s, n in split_counts.items()),
        n_cxr, cohort_cfg["cxr_view"], cohort_cfg["hours"], out_dir / "stays.parquet",
    )
