"""Ingest on the real MIMIC-IV demo: counts, types, version detection, v1.0 layout, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from drfuse.data import items
from drfuse.data.ingest import _count_warnings, ingest
from drfuse.errors import UserError

TABLE_FILES = {
    "hosp": ["patients", "admissions", "transfers", "diagnoses_icd", "d_labitems", "labevents"],
    "icu": ["icustays", "d_items", "chartevents"],
}


def _query(db: Path, sql: str):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def _link_demo(demo_dir: Path, root: Path, skip: str = "") -> Path:
    """A copy of the demo's needed tables made of symlinks (cheap), without `skip`."""
    for folder, tables in TABLE_FILES.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for table in tables:
            if table != skip:
                (root / folder / f"{table}.csv.gz").symlink_to(demo_dir / folder / f"{table}.csv.gz")
    return root


def test_demo_counts_and_version(demo_db, demo_dir):
    manifest = json.loads((demo_db.parent / "manifest.json").read_text())
    assert manifest["version"] == "2.x"
    assert manifest["release"] == "2.2"  # chartevents has caregiver_id
    assert manifest["full_size"] is False and manifest["warnings"] == []
    assert manifest["tables"]["icustays"]["rows"] == 140
    assert manifest["tables"]["diagnoses_icd"]["rows"] == 4506
    assert manifest["tables"]["chartevents"]["rows_source"] == 309_168
    assert _query(demo_db, "SELECT count(*) FROM icustays") == [(140,)]
    assert _query(demo_db, "SELECT count(DISTINCT hadm_id) FROM icustays") == [(128,)]
    assert dict(_query(demo_db, "SELECT icd_version, count(*) FROM diagnoses_icd GROUP BY 1")) == {
        "9": 2193,
        "10": 2313,
    }
    assert _query(demo_db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'cxr_metadata'") == [(0,)]


def test_explicit_types(demo_db):
    types = dict(_query(demo_db, "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"))
    assert types["diagnoses_icd.icd_code"] == "VARCHAR"
    assert types["diagnoses_icd.icd_version"] == "VARCHAR"
    assert types["icustays.stay_id"] == "BIGINT"
    assert types["icustays.intime"] == "TIMESTAMP"
    assert types["chartevents.value"] == "VARCHAR"
    assert types["chartevents.valuenum"] == "DOUBLE"
    assert types["labevents.charttime"] == "TIMESTAMP"
    assert types["admissions.race"] == "VARCHAR"


def test_icd_codes_keep_leading_zeros(demo_db, demo_dir):
    raw = pd.read_csv(demo_dir / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
    loaded = pd.DataFrame(
        _query(demo_db, "SELECT icd_code, icd_version FROM diagnoses_icd"), columns=["icd_code", "icd_version"]
    )
    assert sorted(loaded.icd_code) == sorted(raw.icd_code)
    # e.g. ICD-9 '0389' (septicemia) must not become 389
    zero = loaded[loaded.icd_code.str.startswith("0")]
    assert len(zero) == (raw.icd_code.str.startswith("0")).sum() > 0
    assert (zero.icd_version == "9").all()
    assert loaded.icd_code.str.startswith("V").any()


def test_events_hold_only_the_variables_items(demo_db, demo_dir):
    chart = set(items.chart_itemids())
    lab = set(items.lab_itemids())
    assert {i for (i,) in _query(demo_db, "SELECT DISTINCT itemid FROM chartevents")} <= chart
    assert {i for (i,) in _query(demo_db, "SELECT DISTINCT itemid FROM labevents")} <= lab
    raw = pd.read_csv(demo_dir / "icu" / "chartevents.csv.gz", usecols=["itemid"])
    assert _query(demo_db, "SELECT count(*) FROM chartevents") == [(int(raw.itemid.isin(chart).sum()),)]
    raw_lab = pd.read_csv(demo_dir / "hosp" / "labevents.csv.gz", usecols=["itemid"])
    assert _query(demo_db, "SELECT count(*) FROM labevents") == [(int(raw_lab.itemid.isin(lab).sum()),)]
    assert 51478 not in lab and 50931 in lab  # urine glucose out, blood glucose in


def test_items_cover_the_spec_table():
    table = items.variable_items()
    assert len(table) == 17
    assert table["Capillary refill rate"]["chart"] == (223951, 224308)
    assert table["Glucose"] == {"chart": (220621, 225664, 226537), "lab": (50809, 50931)}
    assert table["Glascow coma scale total"] == {"chart": (), "lab": ()}
    assert items.item_to_variable()[226707] == "Height"


def test_v1_layout(tmp_path, demo_dir):
    """core/ holds patients, admissions (race named ethnicity, plain .csv), transfers."""
    root = tmp_path / "mimic-iv-1.0"
    for folder, tables in {
        "core": ["patients", "transfers"],
        "hosp": ["diagnoses_icd", "d_labitems", "labevents"],
        "icu": ["icustays", "d_items", "chartevents"],
    }.items():
        (root / folder).mkdir(parents=True)
        for table in tables:
            src_folder = "icu" if folder == "icu" else "hosp"
            (root / folder / f"{table}.csv.gz").symlink_to(demo_dir / src_folder / f"{table}.csv.gz")
    admissions = pd.read_csv(demo_dir / "hosp" / "admissions.csv.gz", dtype=str, keep_default_na=False)
    admissions.drop(columns="admit_provider_id").rename(columns={"race": "ethnicity"}).to_csv(
        root / "core" / "admissions.csv", index=False
    )
    db = tmp_path / "v1.duckdb"
    manifest = ingest(root, None, db, tmp_path / "manifest.json")
    assert manifest["version"] == "1.0" and manifest["layout"] == "1.0"
    loaded = dict(_query(db, "SELECT hadm_id, race FROM admissions"))
    assert loaded == dict(zip(admissions.hadm_id.astype(int), admissions.race))
    assert _query(db, "SELECT count(*) FROM icustays") == [(140,)]


def _assert_nothing_left(out: Path):
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("case", ["missing_table", "truncated_gz", "wrong_columns"])
def test_bad_input(tmp_path, demo_dir, case):
    root = tmp_path / "mimic"
    if case == "missing_table":
        _link_demo(demo_dir, root, skip="diagnoses_icd")
        expected = ["diagnoses_icd.csv.gz", "2.x/3.x"]
    elif case == "truncated_gz":
        _link_demo(demo_dir, root, skip="labevents")
        data = (demo_dir / "hosp" / "labevents.csv.gz").read_bytes()
        (root / "hosp" / "labevents.csv.gz").write_bytes(data[: len(data) // 2])
        expected = ["labevents.csv.gz", "2.x/3.x"]
    else:
        _link_demo(demo_dir, root, skip="diagnoses_icd")
        raw = pd.read_csv(demo_dir / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
        with gzip.open(root / "hosp" / "diagnoses_icd.csv.gz", "wt") as fh:
            raw.rename(columns={"icd_version": "version"}).to_csv(fh, index=False)
        expected = ["diagnoses_icd.csv.gz", "icd_version", "2.x/3.x"]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError) as err:
        ingest(root, None, out / "mimiciv.duckdb", out / "manifest.json")
    for text in expected:
        assert text in str(err.value)
    _assert_nothing_left(out)


@pytest.mark.parametrize("table", ["icustays", "chartevents"])
def test_non_matching_value_gives_a_short_message(tmp_path, demo_dir, table):
    """The probe: a value that does not match its column type gave the right message, then ~25
    lines of DuckDB hints about type sniffing and sample sizes that do not apply (every type is
    set). The message now keeps the error, the line and the column, on one line."""
    root = tmp_path / "mimic"
    _link_demo(demo_dir, root, skip=table)
    raw = pd.read_csv(demo_dir / "icu" / f"{table}.csv.gz", dtype=str, keep_default_na=False)
    raw.loc[3, "stay_id"] = "3O1234567"  # a letter O for a zero
    with gzip.open(root / "icu" / f"{table}.csv.gz", "wt") as fh:
        raw.to_csv(fh, index=False)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError) as err:
        ingest(root, None, out / "mimiciv.duckdb", out / "manifest.json")
    message = str(err.value)
    assert "\n" not in message
    assert f"{table}.csv.gz" in message and "Line: 5" in message
    assert 'column "stay_id"' in message and '"3O1234567"' in message and "BIGINT" in message
    for hint in ("Possible solutions", "sample_size", "auto-detected", "delimiter ="):
        assert hint not in message
    _assert_nothing_left(out)


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ingest(tmp_path / "nowhere", None, tmp_path / "db.duckdb", tmp_path / "manifest.json")
    with pytest.raises(UserError, match="not a MIMIC-IV directory"):
        ingest(tmp_path, None, tmp_path / "db.duckdb", tmp_path / "manifest.json")
    assert not (tmp_path / "db.duckdb").exists()


def test_full_size_count_warnings():
    full = {"icustays": 73_181, "chartevents": 313_645_063, "labevents": 118_171_367}
    assert _count_warnings("2.x", "2.2", full) == []
    short = dict(full, chartevents=313_000_000)
    (warning,) = _count_warnings("2.x", "2.2", short)
    assert "chartevents" in warning and "313,645,063" in warning
    assert (
        _count_warnings("3.x", None, {"icustays": 94_458, "chartevents": 433_020_000, "labevents": 158_400_000}) == []
    )
    # the demo (or any subset) is never compared
    assert _count_warnings("2.x", "2.2", {"icustays": 140, "chartevents": 5, "labevents": 5}) == []


@pytest.mark.parametrize("case", ["plain_named_gz", "gzip_named_csv", "bom"])
def test_misnamed_compression_and_a_byte_order_mark_are_named(tmp_path, demo_subset_dir, case):
    """Issue-26 probes: a plain CSV named .gz failed with "'utf-8' codec can't decode byte 0x8b", a
    UTF-8 byte-order mark was reported as a missing column '\\ufeffsubject_id'."""
    root = _link_demo(demo_subset_dir, tmp_path / "mimic", skip="patients")
    text = gzip.decompress((demo_subset_dir / "hosp" / "patients.csv.gz").read_bytes())
    if case == "plain_named_gz":
        path, expected = root / "hosp" / "patients.csv.gz", "named .gz but not gzip-compressed (a plain CSV?)"
        path.write_bytes(text)
    elif case == "gzip_named_csv":
        path, expected = root / "hosp" / "patients.csv", "gzip-compressed but named .csv: rename it to patients.csv.gz"
        path.write_bytes(gzip.compress(text))
    else:
        path, expected = root / "hosp" / "patients.csv.gz", "the file starts with a UTF-8 byte-order mark (BOM)"
        path.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError) as err:
        ingest(root, None, out / "mimiciv.duckdb", out / "manifest.json")
    assert str(err.value).startswith(f"{path}: {expected}") and "\n" not in str(err.value)
    _assert_nothing_left(out)


def _cxr_metadata(folder: Path, rows: list[tuple]) -> Path:
    """A MIMIC-CXR-JPG metadata file of (dicom_id, subject_id, study_id, ViewPosition, StudyDate,
    StudyTime) rows."""
    folder.mkdir()
    header = "dicom_id,subject_id,study_id,ViewPosition,StudyDate,StudyTime\n"
    with gzip.open(folder / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as fh:
        fh.write(header + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return folder


def test_cxr_metadata_duplicates_identical_dropped_and_counted_conflicting_refused(tmp_path, demo_subset_dir):
    """Issue-26 probe: conflicting duplicate dicom_ids were loaded silently (a stay's CXR time moved
    by a day, another stay's image switched)."""
    rows = [
        ("a", 10000032, 50000001, "AP", 21800101, "120000.000"),
        ("b", 10000032, 50000002, "AP", 21800102, "4506.968"),
    ]
    cxr = _cxr_metadata(tmp_path / "cxr", rows + [rows[0], rows[0], rows[1]])  # each repeated as it was
    manifest = ingest(demo_subset_dir, cxr, tmp_path / "db.duckdb", tmp_path / "manifest.json")
    assert _query(tmp_path / "db.duckdb", "SELECT dicom_id, count(*) FROM cxr_metadata GROUP BY 1 ORDER BY 1") == [
        ("a", 1),
        ("b", 1),
    ]
    assert manifest["tables"]["cxr_metadata"]["rows"] == 2
    assert manifest["tables"]["cxr_metadata"]["duplicate_rows_dropped"] == 3
    assert f"{cxr / 'mimic-cxr-2.0.0-metadata.csv.gz'}: 3 identical duplicate row(s) dropped" in manifest["warnings"]

    moved = ("a", 10000032, 50000001, "AP", 21800102, "120000.000")  # the same image a day later
    switched = ("b", 10000084, 50000002, "AP", 21800102, "4506.968")  # another patient's
    conflicting = _cxr_metadata(tmp_path / "cxr2", rows + [moved, switched, rows[0]])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError) as err:
        ingest(demo_subset_dir, conflicting, out / "db.duckdb", out / "manifest.json")
    assert str(err.value) == (
        f"{conflicting / 'mimic-cxr-2.0.0-metadata.csv.gz'}: 2 dicom_id(s) on metadata rows that differ (time, "
        "subject or view of the image cannot be told): a (2 rows), b (2 rows); correct or remove those rows"
    )
    _assert_nothing_left(out)
