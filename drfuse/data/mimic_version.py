"""What a MIMIC-IV release looks like on disk: layouts, files, columns, types and known row counts.

The ingest stage never assumes a version. It finds the layout from the folders (v1.0: `core/` +
`hosp/` + `icu/`; v2.x and v3.x: `hosp/` + `icu/`), reads each file's header, checks that the
columns the pipeline needs are there and gives every column an explicit DuckDB type (nothing is
sniffed: ICD codes like '0389' or 'V4581' must stay strings). Columns present only in some
releases (`caregiver_id` from v2.2, `loinc_code` up to v2.1, ...) are typed here too; an unknown
column is read as VARCHAR and reported.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from drfuse.errors import UserError

LAYOUT_V1 = "1.0"
LAYOUT_V2 = "2.x/3.x"

ID, TS, STR, INT, DBL = "BIGINT", "TIMESTAMP", "VARCHAR", "INTEGER", "DOUBLE"


@dataclass(frozen=True)
class TableSpec:
    """One MIMIC table: where it lives per layout, the types of every known column, the columns the
    pipeline needs (`required`; the event tables store only these), and renames applied on load
    (old name -> new name)."""

    module_v1: str  # folder in the v1.0 layout; v2.x/3.x moved core/ into hosp/
    types: dict[str, str]
    required: tuple[str, ...]
    renames: dict[str, str] = field(default_factory=dict)
    one_of: tuple[str, ...] = ()  # at least one of these must be present (before renaming)

    def folder(self, layout: str) -> str:
        return self.module_v1 if layout == LAYOUT_V1 or self.module_v1 != "core" else "hosp"


TABLES: dict[str, TableSpec] = {
    "patients": TableSpec(
        "core",
        {"subject_id": ID, "gender": STR, "anchor_age": INT, "anchor_year": INT, "anchor_year_group": STR, "dod": TS},
        ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group"),
    ),
    "admissions": TableSpec(
        "core",
        {
            "subject_id": ID,
            "hadm_id": ID,
            "admittime": TS,
            "dischtime": TS,
            "deathtime": TS,
            "admission_type": STR,
            "admit_provider_id": STR,
            "admission_location": STR,
            "discharge_location": STR,
            "insurance": STR,
            "language": STR,
            "marital_status": STR,
            "race": STR,
            "ethnicity": STR,
            "edregtime": TS,
            "edouttime": TS,
            "hospital_expire_flag": INT,
        },
        ("subject_id", "hadm_id", "admittime", "dischtime"),
        renames={"ethnicity": "race"},  # v1.0 (and v2.0) call it ethnicity
        one_of=("race", "ethnicity"),
    ),
    "transfers": TableSpec(
        "core",
        {
            "subject_id": ID,
            "hadm_id": ID,
            "transfer_id": ID,
            "eventtype": STR,
            "careunit": STR,
            "intime": TS,
            "outtime": TS,
        },
        ("subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime"),
    ),
    "icustays": TableSpec(
        "icu",
        {
            "subject_id": ID,
            "hadm_id": ID,
            "stay_id": ID,
            "first_careunit": STR,
            "last_careunit": STR,
            "intime": TS,
            "outtime": TS,
            "los": DBL,
        },
        ("subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime"),
    ),
    "diagnoses_icd": TableSpec(
        "hosp",
        {"subject_id": ID, "hadm_id": ID, "seq_num": INT, "icd_code": STR, "icd_version": STR},
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
    ),
    "d_items": TableSpec(
        "icu",
        {
            "itemid": ID,
            "label": STR,
            "abbreviation": STR,
            "linksto": STR,
            "category": STR,
            "unitname": STR,
            "param_type": STR,
            "lownormalvalue": DBL,
            "highnormalvalue": DBL,
        },
        ("itemid", "label", "linksto"),
    ),
    "d_labitems": TableSpec(
        "hosp",
        {"itemid": ID, "label": STR, "fluid": STR, "category": STR, "loinc_code": STR},
        ("itemid", "label", "fluid"),
    ),
    "chartevents": TableSpec(
        "icu",
        {
            "subject_id": ID,
            "hadm_id": ID,
            "stay_id": ID,
            "caregiver_id": ID,
            "charttime": TS,
            "storetime": TS,
            "itemid": ID,
            "value": STR,
            "valuenum": DBL,
            "valueuom": STR,
            "warning": INT,
        },
        ("subject_id", "hadm_id", "stay_id", "charttime", "itemid", "value", "valuenum", "valueuom"),
    ),
    "labevents": TableSpec(
        "hosp",
        {
            "labevent_id": ID,
            "subject_id": ID,
            "hadm_id": ID,
            "specimen_id": ID,
            "itemid": ID,
            "order_provider_id": STR,
            "charttime": TS,
            "storetime": TS,
            "value": STR,
            "valuenum": DBL,
            "valueuom": STR,
            "ref_range_lower": DBL,
            "ref_range_upper": DBL,
            "flag": STR,
            "priority": STR,
            "comments": STR,
        },
        ("subject_id", "hadm_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
    ),
}

# MIMIC-CXR-JPG v2.0.0 metadata. StudyDate (YYYYMMDD) and StudyTime (HHMMSS.fff, leading zeros
# sometimes lost: 4506.968 is 00:45:06.968) stay text; ingest builds study_datetime from them.
CXR_METADATA = TableSpec(
    "",
    {
        "dicom_id": STR,
        "subject_id": ID,
        "study_id": ID,
        "PerformedProcedureStepDescription": STR,
        "ViewPosition": STR,
        "Rows": INT,
        "Columns": INT,
        "StudyDate": STR,
        "StudyTime": STR,
        "ProcedureCodeSequence_CodeMeaning": STR,
        "ViewCodeSequence_CodeMeaning": STR,
        "PatientOrientationCodeSequence_CodeMeaning": STR,
    },
    ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"),
)
CXR_METADATA_STEM = "mimic-cxr-2.0.0-metadata"

# Published row counts of the full releases (version -> table -> (count, tolerance)); the v3.1
# event counts are known only to 0.1 M. Compared only when the data is evidently full size.
KNOWN_COUNTS: dict[str, dict[str, tuple[int, int]]] = {
    "1.0": {"icustays": (76_540, 0), "chartevents": (329_499_788, 0)},
    "2.2": {"icustays": (73_181, 0), "chartevents": (313_645_063, 0), "labevents": (118_171_367, 0)},
    "3.x": {"icustays": (94_458, 0), "chartevents": (433_000_000, 50_000), "labevents": (158_400_000, 50_000)},
}
FULL_SIZE_MIN_ICUSTAYS = 50_000  # the demo has 140; every full release has > 70 k


def detect_layout(mimic_iv_dir: Path) -> str:
    """`1.0` when there is a `core/` folder, `2.x/3.x` when `hosp/` holds patients."""
    if not mimic_iv_dir.is_dir():
        raise UserError(f"MIMIC-IV directory not found: {mimic_iv_dir}")
    if (mimic_iv_dir / "core").is_dir():
        return LAYOUT_V1
    if (mimic_iv_dir / "hosp").is_dir() and (mimic_iv_dir / "icu").is_dir():
        return LAYOUT_V2
    raise UserError(
        f"{mimic_iv_dir}: not a MIMIC-IV directory: expected hosp/ + icu/ (v2.x, v3.x) or core/ + hosp/ + icu/ (v1.0)"
    )


def locate(directory: Path, stem: str, what: str) -> Path:
    """`<stem>.csv.gz`, else `<stem>.csv`, in `directory`."""
    for suffix in (".csv.gz", ".csv"):
        path = directory / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise UserError(f"{directory / (stem + '.csv.gz')}: file not found (nor .csv); expected {what}")


def table_path(mimic_iv_dir: Path, layout: str, table: str) -> Path:
    folder = TABLES[table].folder(layout)
    return locate(mimic_iv_dir / folder, table, f"the MIMIC-IV table {table} of a v{layout} layout")


GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


def _check_compression(path: Path) -> None:
    """The file's first bytes agree with its name: DuckDB decompresses by the name alone."""
    try:
        with open(path, "rb") as fh:
            start = fh.read(2)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not start:
        raise UserError(f"{path}: empty file, expected a CSV header line")
    gzipped = start == GZIP_MAGIC
    named_gz = path.name.endswith(".gz")
    if named_gz and not gzipped:
        raise UserError(
            f"{path}: named .gz but not gzip-compressed (a plain CSV?): compress it with gzip or drop the .gz"
        )
    if gzipped and not named_gz:
        raise UserError(
            f"{path}: gzip-compressed but named {path.suffix or 'without .gz'}: rename it to {path.name}.gz"
        )


