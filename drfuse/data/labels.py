"""Phenotype labels: the 25 benchmark CCS groups from each cohort stay's diagnosis rows.

Codes are normalised first (blanks and dots removed, upper case: `428.0` -> `4280`, `i50.23` ->
`I5023`); they stay strings. Two label sources (`cohort.labels`):
- `ahrq` (default): ICD-9 codes map to the HCUP CCS groups (`hcup_ccs_2015_definitions.yaml`);
  ICD-10 codes through AHRQ's own CCS for ICD-10-CM (v2019.1, `ccs_dx_icd10cm_2019_1.csv.gz`),
  which gives every code exactly one of the same numbered CCS categories. A code outside that
  table falls back to the CMS 2018 backward GEM (`gems_2018/2018_I10gem.txt`, ICD-10 -> ICD-9)
  only when every GEM target of the code lies in one and the same CCS group (a code that the GEM
  lacks because it was split takes the targets of the GEM codes that extend it); otherwise the
  code is unmapped. Every code that the GEM maps is also in AHRQ's table, so in practice the
  fallback serves codes that are prefixes of real codes (truncated or header codes).
- `medfuse`: MedFuse's lookup of the code string in `icd_9_10_definitions_2.yaml`, whose groups
  list the CCS ICD-9 codes plus one forward-GEM ICD-10 code per ICD-9 code (many common ICD-10
  codes are missing, so ICD-10-coded stays get fewer positives).

The mapping tables are loaded into DuckDB here; the joins are in `sql/labels_*.sql`.
"""

from __future__ import annotations

import csv
import gzip
import logging
from functools import cache
from importlib import resources

import pyarrow as pa
import yaml

from drfuse.data.sql_files import run_sql
from drfuse.errors import UserError

log = logging.getLogger(__name__)

RESOURCES = resources.files("drfuse.data") / "resources"
GEM_FILE = "gems_2018/2018_I10gem.txt"
CCS_DEFINITIONS = "hcup_ccs_2015_definitions.yaml"
AHRQ_FILE = "ccs_dx_icd10cm_2019_1.csv.gz"
DEFINITIONS = {"ahrq": CCS_DEFINITIONS, "medfuse": "icd_9_10_definitions_2.yaml"}
SOURCES = tuple(DEFINITIONS)
# A larger share of diagnosis rows without a CCS group means codes in an unexpected format or
# icd_version; it is logged as a warning (labels would silently lose positives).
UNMAPPED_WARNING_SHARE = 0.05


@cache
def _read_definitions(filename: str) -> dict:
    # libyaml's loader when present: the pure-Python one takes seconds on these 15 k-code files
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (RESOURCES / filename).open() as fh:
        return yaml.load(fh, Loader=loader)


@cache
def definitions_table(filename: str) -> pa.Table:
    """(code, phenotype, benchmark) for every code of every CCS group in `filename`."""
    rows = [
        (str(code).strip().upper(), name, bool(group.get("use_in_benchmark")))
        for name, group in _read_definitions(filename).items()
        for code in group["codes"]
    ]
    code, phenotype, benchmark = zip(*rows)
    return pa.table({"code": list(code), "phenotype": list(phenotype), "benchmark": list(benchmark)})


@cache
def ahrq_table() -> pa.Table:
    """(icd10_code, phenotype, benchmark): AHRQ's CCS category of every ICD-10-CM code, named as
    the group with that CCS number in the CCS definitions (the 25 benchmark names are identical
    in both; a few others differ in punctuation only)."""
    groups = {
        group["id"]: (name, bool(group.get("use_in_benchmark")))
        for name, group in _read_definitions(CCS_DEFINITIONS).items()
    }
    codes, phenotypes, benchmark = [], [], []
    path = RESOURCES / AHRQ_FILE
    with path.open("rb") as raw, gzip.open(raw, "rt", newline="") as fh:
        reader = csv.reader(fh)
        if next(reader, None) != ["icd10cm_code", "ccs_category", "ccs_category_description"]:
            raise UserError(f"{path}: expected the header icd10cm_code,ccs_category,ccs_category_description")
        for number, (code, category, _) in enumerate(reader, 2):
            if not category.isdigit() or int(category) not in groups:
                raise UserError(f"{path}:{number}: CCS category {category!r} is not in {CCS_DEFINITIONS}")
            name, in_benchmark = groups[int(category)]
            codes.append(code.strip().upper())
            phenotypes.append(name)
            benchmark.append(in_benchmark)
    return pa.table({"icd10_code": codes, "phenotype": phenotypes, "benchmark": benchmark})


@cache
def gem_table() -> pa.Table:
    """(icd10_code, icd9_code) of the backward GEM, without its "no map" rows.

    Each line is `ICD10 ICD9 FLAGS`, FLAGS five digits: approximate, no map, combination,
    scenario, choice list. "No map" rows (flag 2 = 1) have the target `NoDx` and are dropped."""
    icd10, icd9 = [], []
    path = RESOURCES / GEM_FILE
    with path.open() as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or len(fields[2]) != 5 or not fields[2].isdigit():
                raise UserError(f"{path}:{number}: expected 'ICD10 ICD9 FLAGS' (5 flag digits), got {line!r}")
            if fields[2][1] == "1":
                continue
            icd10.append(fields[0].upper())
            icd9.append(fields[1].upper())
    return pa.table({"icd10_code": icd10, "icd9_code": icd9})


