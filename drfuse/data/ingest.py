"""Ingest stage: raw MIMIC-IV (+ MIMIC-CXR-JPG metadata) CSVs -> one typed DuckDB file.

Loads patients, admissions, transfers, icustays, diagnoses_icd, d_items, d_labitems, chartevents
and labevents (and `cxr_metadata` when a MIMIC-CXR root is given) with explicit column types
(`mimic_version.TABLES`). The event tables keep only the item ids of the 17 variables
(`drfuse.data.items`) and the columns the pipeline reads (`TableSpec.required`); the filter runs
while the file streams through DuckDB, so the 300 M-row chartevents never has to fit in memory. The
rows of the whole file, checked against the release's published counts, come from the same scan:
DuckDB's profiler reports how many rows its CSV reader scanned, so no second pass over the
compressed file is needed (gzip decompression is most of a scan's time and runs on one core).

The manifest lists every source file with its size and mtime (`mimic_version.source_files`, also
the ingest rule's params: a file changed, added or removed in place makes Snakemake re-ingest).
Identical duplicate rows of the CXR metadata are dropped and counted (a warning); a dicom_id on rows
that differ is an error naming the ids.

The version is detected, never assumed: layout from the folders (v1.0 has core/), v3.x from its
'2020 - 2022' anchor year group, v2.2 from chartevents.caregiver_id. The manifest records it, the
row counts and any warning (e.g. a full-size table whose count differs from the published one).

Everything is written to a temporary folder beside the database and renamed at the end
(`drfuse.atomic`): a failed run leaves no database.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import duckdb
from tqdm import tqdm

from drfuse import atomic
from drfuse.data import duckdb_limits, items
from drfuse.data import mimic_version as mv
from drfuse.data.sql_files import read_sql as _sql
from drfuse.data.sql_files import run_sql, scalar
from drfuse.errors import UserError

log = logging.getLogger(__name__)

EVENT_ITEMS = {"chartevents": items.chart_itemids, "labevents": items.lab_itemids}
# Conflicting CXR metadata ids named in the error.
SHOW_IDS = 10
# Small tables first: icustays tells whether the data is full size before the big files start.
LOAD_ORDER = (
    "icustays",
    "patients",
    "admissions",
    "transfers",
    "diagnoses_icd",
    "d_items",
    "d_labitems",
    "labevents",
    "chartevents",
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source(path: Path, columns: dict[str, str]) -> str:
    struct = "{" + ", ".join(f"{_literal(c)}: {_literal(t)}" for c, t in columns.items()) + "}"
    return _sql("ingest_read_csv.sql", path=_literal(str(path)), columns=struct)


def _duckdb_message(exc: duckdb.Error) -> str:
    """DuckDB's error without the paragraphs it appends to CSV errors: "Possible solutions" that
    speak of type auto-detection and sample sizes (this reader sets every type) and a dump of the
    reader's options. What is kept: the error, the line number, the offending line, the column."""
    lines = []
    for line in str(exc).strip().splitlines():
        if not line.strip() or line.startswith(("Column ", "This type was", "Possible", "* ", "  ")):
            break
        lines.append(line.strip())
    return "; ".join(lines)


def _rows_scanned(profile: str) -> int | None:
    """Rows the CSV reader scanned (the whole file, before the item filter) according to DuckDB's
    JSON profile of the last query; None when the profile has no single READ_CSV scan."""
    counts: list[int] = []
    stack = list(json.loads(profile).get("operator", []))
    while stack:
        node = stack.pop()
        if node.get("extra_info", {}).get("Function") == "READ_CSV" and "rows_scanned" in node:
            counts.append(int(node["rows_scanned"]))
        stack.extend(node.get("children", []))
    return counts[0] if len(counts) == 1 else None


def _plan(mimic_iv_dir: Path, mimic_cxr_dir: Path | None, layout: str) -> tuple[dict, list[str]]:
    """Locate every file and check its header before anything is loaded (fail fast)."""
    plan, warnings = {}, []
    for table in LOAD_ORDER:
        spec = mv.TABLES[table]
        path = mv.table_path(mimic_iv_dir, layout, table)
        header = mv.read_header(path)
        columns, warn = mv.typed_columns(path, header, spec, layout)
        plan[table] = (path, spec, columns)
        warnings += warn
    if mimic_cxr_dir is not None:
        if not mimic_cxr_dir.is_dir():
            raise UserError(f"MIMIC-CXR directory not found: {mimic_cxr_dir}")
        path = mv.locate(mimic_cxr_dir, mv.CXR_METADATA_STEM, "the MIMIC-CXR-JPG v2.0.0 metadata")
        columns, warn = mv.typed_columns(path, mv.read_header(path), mv.CXR_METADATA, "CXR-JPG 2.0.0")
        plan["cxr_metadata"] = (path, mv.CXR_METADATA, columns)
        warnings += warn
    return plan, warnings


