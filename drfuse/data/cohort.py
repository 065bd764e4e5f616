"""Cohort stage: ICU stays -> cohort/stays.parquet (+ attrition.csv, label_mapping.json,
split.json) and tables/label_modes.{csv,md,tex}.

Reads the ingested DuckDB file (read-only) and, in SQL (`sql/cohort.sql`, `labels_*.sql`,
`cxr_match.sql`, `cohort_export.sql`):
1. drops stays whose outtime is not after their intime, then applies the MedFuse cohort rules
   (same first and last care unit; admissions with exactly one remaining ICU stay; anchor_age >=
   cohort.min_age; a diagnosis row on record), counting the stays removed at each step;
2. labels the 25 benchmark phenotypes with every label source (`labels.py`): cohort.labels gives
   the labels of stays.parquet, and all of them the prevalence table label_modes;
3. matches each stay's chest X-ray (`cxr_match.py`);
4. splits subjects (`splits.py`: split.method random 7:1:2 or MedFuse's lists);
and writes `stays.parquet` per the contract in docs/architecture.md. Every file is written to a
temporary name and renamed, so a failed run leaves no finished-looking output. A cohort no run
could train on fails here, at once: an empty split, or CXR metadata that matched no stay (with
the likely cause: `cxr_match.no_match_cause`).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from drfuse import atomic
from drfuse.data import cxr_match, duckdb_limits, label_modes, labels, splits
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
        ("outtime after intime", "cohort_valid_times"),
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


def _write_outputs(out_dir: Path, stays: pa.Table, attrition: list, reports: dict[str, dict]) -> None:
    """stays.parquet, attrition.csv and the JSON reports to temporary names first, then renamed:
    all or nothing."""
    with atomic.writing_files(out_dir, ("attrition.csv", *reports, "stays.parquet")) as tmp:
        with (tmp / "attrition.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "stays_kept", "stays_removed"])
            writer.writerows(attrition)
        for name, report in reports.items():
            (tmp / name).write_text(json.dumps(report, indent=2) + "\n")
        pq.write_table(stays, tmp / "stays.parquet")


def _split(con, split_cfg: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(subjects, split names, split report) for the cohort's subjects; registers subject_split."""
    subject_ids = con.execute("SELECT DISTINCT subject_id FROM cohort").fetchnumpy()["subject_id"]
    method = splits.check_settings(split_cfg)
    if method == "medfuse":
        subjects, names, report = splits.split_subjects_medfuse(subject_ids)
        missing = report["listed_subjects_missing_from_cohort"]
        log.info(
            "split (MedFuse's lists): %d of %d listed test and %d of %d listed val subjects are not in "
            "the cohort; %d cohort subjects are in neither list (-> train)",
            missing["test"],
            report["listed_subjects"]["test"],
            missing["val"],
            report["listed_subjects"]["val"],
            report["cohort_subjects_in_neither_list"],
        )
    else:
        subjects, names = splits.split_subjects(subject_ids, split_cfg["fractions"], int(split_cfg["seed"]))
        report = {"seed": int(split_cfg["seed"]), "fractions": [float(f) for f in split_cfg["fractions"]]}
    con.register("subject_split_src", pa.table({"subject_id": subjects, "split": names.tolist()}))
    con.execute("CREATE OR REPLACE TEMP TABLE subject_split AS SELECT * FROM subject_split_src")
    con.unregister("subject_split_src")
    return subjects, names, {"method": method, **report}


def _check_splits(report: dict) -> None:
    """Every split of the full dataset holds a stay (else every training run fails late)."""
    counts = report["stays"]
    empty = [name for name in splits.SPLITS if not counts[name]]
    if not empty:
        return
    if report["method"] == "medfuse":
        remedy = "none of their subjects is in MedFuse's lists for them: use split.method random"
    else:
        remedy = "more subjects, or larger split.fractions for them"
    raise UserError(
        f"cohort: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
        f"({', '.join(f'{s} {n}' for s, n in counts.items())} stays of {report['subjects']} subjects, split.method "
        f"{report['method']}): {remedy}"
    )


