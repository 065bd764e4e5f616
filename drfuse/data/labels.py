"""Phenotype labels: the 25 benchmark CCS groups from each cohort stay's diagnosis rows.

Two label sources (`cohort.labels`):
- `gem` (this project): ICD-9 codes map directly to the HCUP CCS 2015 groups
  (`hcup_ccs_2015_definitions.yaml`); ICD-10 codes first through the CMS 2018 *backward* GEM
  (`gems_2018/2018_I10gem.txt`, ICD-10 -> ICD-9), every ICD-9 target of a code counting; a
  code that the FY2018 GEM no longer lists because it was split into longer codes (MIMIC-IV's
  E780, I272, K859, ...) takes the targets of the codes that extend it.
- `medfuse`: MedFuse's lookup of the code string in `icd_9_10_definitions_2.yaml`, whose groups
  list the CCS ICD-9 codes plus one forward-GEM ICD-10 code per ICD-9 code (many common ICD-10
  codes are missing, so ICD-10-coded stays get fewer positives).

The mapping tables are loaded into DuckDB here; the joins are in `sql/labels_*.sql`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pyarrow as pa
import yaml

from drfuse.data.sql_files import run_sql
from drfuse.errors import UserError

RESOURCES = resources.files("drfuse.data") / "resources"
GEM_FILE = "gems_2018/2018_I10gem.txt"
DEFINITIONS = {"gem": "hcup_ccs_2015_definitions.yaml", "medfuse": "icd_9_10_definitions_2.yaml"}


@lru_cache(maxsize=None)
def _read_definitions(filename: str) -> dict:
    # libyaml's loader when present: the pure-Python one takes seconds on these 15 k-code files
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (RESOURCES / filename).open() as fh:
        return yaml.load(fh, Loader=loader)


@lru_cache(maxsize=None)
def definitions_table(filename: str) -> pa.Table:
    """(code, phenotype, benchmark) for every code of every CCS group in `filename`."""
    rows = [
        (str(code).strip().upper(), name, bool(group.get("use_in_benchmark")))
        for name, group in _read_definitions(filename).items()
        for code in group["codes"]
    ]
    code, phenotype, benchmark = zip(*rows)
    return pa.table({"code": list(code), "phenotype": list(phenotype), "benchmark": list(benchmark)})


@lru_cache(maxsize=None)
def gem_table() -> pa.Table:
    """(icd10_code, icd9_code) of the backward GEM, without its "no map" rows.

    Each line is `ICD10 ICD9 FLAGS`, FLAGS five digits: approximate, no map, combination,
    scenario, choice list. "No map" rows (flag 2 = 1) have the target `NoDx` and are dropped;
    approximate and combination rows are kept (every target counts)."""
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
        raise UserError(f"config cohort.labels: {source!r} is not one of {sorted(DEFINITIONS)}")


def build_labels(con, source: str) -> dict:
    """Create the temporary table `stay_labels (stay_id, phenotype)` for the temporary table
    `cohort`; return the mapping report (label source and row counts)."""
    check_source(source)
    definitions = definitions_table(DEFINITIONS[source])
    con.register("definitions_src", definitions)
    con.execute("CREATE OR REPLACE TEMP TABLE definitions AS SELECT * FROM definitions_src")
    con.unregister("definitions_src")
    if source == "gem":
        gem = gem_table()
        con.register("gem_src", gem)
        con.execute("CREATE OR REPLACE TEMP TABLE gem AS SELECT * FROM gem_src")
        con.unregister("gem_src")
    run_sql(con, "labels_dx.sql")
    run_sql(con, f"labels_{source}.sql")
    run_sql(con, "labels_stats.sql")
    stats = con.sql("SELECT * FROM label_stats").to_arrow_table().to_pylist()[0]
    icd10 = max(stats["icd10_rows"], 1)
    return {
        "label_source": source,
        "definitions": DEFINITIONS[source],
        "gem": GEM_FILE if source == "gem" else None,
        "unmapped_meaning": (
            "ICD-10 rows whose code has no ICD-9 target in the backward GEM, neither itself nor "
            "through the GEM codes that extend it"
            if source == "gem"
            else "ICD-10 rows whose code string is in no group of the definitions"
        ),
        **stats,
        "icd10_share_unmapped": stats["icd10_rows_unmapped"] / icd10,
        "icd10_share_in_no_benchmark_group": stats["icd10_rows_in_no_benchmark_group"] / icd10,
        "icd9_share_in_no_benchmark_group": stats["icd9_rows_in_no_benchmark_group"] / max(stats["icd9_rows"], 1),
    }