def _load(con, table: str, path: Path, spec: mv.TableSpec, columns: dict[str, str], version: str) -> int | None:
    """Create `table`; for an event table return the rows of the whole file (None if unknown)."""
    source = _source(path, columns)
    where, kept = "", list(columns)
    if table in EVENT_ITEMS:
        where = f"WHERE itemid IN ({', '.join(map(str, EVENT_ITEMS[table]()))})"
        # Only the columns downstream reads: DuckDB then neither parses nor stores the others
        # (storetime, caregiver_id, ref ranges, ...): ~20 % less CPU on the extraction benchmark.
        kept = [c for c in columns if c in spec.required]
    if table == "cxr_metadata":
        query = _sql("ingest_cxr_metadata.sql", source=source)
    else:
        select = ", ".join(
            f"{_ident(c)} AS {_ident(spec.renames[c])}" if c in spec.renames else _ident(c) for c in kept
        )
        query = _sql("ingest_table.sql", table=table, select=select, source=source, where=where)
    try:
        if table not in EVENT_ITEMS:
            con.execute(query)
            return None
        con.execute("SET enable_profiling = 'no_output'")  # profile kept in memory, printed nowhere
        try:
            con.execute(query)
            return _rows_scanned(con.get_profiling_information())
        finally:
            con.execute("RESET enable_profiling")
    except duckdb.Error as exc:
        raise UserError(
            f"{path}: cannot load {table} as MIMIC-IV v{version} (typed {columns}): {_duckdb_message(exc)}"
        ) from exc


def _count_source(con, table: str, path: Path, columns: dict[str, str], version: str) -> int:
    """Second pass over a file, only when the profiler did not report the scanned rows."""
    log.warning("%s: DuckDB reported no scanned-row count; counting the rows in a second pass", path)
    try:
        return scalar(con, _sql("ingest_count.sql", source=_source(path, columns)))
    except duckdb.Error as exc:
        raise UserError(
            f"{path}: cannot read {table} as MIMIC-IV v{version} (counting its rows): {_duckdb_message(exc)}"
        ) from exc


def _detect_version(con, layout: str, plan: dict) -> tuple[str, str | None, list[str]]:
    """(version, release or None, evidence)."""
    if layout == mv.LAYOUT_V1:
        return "1.0", "1.0", ["core/ folder (v1.0 layout)"]
    recent = scalar(con, "SELECT count(*) FROM patients WHERE anchor_year_group = '2020 - 2022'")
    if recent:
        return "3.x", None, ["hosp/ + icu/ layout", f"{recent} patients in anchor_year_group '2020 - 2022' (v3.x)"]
    evidence = ["hosp/ + icu/ layout", "no anchor_year_group '2020 - 2022' (added in v3.0)"]
    if "caregiver_id" in plan["chartevents"][2]:
        return "2.x", "2.2", evidence + ["chartevents.caregiver_id (added in v2.2)"]
    return "2.x", None, evidence + ["no chartevents.caregiver_id: v2.0 or v2.1"]


def _count_warnings(version: str, release: str | None, rows: dict[str, int]) -> list[str]:
    if rows["icustays"] < mv.FULL_SIZE_MIN_ICUSTAYS:
        return []  # a demo or a subset: nothing to compare with
    key = release if release in mv.KNOWN_COUNTS else version
    known = mv.KNOWN_COUNTS.get(key)
    if known is None:
        return [f"full-size MIMIC-IV v{version} without published row counts to compare with"]
    return [
        f"{table}: {rows[table]:,} rows, MIMIC-IV v{key} has {expected:,}"
        + (f" (+/- {tol:,})" if tol else "")
        + ": incomplete or modified files?"
        for table, (expected, tol) in known.items()
        if abs(rows[table] - expected) > tol
    ]


def _deduplicate_cxr(con, path: Path) -> int:
    """Drop the CXR metadata's identical duplicate rows, returning how many; a dicom_id on rows
    that differ is a UserError naming the ids (which row is the image's cannot be told)."""
    before = scalar(con, "SELECT count(*) FROM cxr_metadata")
    run_sql(con, "ingest_cxr_distinct.sql")
    dropped = before - scalar(con, "SELECT count(*) FROM cxr_metadata")
    conflicts = con.execute(_sql("ingest_cxr_conflicts.sql")).fetchall()
    if conflicts:
        shown = ", ".join(f"{dicom_id} ({n} rows)" for dicom_id, n in conflicts[:SHOW_IDS])
        more = f" and {len(conflicts) - SHOW_IDS} more" if len(conflicts) > SHOW_IDS else ""
        raise UserError(
            f"{path}: {len(conflicts)} dicom_id(s) on metadata rows that differ (time, subject or view of the image "
            f"cannot be told): {shown}{more}; correct or remove those rows"
        )
    return dropped


def _load_timed(con, table: str, planned: tuple, layout: str) -> dict:
    """Load one table; its manifest entry (path, rows, seconds, and rows_source for event tables)."""
    path, spec, columns = planned
    start = time.perf_counter()
    source_rows = _load(con, table, path, spec, columns, layout)
    if table in EVENT_ITEMS and source_rows is None:
        source_rows = _count_source(con, table, path, columns, layout)
    rows = scalar(con, f"SELECT count(*) FROM {table}")
    info = {"path": str(path), "rows": rows, "seconds": round(time.perf_counter() - start, 2)}
    if source_rows is not None:
        info["rows_source"] = source_rows
    log.info("%-14s %12s rows  (%s)", table, f"{rows:,}", path.name)
    return info