def source_files(mimic_iv_dir: Path, mimic_cxr_dir: Path | None) -> dict[str, list[int]]:
    """Every file ingest may read, path -> [size in bytes, mtime in ns]: each table's .csv.gz and
    .csv in the folder of either layout, and the MIMIC-CXR-JPG metadata. A file changed, added or
    removed in place changes this listing: it is the ingest rule's params (the folders are inputs
    `ancient()`, whose mtimes say nothing about the files in them) and goes into the manifest."""
    mimic_iv_dir = Path(mimic_iv_dir)
    stems = [
        mimic_iv_dir / folder / table
        for table, spec in TABLES.items()
        for folder in dict.fromkeys((spec.folder(LAYOUT_V1), spec.folder(LAYOUT_V2)))
    ]
    if mimic_cxr_dir is not None:
        stems.append(Path(mimic_cxr_dir) / CXR_METADATA_STEM)
    listing = {}
    for stem in stems:
        for path in (stem.with_name(stem.name + ".csv.gz"), stem.with_name(stem.name + ".csv")):
            try:
                stat = path.stat()
            except OSError:  # not there (or unreadable: ingest names it when it needs it)
                continue
            listing[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return listing


def read_header(path: Path) -> list[str]:
    """The column names on the first line of a .csv or .csv.gz file (whose compression must match
    its name, and which must not start with a byte-order mark)."""
    _check_compression(path)
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            raw = fh.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read the header line: {exc}") from exc
    if raw.startswith(UTF8_BOM):
        # DuckDB would keep it as part of the first column's name ('\ufeffsubject_id')
        raise UserError(
            f"{path}: the file starts with a UTF-8 byte-order mark (BOM) before its header: save it without one"
        )
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: the header line is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    names = [name.strip().strip('"') for name in line.rstrip("\r\n").split(",")]
    if not line or names == [""]:
        raise UserError(f"{path}: empty file, expected a CSV header line")
    return names


def typed_columns(path: Path, header: list[str], spec: TableSpec, version: str) -> tuple[dict[str, str], list[str]]:
    """Column name -> DuckDB type in file order, and warnings about unknown columns.

    Raises UserError naming the file, the missing columns and the detected version."""
    missing = [c for c in spec.required if c not in header]
    if spec.one_of and not any(c in header for c in spec.one_of):
        missing.append(" or ".join(spec.one_of))
    if missing or len(set(header)) != len(header):
        raise UserError(
            f"{path}: wrong columns for MIMIC-IV v{version}: missing {missing or 'none'} "
            f"(duplicates: {sorted({c for c in header if header.count(c) > 1}) or 'none'}); "
            f"expected at least {list(spec.required)}{' and one of ' + str(list(spec.one_of)) if spec.one_of else ''}; "
            f"found {header}"
        )
    unknown = [c for c in header if c not in spec.types]
    warnings = [f"{path}: unknown columns {unknown} read as VARCHAR"] if unknown else []
    return {c: spec.types.get(c, STR) for c in header}, warnings
