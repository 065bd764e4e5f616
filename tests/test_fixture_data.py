"""The vendored real-data fixture (tests/data): the data stages run on 7 real MIMIC-IV demo patients
on any fresh clone, and (where ../shared is present) the subset is a true copy of the demo."""

from __future__ import annotations

import csv
import gzip
import json

import duckdb
import numpy as np
import polars as pl
import pytest

from drfuse.data import items

SUBSET_TABLES = {
    "hosp": ["patients", "admissions", "transfers", "diagnoses_icd", "labevents", "d_labitems"],
    "icu": ["icustays", "chartevents", "d_items"],
}


def _rows(path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, demo_subset_dir, tiny_cfg):
    from drfuse.data.cohort import build_cohort
    from drfuse.data.features import build_features
    from drfuse.data.ingest import ingest

    out = tmp_path_factory.mktemp("subset")
    manifest = ingest(demo_subset_dir, None, out / "db.duckdb", out / "manifest.json", threads=1, memory_mb=1024)
    build_cohort(out / "db.duckdb", out / "cohort", tiny_cfg)
    build_features(
        out / "db.duckdb", out / "cohort" / "stays.parquet", out / "features", tiny_cfg, threads=1, memory_mb=1024
    )
    return {"out": out, "manifest": manifest}


def test_subset_ingests_with_the_demo_release_and_the_raw_counts(subset_run, demo_subset_dir):
    manifest = subset_run["manifest"]
    assert (manifest["version"], manifest["release"]) == ("2.x", "2.2")  # chartevents.caregiver_id
    for module, tables in SUBSET_TABLES.items():
        for table in tables:
            raw = len(_rows(demo_subset_dir / module / f"{table}.csv.gz")) - 1
            info = manifest["tables"][table]
            assert info.get("rows_source", info["rows"]) == raw, table
    chart = _rows(demo_subset_dir / "icu" / "chartevents.csv.gz")
    itemid = chart[0].index("itemid")
    kept = sum(int(r[itemid]) in set(items.chart_itemids()) for r in chart[1:])
    assert manifest["tables"]["chartevents"]["rows"] == kept > 0
    assert manifest["duckdb"]["threads"] == 1 and manifest["duckdb"]["memory_limit"] == "512MB"


def test_subset_cohort_and_features_are_built_from_its_stays(subset_run, demo_subset_dir):
    out = subset_run["out"]
    stays = pl.read_parquet(out / "cohort" / "stays.parquet")
    icu = _rows(demo_subset_dir / "icu" / "icustays.csv.gz")
    raw_stays = {int(r[icu[0].index("stay_id")]) for r in icu[1:]}
    assert 0 < stays.height <= len(raw_stays) and set(stays["stay_id"]) <= raw_stays
    ehr = np.load(out / "features" / "ehr.npy", mmap_mode="r")
    assert ehr.shape == (stays.height, 48, 76) and np.isfinite(ehr).all()
    index = pl.read_parquet(out / "features" / "index.parquet")
    assert index["stay_id"].to_list() == stays["stay_id"].to_list()
    with duckdb.connect() as con:
        hourly = con.execute(f"SELECT count(DISTINCT stay_id) FROM '{out / 'features' / 'hourly.parquet'}'").fetchone()[
            0
        ]
    assert hourly == stays.height
    assert json.loads((out / "features" / "counts.json").read_text())


def test_subset_lines_are_copies_of_the_demo(shared_dir, demo_subset_dir):
    demo = shared_dir / "data" / "mimic-iv-demo"
    for module, tables in SUBSET_TABLES.items():
        for table in tables:
            ours = _rows(demo_subset_dir / module / f"{table}.csv.gz")
            theirs = _rows(demo / module / f"{table}.csv.gz")
            assert ours[0] == theirs[0], table
            source = {tuple(r) for r in theirs[1:]}
            assert all(tuple(r) in source for r in ours[1:]), table


def test_cohort_runs_duckdb_with_the_jobs_threads_and_memory(subset_run, tiny_cfg, tmp_path, monkeypatch):
    """`drfuse cohort --threads --memory-mb` (the rule passes its job's): DuckDB gets that many
    threads and half the memory, as in ingest and features."""
    from drfuse.data import duckdb_limits
    from drfuse.data.cohort import build_cohort

    def settings(con):
        return con.execute("SELECT current_setting('threads'), current_setting('memory_limit')").fetchone()

    seen = []
    apply = duckdb_limits.apply
    monkeypatch.setattr(duckdb_limits, "apply", lambda con, *limits: (apply(con, *limits), seen.append(settings(con))))
    build_cohort(subset_run["out"] / "db.duckdb", tmp_path / "cohort", tiny_cfg, threads=1, memory_mb=1024)
    expected = duckdb.connect()
    apply(expected, 1, "512MB")
    assert seen == [settings(expected)] and seen[0][0] == 1
    assert pl.read_parquet(tmp_path / "cohort" / "stays.parquet").equals(
        pl.read_parquet(subset_run["out"] / "cohort" / "stays.parquet")
    )
