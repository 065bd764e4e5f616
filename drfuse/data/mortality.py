"""The in-hospital mortality (IHM) cohort: `cohort/mortality.parquet` and its attrition rows.

MedFuse's second task, on this project's cohort: the phenotyping cohort's stays
(`cohort/stays.parquet`: the same MedFuse cohort rules, the same subject-level split, the same
48-hour inputs and chest X-ray match) whose ICU stay lasts at least the input window,
`icustays.los` x 24 >= `cohort.hours` (48 h), labelled with death during the stay's hospital
admission (`sql/mortality.sql`: `admissions.deathtime`, or `patients.dod` as midnight, within
[admittime, dischtime], bounds included).

Outputs (`build_mortality_cohort`, each written to a temporary name and renamed):
- `mortality.parquet`: one row per IHM stay, sorted by stay_id: `stay_id` (int64),
  `in_hospital_mortality` (int8 0/1). Split, CXR match and inputs are the stay's row of
  stays.parquet.
- `mortality_attrition.csv`: `step, stays_kept, stays_removed` from the phenotyping cohort to the
  IHM cohort.

Its own stage (rule `mortality_cohort`, `drfuse mortality-cohort`), reading the cohort stage's
stays.parquet: the phenotyping files stay exactly as they were, and the mortality task re-runs
only what depends on its cohort. The stage fails, writing nothing, when a split of the IHM cohort
holds no stay, or no stay with a chest X-ray match while the cohort has some (a matched split of
the task would be empty); a split without a death is a warning (its AUPRC is undefined).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from drfuse import atomic
from drfuse.data import duckdb_limits
from drfuse.data.cxr_match import has_table
from drfuse.data.splits import SPLITS
from drfuse.data.sql_files import run_sql
from drfuse.errors import UserError
from drfuse.tasks import MORTALITY_LABEL

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("stay_id", pa.int64()), (MORTALITY_LABEL, pa.int8())])
ATTRITION_FILE = "mortality_attrition.csv"
REQUIRED_TABLES = ("icustays", "admissions", "patients")


def mortality_cohort(con, stays: pa.Table, min_hours: float) -> pa.Table:
    """The IHM cohort of the phenotyping cohort's `stays` (stays.parquet's stay_id) in the
    ingested database `con`: stay_id, in_hospital_mortality (`sql/mortality.sql`)."""
    con.register("cohort_stays_src", stays.select(["stay_id"]))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE cohort_stays AS SELECT stay_id FROM cohort_stays_src")
    finally:
        con.unregister("cohort_stays_src")
    run_sql(con, "mortality.sql", min_hours=float(min_hours))
    return (
        con.sql("SELECT stay_id, in_hospital_mortality FROM mortality_cohort ORDER BY stay_id")
        .to_arrow_table()
        .cast(SCHEMA)
    )


def _write(out_dir: Path, table: pa.Table, attrition: list[tuple[str, int, int]]) -> None:
    """mortality.parquet and the attrition rows, to temporary names first, then renamed."""
    with atomic.writing_files(out_dir, ("mortality.parquet", ATTRITION_FILE)) as tmp:
        pq.write_table(table, tmp / "mortality.parquet")
        with (tmp / ATTRITION_FILE).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "stays_kept", "stays_removed"])
            writer.writerows(attrition)


def build_mortality_cohort(
    db_path: Path,
    stays_path: Path,
    out_dir: Path,
    min_hours: float,
    threads: int | None = None,
    memory_mb: int | None = None,
) -> pa.Table:
    """`out_dir`/mortality.parquet and mortality_attrition.csv from the ingested database and the
    phenotyping cohort (`stays_path`); `min_hours`: the least ICU stay (config cohort.hours).
    Returns the cohort table."""
    db_path, stays_path, out_dir = Path(db_path), Path(stays_path), Path(out_dir)
    if isinstance(min_hours, bool) or not isinstance(min_hours, (int, float)) or min_hours <= 0:
        raise UserError(f"config cohort.hours: expected a positive number of hours, got {min_hours!r}")
    if not db_path.is_file():
        raise UserError(f"{db_path}: database not found; run the ingest stage first")
    if not stays_path.is_file():
        raise UserError(f"cohort file not found: {stays_path} (run `drfuse cohort`)")
    stays = pq.read_table(stays_path, columns=["stay_id", "split", "has_cxr"])
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        raise UserError(f"{db_path}: cannot open as a DuckDB database: {exc}") from exc
    with con:
        duckdb_limits.apply(con, *duckdb_limits.limits(threads, memory_mb))
        missing = [t for t in REQUIRED_TABLES if not has_table(con, t)]
        if missing:
            raise UserError(f"{db_path}: tables {missing} missing; run the ingest stage again")
        table = mortality_cohort(con, stays, min_hours)

    split_of = dict(zip(stays["stay_id"].to_pylist(), zip(stays["split"].to_pylist(), stays["has_cxr"].to_pylist())))
    label = table[MORTALITY_LABEL].to_pylist()
    per_split = {s: [0, 0, 0] for s in SPLITS}  # stays, deaths, stays with a CXR match
    for stay_id, died in zip(table["stay_id"].to_pylist(), label):
        split, has_cxr = split_of[stay_id]
        per_split[split][0] += 1
        per_split[split][1] += died
        per_split[split][2] += has_cxr
    # every split holds a stay, and one with a CXR match when the cohort has any: the matched test
    # set is every run's, a matched split is what the matched-set runs train and stop on
    any_cxr = any(stays["has_cxr"].to_pylist())
    empty = [s for s, (n, _, with_cxr) in per_split.items() if n == 0 or (any_cxr and with_cxr == 0)]
    if empty:
        raise UserError(
            f"{stays_path}: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} of the in-hospital "
            f"mortality cohort (stays of at least {min_hours:g} h) hold{'' if len(empty) > 1 else 's'} no stay"
            f"{' with a chest X-ray match' if any_cxr else ''} ("
            + ", ".join(f"{s} {n} stays, {c} with a CXR" for s, (n, _, c) in per_split.items())
            + "): more subjects, or leave mortality out of experiments.tasks"
        )
    for split, (n, deaths, _) in per_split.items():
        if deaths == 0:
            log.warning(
                "mortality cohort: no death among the %d %s stays: their AUPRC and AUROC are undefined", n, split
            )
    n_cohort = stays.num_rows
    attrition = [
        ("phenotyping cohort", n_cohort, 0),
        (f"ICU stay of at least {min_hours:g} h (icustays.los x 24)", table.num_rows, n_cohort - table.num_rows),
    ]
    _write(out_dir, table, attrition)
    log.info(
        "mortality cohort: %d of %d stays, %d deaths (%s) -> %s",
        table.num_rows,
        n_cohort,
        sum(label),
        ", ".join(f"{s} {n} stays / {d} deaths" for s, (n, d, _) in per_split.items()),
        out_dir / "mortality.parquet",
    )
    return table