def build_cohort(
    db_path: Path,
    out_dir: Path,
    cfg: dict,
    tables_dir: Path | None = None,
    threads: int | None = None,
    memory_mb: int | None = None,
) -> None:
    """Cohort, labels, CXR match and splits from the ingested database -> `out_dir` files, and
    label_modes.{csv,md,tex} -> `tables_dir` (default: `out_dir`). `threads` / `memory_mb`: the
    job's cores and memory (None: the machine's; see duckdb_limits)."""
    db_path, out_dir = Path(db_path), Path(out_dir)
    tables_dir = out_dir if tables_dir is None else Path(tables_dir)
    cohort_cfg, split_cfg = cfg["cohort"], cfg["split"]
    min_age = cohort_cfg["min_age"]
    if isinstance(min_age, bool) or not isinstance(min_age, (int, float)):
        raise UserError(f"config cohort.min_age: expected a number of years, got {min_age!r}")
    used = cohort_cfg["labels"]
    labels.check_source(used)  # every setting checked before any work
    cxr_match.check_settings(cohort_cfg["cxr_view"], cohort_cfg["hours"])
    splits.check_settings(split_cfg)
    if not db_path.is_file():
        raise UserError(f"{db_path}: database not found; run the ingest stage first")
    limits = duckdb_limits.limits(threads, memory_mb)
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        raise UserError(f"{db_path}: cannot open as a DuckDB database: {exc}") from exc
    with con:
        duckdb_limits.apply(con, *limits)
        missing = [t for t in REQUIRED_TABLES if not cxr_match.has_table(con, t)]
        if missing:
            raise UserError(f"{db_path}: tables {missing} missing; run the ingest stage again")
        run_sql(con, "cohort.sql", min_age=min_age)
        attrition = _attrition(con, min_age)
        for step, kept, removed in attrition:
            log.info("cohort %-38s kept %7d  removed %7d", step, kept, removed)
        if attrition[-1][1] == 0:
            raise UserError(f"{db_path}: no ICU stay is left after the cohort rules: {attrition}")

        labels.prepare_diagnoses(con)
        labelled = {source: labels.build_labels(con, source) for source in labels.SOURCES}
        reports = {source: report for source, (_, report) in labelled.items()}
        labels.log_summary(reports, used)
        n_cxr = cxr_match.match_cxr(con, cohort_cfg["cxr_view"], cohort_cfg["hours"])
        if n_cxr == 0 and cxr_match.has_table(con, "cxr_metadata"):
            # every matched-set run would start and fail late: say so now, before any training
            raise UserError(
                f"{db_path}: 0 of the cohort's {attrition[-1][1]:,} stays has a chest X-ray "
                f"(view {cohort_cfg['cxr_view']}) taken within {cohort_cfg['hours']:g} h of ICU admission: "
                f"{cxr_match.no_match_cause(con, cohort_cfg['cxr_view'], cohort_cfg['hours'])}"
            )
        subjects, _, split_report = _split(con, split_cfg)
        stays = con.sql(read_sql("cohort_export.sql")).to_arrow_table()

    stay_ids = stays["stay_id"].to_numpy()
    matrices = {source: _label_matrix(stay_ids, positives) for source, (positives, _) in labelled.items()}
    matrix = matrices[used]
    columns = {name: stays[name] for name in stays.column_names}
    columns.update({name: pa.array(matrix[:, k], pa.int8()) for k, name in enumerate(PHENOTYPES)})
    table = pa.table(columns).cast(STAYS_SCHEMA)

    split_names = np.asarray(table["split"].to_pylist())
    split_report["stays"] = {s: int(np.sum(split_names == s)) for s in splits.SPLITS}
    split_report["subjects"] = len(subjects)
    _check_splits(split_report)
    mapping = reports[used]
    mapping["stays"] = table.num_rows
    mapping["prevalence"] = {name: float(matrix[:, k].mean()) for k, name in enumerate(PHENOTYPES)}
    mapping["stays_without_positive_label"] = int((matrix.sum(axis=1) == 0).sum())
    label_modes.write_label_modes(tables_dir, label_modes.label_modes_table(matrices), table.num_rows, used, cfg)
    _write_outputs(out_dir, table, attrition, {"label_mapping.json": mapping, "split.json": split_report})
    log.info(
        "cohort: %d stays of %d subjects (%s split: %s), %d with a %s CXR within %s h -> %s",
        table.num_rows,
        len(subjects),
        split_report["method"],
        ", ".join(f"{s} {n}" for s, n in split_report["stays"].items()),
        n_cxr,
        cohort_cfg["cxr_view"],
        cohort_cfg["hours"],
        out_dir / "stays.parquet",
    )