def _load_all(con, plan: dict, layout: str) -> dict[str, dict]:
    """Load every planned table; manifest entries in plan order."""
    loaded: dict[str, dict] = {}
    with tqdm(total=len(plan), desc="ingest", unit="table", disable=None) as bar:
        for table in plan:
            if table not in EVENT_ITEMS:
                loaded[table] = _load_timed(con, table, plan[table], layout)
                bar.update()
        # Each event file is one gzip stream that DuckDB inflates on one core: load the two side
        # by side, each on its own cursor, so that labevents' scan overlaps chartevents'.
        cursors = {table: con.cursor() for table in EVENT_ITEMS}
        try:
            with ThreadPoolExecutor(len(cursors)) as pool:
                futures = {pool.submit(_load_timed, cur, t, plan[t], layout): t for t, cur in cursors.items()}
                try:
                    for future in as_completed(futures):
                        loaded[futures[future]] = future.result()
                        bar.update()
                except BaseException:
                    for cur in cursors.values():
                        cur.interrupt()  # stop the other load instead of waiting for it
                    raise
        finally:
            for cur in cursors.values():
                cur.close()
    return {table: loaded[table] for table in plan}


def ingest(
    mimic_iv_dir: Path,
    mimic_cxr_dir: Path | None,
    db_path: Path,
    manifest_path: Path,
    threads: int | None = None,
    memory_mb: int | None = None,
) -> dict:
    """Load MIMIC-IV (+ CXR metadata) into `db_path`; write and return the manifest.

    `threads` / `memory_mb`: the job's cores and memory (None: the machine's; see duckdb_limits)."""
    mimic_iv_dir, db_path, manifest_path = Path(mimic_iv_dir), Path(db_path), Path(manifest_path)
    mimic_cxr_dir = Path(mimic_cxr_dir) if mimic_cxr_dir else None
    layout = mv.detect_layout(mimic_iv_dir)
    sources = mv.source_files(mimic_iv_dir, mimic_cxr_dir)  # as they were before loading
    plan, warnings = _plan(mimic_iv_dir, mimic_cxr_dir, layout)
    log.info("MIMIC-IV layout v%s at %s; loading %d tables into %s", layout, mimic_iv_dir, len(plan), db_path)

    threads, memory_limit = duckdb_limits.limits(threads, memory_mb)
    # The database last: it exists only when everything succeeded. Its WAL and spill files stay
    # in the temporary folder, removed with it.
    with atomic.writing_files(db_path.parent, [db_path.name]) as stage:
        with duckdb.connect(str(stage / db_path.name)) as con:
            duckdb_limits.apply(con, threads, memory_limit)
            con.execute("SET preserve_insertion_order = false")  # lets CREATE TABLE AS stream
            tables = _load_all(con, plan, layout)
            version, release, evidence = _detect_version(con, layout, plan)
            if "cxr_metadata" in tables:
                cxr_path = plan["cxr_metadata"][0]
                dropped = _deduplicate_cxr(con, cxr_path)
                if dropped:
                    tables["cxr_metadata"].update(
                        rows=tables["cxr_metadata"]["rows"] - dropped, duplicate_rows_dropped=dropped
                    )
                    warnings.append(f"{cxr_path}: {dropped} identical duplicate row(s) dropped")
                bad = scalar(con, "SELECT count(*) FROM cxr_metadata WHERE study_datetime IS NULL")
                if bad:
                    warnings.append(f"{plan['cxr_metadata'][0]}: {bad} rows with unreadable StudyDate/StudyTime")
        rows = {t: info.get("rows_source", info["rows"]) for t, info in tables.items()}
        count_warnings = _count_warnings(version, release, rows)
        warnings += count_warnings
        for warning in warnings:
            log.warning("%s", warning)
        manifest = {
            "mimic_iv_dir": str(mimic_iv_dir),
            "mimic_cxr_dir": str(mimic_cxr_dir) if mimic_cxr_dir else None,
            "layout": layout,
            "version": version,
            "release": release,
            "version_evidence": evidence,
            "full_size": rows["icustays"] >= mv.FULL_SIZE_MIN_ICUSTAYS,
            "tables": tables,
            "source_files": sources,
            "item_filter": {t: list(f()) for t, f in EVENT_ITEMS.items()},
            "excluded_items": {str(k): v for k, v in items.EXCLUDED_ITEMS.items()},
            "duckdb": {"version": duckdb.__version__, "threads": threads, "memory_limit": memory_limit},
            "warnings": warnings,
            "row_count_warnings": count_warnings,  # also in `warnings`; tables and the report cite them
        }
        atomic.write_text(manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")
    log.info("MIMIC-IV v%s (release %s) ingested: %s", version, release or "unknown", db_path)
    return manifest