def check_source(source: str) -> None:
    if source not in DEFINITIONS:
        raise UserError(f"config cohort.labels: {source!r} is not one of {list(SOURCES)}")


def _load_table(con, name: str, table: pa.Table) -> None:
    con.register(f"{name}_src", table)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_src")
    con.unregister(f"{name}_src")


def prepare_diagnoses(con) -> None:
    """Create the temporary table `dx` (the cohort's diagnosis rows, codes normalised) from the
    temporary table `cohort`."""
    run_sql(con, "labels_dx.sql")


def build_labels(con, source: str) -> tuple[pa.Table, dict]:
    """Label the stays of `dx` (see `prepare_diagnoses`) with `source`: the positive
    (stay_id, phenotype) pairs and the mapping report (row counts, GEM fallback)."""
    check_source(source)
    _load_table(con, "definitions", definitions_table(DEFINITIONS[source]))
    if source == "ahrq":
        _load_table(con, "ccs_icd10", ahrq_table())
        _load_table(con, "gem", gem_table())
    run_sql(con, f"labels_{source}.sql")
    run_sql(con, "labels_stats.sql")
    stats = con.sql("SELECT * FROM label_stats").to_arrow_table().to_pylist()[0]
    rows = max(stats["diagnosis_rows"], 1)
    report = {
        "label_source": source,
        "definitions": DEFINITIONS[source],
        "icd10_table": AHRQ_FILE if source == "ahrq" else None,
        "gem": GEM_FILE if source == "ahrq" else None,
        "unmapped_meaning": (
            "rows whose normalised code is in no CCS group: ICD-9 codes missing from the CCS "
            "definitions; ICD-10 codes missing from AHRQ's table whose GEM targets are absent or "
            "lie in several CCS groups; rows of another icd_version"
            if source == "ahrq"
            else "rows whose normalised code string is in no group of MedFuse's definitions "
            "(they list ICD-10 codes of the 25 benchmark groups only)"
        ),
        **stats,
        "share_unmapped": stats["rows_unmapped"] / rows,
        "icd10_share_unmapped": stats["icd10_rows_unmapped"] / max(stats["icd10_rows"], 1),
        "icd9_share_in_no_benchmark_group": stats["icd9_rows_in_no_benchmark_group"] / max(stats["icd9_rows"], 1),
        "icd10_share_in_no_benchmark_group": stats["icd10_rows_in_no_benchmark_group"] / max(stats["icd10_rows"], 1),
    }
    if source == "ahrq":
        report["gem_fallback"] = _fallback_report(con)
    positives = con.sql("SELECT stay_id, phenotype FROM stay_labels ORDER BY stay_id, phenotype").to_arrow_table()
    return positives, report


def _fallback_report(con) -> dict:
    """What the GEM fallback did: rows, stays, stay labels (positive only through it) and codes,
    overall and per benchmark label; and the rows left unmapped because their targets are mixed."""
    run_sql(con, "labels_fallback_stats.sql")
    overall = con.sql("SELECT * FROM fallback_stats").to_arrow_table().to_pylist()[0]
    per_label = con.sql("SELECT * FROM fallback_per_label ORDER BY phenotype").to_arrow_table().to_pylist()
    return {
        **overall,
        "per_label": {r["phenotype"]: {k: v for k, v in r.items() if k != "phenotype"} for r in per_label},
    }


def log_summary(reports: dict[str, dict], used: str) -> None:
    """One summary line for the labels used, one for the GEM fallback; a warning when the share
    of diagnosis rows in no CCS group (ahrq's tables: every ICD-9 and ICD-10-CM code has one)
    suggests codes in a format or version the tables do not know."""
    report = reports[used]
    log.info(
        "labels (%s): %d of %d diagnosis rows unmapped (ICD-9 %d of %d, ICD-10 %d of %d, other versions %d)",
        used,
        report["rows_unmapped"],
        report["diagnosis_rows"],
        report["icd9_rows_unmapped"],
        report["icd9_rows"],
        report["icd10_rows_unmapped"],
        report["icd10_rows"],
        report["other_version_rows"],
    )
    ahrq = reports["ahrq"]
    fallback = ahrq["gem_fallback"]
    log.info(
        "labels (ahrq): GEM fallback for ICD-10 codes outside AHRQ's table labelled %d rows "
        "(%d codes, %d stays, %d stay labels positive only through it); %d rows (%d codes) left "
        "unmapped because their GEM targets lie in several CCS groups or in none",
        fallback["rows"],
        fallback["codes"],
        fallback["stays"],
        fallback["stay_labels_only_through_fallback"],
        fallback["rows_unmapped_mixed_targets"],
        fallback["codes_unmapped_mixed_targets"],
    )
    if ahrq["share_unmapped"] > UNMAPPED_WARNING_SHARE:
        log.warning(
            "diagnoses_icd: %.1f %% of the cohort's diagnosis rows (%d of %d) have no CCS group "
            "(ICD-9 %d, ICD-10 %d, other icd_version %d): check the icd_code format and icd_version "
            "values; labels lose these rows",
            100 * ahrq["share_unmapped"],
            ahrq["rows_unmapped"],
            ahrq["diagnosis_rows"],
            ahrq["icd9_rows_unmapped"],
            ahrq["icd10_rows_unmapped"],
            ahrq["other_version_rows"],
        )
