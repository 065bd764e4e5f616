"""Features stage: hourly bins of the 17 variables and the 76-column matrix.

Two kinds of data: small hand-made MIMIC-shaped databases (same table names and columns as the
ingest output) whose expected values are worked out by hand, and the real MIMIC-IV demo, whose
chart rows are re-read from the CSV and binned independently in Python.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drfuse.data import variables
from drfuse.data.features import build_features, forward_fill, layout
from drfuse.errors import UserError

T0 = datetime(2150, 1, 1, 8, 0, 0)
HR, SBP_ART, SBP_NI, GLU_CHART, GLU_LAB = 220045, 220050, 220179, 220621, 50931
TEMP_F, TEMP_C, HEIGHT_IN, WEIGHT_LBS, FIO2 = 223761, 223762, 226707, 226531, 223835
EYE, VERBAL, MOTOR, CRR, SPO2 = 220739, 223900, 223901, 223951, 220277
CHANNELS = variables.channels()

CHART_SCHEMA = (
    "subject_id BIGINT, hadm_id BIGINT, stay_id BIGINT, caregiver_id BIGINT, charttime TIMESTAMP, "
    "storetime TIMESTAMP, itemid BIGINT, value VARCHAR, valuenum DOUBLE, valueuom VARCHAR, warning BIGINT"
)
LAB_SCHEMA = (
    "labevent_id BIGINT, subject_id BIGINT, hadm_id BIGINT, specimen_id BIGINT, itemid BIGINT, "
    "order_provider_id VARCHAR, charttime TIMESTAMP, storetime TIMESTAMP, value VARCHAR, valuenum DOUBLE, "
    "valueuom VARCHAR, ref_range_lower DOUBLE, ref_range_upper DOUBLE, flag VARCHAR, priority VARCHAR, comments VARCHAR"
)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def chart(stay, hours, itemid, value, valuenum=None, uom=None):
    """One chartevents row of stay `stay` (subject = hadm = stay id for hand-made data)."""
    return (stay, stay, stay, None, h(hours), None, itemid, value, valuenum, uom, None)


def lab(hadm, hours, itemid, value, valuenum=None, uom=None):
    return (None, hadm, hadm, None, itemid, None, h(hours), None, value, valuenum, uom, None, None, None, None, None)


def make_data(tmp: Path, stays: list[tuple], chart_rows: list[tuple], lab_rows: list[tuple] = ()) -> tuple[Path, Path]:
    """A hand-made database (chartevents, labevents) and stays.parquet.

    stays: (stay_id, los_hours, split); every stay starts at T0 and its hadm_id is its stay_id.
    """
    db = tmp / "mini.duckdb"
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE chartevents ({CHART_SCHEMA})")
    con.execute(f"CREATE TABLE labevents ({LAB_SCHEMA})")
    if chart_rows:
        con.executemany(f"INSERT INTO chartevents VALUES ({', '.join('?' * 11)})", chart_rows)
    for i, row in enumerate(lab_rows):
        con.execute(f"INSERT INTO labevents VALUES ({', '.join('?' * 16)})", (i, *row[1:]))
    con.close()
    stays_path = tmp / "stays.parquet"
    pq.write_table(
        pa.table(
            {
                "stay_id": pa.array([s[0] for s in stays], pa.int64()),
                "subject_id": pa.array([s[0] for s in stays], pa.int64()),
                "hadm_id": pa.array([s[0] for s in stays], pa.int64()),
                "intime": pa.array([T0] * len(stays), pa.timestamp("us")),
                "outtime": pa.array([h(s[1]) for s in stays], pa.timestamp("us")),
                "los_hours": pa.array([float(s[1]) for s in stays]),
                "split": pa.array([s[2] for s in stays]),
            }
        ),
        stays_path,
    )
    return db, stays_path


HAND_MADE_CFG = {
    "cohort": {"hours": 48},
    "features": {"duckdb_memory_limit": "1GB", "duckdb_threads": 1, "chunk_stays": 2},
}


def run(tmp: Path, stays, chart_rows, lab_rows=(), cfg=None):
    db, stays_path = make_data(tmp, stays, chart_rows, lab_rows)
    out = tmp / "features"
    build_features(db, stays_path, out, cfg or HAND_MADE_CFG)
    hourly = pl.read_parquet(out / "hourly.parquet")
    counts = json.loads((out / "counts.json").read_text())
    return out, hourly, counts


def cell(hourly: pl.DataFrame, stay: int, hour: int, channel: str):
    return hourly.filter((pl.col("stay_id") == stay) & (pl.col("hour") == hour))[channel].item()


def column(hourly: pl.DataFrame, stay: int, channel: str) -> list:
    return hourly.filter(pl.col("stay_id") == stay).sort("hour")[channel].to_list()


# --------------------------------------------------------------------------- hand-made data


def test_unit_conversions_and_ranges(tmp_path):
    rows = [
        chart(1, 0.5, TEMP_F, "98.6", 98.6, "°F"),  # -> 37.0 C
        chart(1, 1.5, TEMP_C, "100.4", 100.4, "°F"),  # a C item charted in F: converted by unit -> 38.0
        chart(1, 2.5, TEMP_C, "99", 99.0, "°C"),  # 99 C: above the outlier range (47) -> dropped
        chart(1, 3.5, TEMP_C, "25", 25.0, "°C"),  # between outlier low 14.2 and valid low 26 -> 26
        chart(1, 0.5, HEIGHT_IN, "70", 70.0, "Inch"),  # -> 177.8 cm
        chart(1, 0.5, WEIGHT_LBS, "180", 180.0, None),  # lbs without unit: by item id -> 81.6466 kg
        chart(1, 0.5, FIO2, "50", 50.0, None),  # percent -> 0.5
        chart(1, 1.5, FIO2, "0.4", 0.4, None),  # already a fraction
        chart(1, 2.5, FIO2, "4", 4.0, None),  # 4 % -> 0.04, below outlier low 0.2 -> dropped
        chart(1, 3.5, FIO2, "100", 100.0, None),  # -> 1.0
        chart(1, 0.5, HR, "400", 400.0, "bpm"),  # above outlier high 390 -> dropped
        chart(1, 1.5, HR, "360", 360.0, "bpm"),  # above valid high 350 -> clipped
        chart(1, 0.5, SPO2, "120", 120.0, "%"),  # -> 100
    ]
    _, hourly, counts = run(tmp_path, [(1, 10, "train")], rows)
    assert column(hourly, 1, "Temperature")[:4] == pytest.approx([37.0, 38.0, None, 26.0], abs=1e-9)
    assert cell(hourly, 1, 0, "Height") == pytest.approx(177.8)
    assert cell(hourly, 1, 0, "Weight") == pytest.approx(180 * 0.45359237)
    assert column(hourly, 1, "Fraction inspired oxygen")[:4] == pytest.approx([0.5, 0.4, None, 1.0])
    assert column(hourly, 1, "Heart Rate")[:2] == [None, 350.0]
    assert cell(hourly, 1, 0, "Oxygen saturation") == 100.0
    assert counts["outlier_dropped"] == 3
    assert counts["clipped"] == 3
    assert counts["converted_f_to_c"] == 2
    assert counts["converted_inch_to_cm"] == 1
    assert counts["converted_lbs_to_kg"] == 1
    assert counts["converted_percent_to_fraction"] == 3


def test_gcs_text_numeric_total_and_capillary_refill(tmp_path):
    rows = [
        # hour 0: real MIMIC phrases, all three at one time -> total 4 + 4 + 6 = 14
        chart(1, 0.5, EYE, "Spontaneously", 4.0),
        chart(1, 0.5, VERBAL, "Confused", 4.0),
        chart(1, 0.5, MOTOR, "Obeys Commands", None),
        # hour 1: the demo's numeric form, valuenum missing; eye 'None' is score 1 -> total 1 + 1 + 1 = 3
        chart(1, 1.5, EYE, "None", None),
        chart(1, 1.5, VERBAL, "No Response-ETT", None),
        chart(1, 1.5, MOTOR, "1", None),
        # hour 2: eye and motor only -> no total
        chart(1, 2.5, EYE, "3", 3.0),
        chart(1, 2.5, MOTOR, "5", 5.0),
        # hour 3: the three at different times -> no total
        chart(1, 3.1, EYE, "2", 2.0),
        chart(1, 3.2, VERBAL, "2", 2.0),
        chart(1, 3.3, MOTOR, "2", 2.0),
        chart(1, 0.5, CRR, "Abnormal >3 Seconds"),
        chart(1, 1.5, CRR, "Normal <3 Seconds"),
        chart(1, 2.5, CRR, "brisk"),  # unknown phrase: not numeric, counted
    ]
    out, hourly, counts = run(tmp_path, [(1, 5, "train")], rows)
    assert column(hourly, 1, "Glascow coma scale eye opening") == [4.0, 1.0, 3.0, 2.0, None]
    assert column(hourly, 1, "Glascow coma scale verbal response") == [4.0, 1.0, None, 2.0, None]
    assert column(hourly, 1, "Glascow coma scale motor response") == [6.0, 1.0, 5.0, 2.0, None]
    assert column(hourly, 1, "Glascow coma scale total") == [14.0, 3.0, None, None, None]
    assert column(hourly, 1, "Capillary refill rate") == [1.0, 0.0, None, None, None]
    assert counts["gcs_total_derived"] == 2
    assert counts["not_numeric"] == 1

    # one-hot on the numbered spelling of the score; forward filled; normal before the first
    ehr = np.load(out / "ehr.npy")
    cols = list(layout().columns)
    eye = [c for c in cols if c.startswith("Glascow coma scale eye opening->")]

    def hot(hour: int, prefix: str) -> list[str]:
        return [c for c in cols if c.startswith(prefix) and ehr[0, hour, cols.index(c)] == 1.0]

    assert hot(0, "Glascow coma scale eye opening->") == ["Glascow coma scale eye opening->4 Spontaneously"]
    assert hot(1, "Glascow coma scale eye opening->") == ["Glascow coma scale eye opening->1 No Response"]
    assert hot(4, "Glascow coma scale eye opening->") == ["Glascow coma scale eye opening->2 To pain"]  # filled
    assert hot(2, "Glascow coma scale total->") == ["Glascow coma scale total->3"]  # filled from hour 1
    assert hot(0, "Glascow coma scale verbal response->") == ["Glascow coma scale verbal response->4 Confused"]
    assert hot(0, "Capillary refill rate->") == ["Capillary refill rate->1.0"]
    assert ehr[0, :5, [cols.index(c) for c in eye]].sum() == 5  # exactly one eye column per hour
    assert ehr[0, :, cols.index("mask->Glascow coma scale total")].tolist()[:5] == [1, 1, 0, 0, 0]


def test_bin_edges_window_and_tie_breaks(tmp_path):
    rows = [
        chart(1, 0.0, HR, "60", 60.0),  # exactly intime -> hour 0
        chart(1, 0.5, HR, "61", 61.0),
        chart(1, 1.0, HR, "62", 62.0),  # exactly 1 h -> hour 0, the last in it
        chart(1, 1.01, HR, "63", 63.0),  # -> hour 1
        chart(1, 47.99, HR, "64", 64.0),  # -> hour 47
        chart(1, 48.0, HR, "65", 65.0),  # exactly 48 h: outside the window
        chart(1, -0.1, HR, "66", 66.0),  # before intime: outside
        chart(1, 3.0, HR, "abc", None),  # text in a numeric field: counted
        chart(1, 4.0, HR, "NaN", float("nan")),  # NaN: counted
        chart(1, 2.5, 999999, "1", 1.0),  # unknown item id: counted
        chart(9, 2.5, HR, "70", 70.0),  # a stay outside the cohort: counted
        # same time, two systolic items: the higher item id wins, whatever the row order
        chart(1, 5.5, SBP_NI, "120", 120.0),
        chart(1, 5.5, SBP_ART, "130", 130.0),
        # same time, chart and lab glucose: chart wins; the lab row joins through hadm_id
        chart(1, 6.5, GLU_CHART, "150", 150.0),
        chart(2, 0.2, HR, "80", 80.0),
        chart(2, 2.6, HR, "81", 81.0),  # after outtime (2.5 h): outside
        chart(3, 0.1, HR, "90", 90.0),
    ]
    labs = [lab(1, 6.5, GLU_LAB, "140", 140.0), lab(1, 7.5, GLU_LAB, "141", 141.0), lab(1, 60, GLU_LAB, "9", 9.0)]
    out, hourly, counts = run(tmp_path, [(1, 60, "train"), (2, 2.5, "val"), (3, 0.2, "test")], rows, labs)
    hr = column(hourly, 1, "Heart Rate")
    assert len(hr) == 48  # LOS 60 h -> 48 bins
    assert hr[0] == 62.0 and hr[1] == 63.0 and hr[47] == 64.0
    assert all(v is None for v in hr[2:47])
    assert cell(hourly, 1, 5, "Systolic blood pressure") == 120.0  # item 220179 > 220050
    assert cell(hourly, 1, 6, "Glucose") == 150.0
    assert cell(hourly, 1, 7, "Glucose") == 141.0
    assert column(hourly, 2, "Heart Rate") == [80.0, None, None]  # LOS 2.5 h -> 3 bins
    assert column(hourly, 3, "Heart Rate") == [90.0]  # LOS 0.2 h -> 1 bin
    assert hourly["stay_id"].to_list() == [1] * 48 + [2] * 3 + [3]
    assert counts["chartevents_unknown_item"] == 1
    assert counts["chartevents_not_in_cohort"] == 1
    assert counts["chartevents_outside_window"] == 3
    assert counts["labevents_outside_window"] == 1
    assert counts["not_numeric"] == 1 and counts["not_finite"] == 1
    index = pl.read_parquet(out / "index.parquet")
    assert index.to_dicts() == [
        {"stay_id": 1, "row": 0, "length": 48},
        {"stay_id": 2, "row": 1, "length": 3},
        {"stay_id": 3, "row": 2, "length": 1},
    ]


def test_matrix_fill_normaliser_and_padding(tmp_path, tiny_cfg):
    rows = [chart(1, 2.5, HR, "100", 100.0), chart(1, 3.5, HR, "110", 110.0)]
    rows += [chart(2, 0.5, HR, "200", 200.0)]  # a test stay: must not move the statistics
    out, _, _ = run(tmp_path, [(1, 5.5, "train"), (2, 4, "test")], rows, cfg=tiny_cfg)
    ehr = np.load(out / "ehr.npy")
    norm = json.loads((out / "normalizer.json").read_text())
    assert ehr.shape == (2, 48, 76) and ehr.dtype == np.float32
    assert len(norm["columns"]) == 76 and norm["columns"] == list(layout().columns)
    assert len(norm["continuous"]) == 12
    assert norm["columns"][-17:] == [f"mask->{c}" for c in CHANNELS]

    # train rows of the HR column after imputation: normal 86 for hours 0-1, then 100, 110, 110, 110
    train_hr = np.array([86, 86, 100, 110, 110, 110], dtype=float)
    k = norm["continuous"].index("Heart Rate")
    assert norm["means"][k] == pytest.approx(train_hr.mean())
    assert norm["stds"][k] == pytest.approx(train_hr.std(ddof=1))
    assert norm["n_train_rows"] == 6

    col = norm["columns"].index("Heart Rate")
    raw = ehr[:, :, col] * norm["stds"][k] + norm["means"][k]
    assert raw[0, :6] == pytest.approx(train_hr, abs=1e-3)
    assert raw[1, :4] == pytest.approx([200, 200, 200, 200], abs=1e-3)
    assert np.all(ehr[0, 6:] == 0) and np.all(ehr[1, 4:] == 0)  # padding past the length
    mask = ehr[0, :6, norm["columns"].index("mask->Heart Rate")]
    assert mask.tolist() == [0, 0, 1, 1, 0, 0]
    # an unobserved continuous channel is its normal value everywhere
    j = norm["continuous"].index("pH")
    ph = ehr[0, :6, norm["columns"].index("pH")] * norm["stds"][j] + norm["means"][j]
    assert ph == pytest.approx([7.4] * 6, abs=1e-4)


def test_forward_fill():
    nan = np.nan
    values = np.array([[[nan, 1.0], [2.0, nan], [nan, nan], [3.0, 4.0]]])
    filled = forward_fill(values, np.array([9.0, 8.0]))
    assert filled[0].tolist() == [[9.0, 1.0], [2.0, 1.0], [2.0, 1.0], [3.0, 4.0]]


def test_layout_matches_mimic3_benchmarks():
    lay = layout()
    assert len(lay.columns) == 76 and len(lay.continuous) == 12
    assert sum("->" in c and not c.startswith("mask->") for c in lay.columns) == 47
    assert lay.columns[:3] == ("Capillary refill rate->0.0", "Capillary refill rate->1.0", "Diastolic blood pressure")


def test_errors_name_the_file(tmp_path):
    db, stays = make_data(tmp_path, [(1, 5, "train")], [])
    with pytest.raises(UserError, match="stays.parquet"):
        build_features(db, tmp_path / "missing" / "stays.parquet", tmp_path / "f", {"cohort": {"hours": 48}})
    pq.write_table(pa.table({"stay_id": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="bad.parquet"):
        build_features(db, tmp_path / "bad.parquet", tmp_path / "f", {"cohort": {"hours": 48}})
    assert not (tmp_path / "f" / "ehr.npy").exists()


def test_stays_without_events_counted_and_warned(tmp_path, caplog):
    """The probe: stays with no chart or lab value (here stay 2 has none, stay 3 only a row outside
    its window) were all-imputed rows counted nowhere."""
    rows = [chart(1, 0.5, HR, "90", 90.0), chart(3, 9.0, HR, "95", 95.0)]
    with caplog.at_level("WARNING"):
        out, hourly, counts = run(tmp_path, [(1, 5, "train"), (2, 5, "train"), (3, 5, "test")], rows)
    assert counts["stays_without_events"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "2 of 3 stays" in warnings[0] and "stay_id 2, 3" in warnings[0]
    assert hourly.filter(pl.col("stay_id") == 2).drop("stay_id", "hour").null_count().sum_horizontal().item() == 5 * 17
    caplog.clear()
    (tmp_path / "all").mkdir()
    with caplog.at_level("WARNING"):
        _, _, counts = run(tmp_path / "all", [(1, 5, "train"), (3, 5, "test")], rows + [chart(3, 1.0, HR, "95", 95.0)])
    assert counts["stays_without_events"] == 0 and not caplog.records


def test_stale_temp_folders_removed_at_start(tmp_path, caplog):
    """The probe: a killed run left its temporary folder (44 MB on the demo) for good. The next start
    removes the folders of processes that are gone and leaves a live process's folder alone."""
    db, stays_path = make_data(tmp_path, [(1, 5, "train")], [chart(1, 0.5, HR, "90", 90.0)])
    out = tmp_path / "features"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [out / f".staging.{int(dead.stdout)}.0123abcd.tmp"]  # as drfuse.atomic names it
    alive = out / f".staging.{os.getppid()}.4567cdef.tmp"
    for folder in [*stale, alive]:
        (folder / "duckdb").mkdir(parents=True)
        (folder / "ehr.npy").write_bytes(b"\0" * 1024)
    with caplog.at_level("INFO"):
        build_features(db, stays_path, out, HAND_MADE_CFG)
    assert not any(folder.exists() for folder in stale)
    assert alive.exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "counts.json",
        "ehr.npy",
        "hourly.parquet",
        "index.parquet",
        "normalizer.json",
    ]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [alive.name]
    assert sum("removed 1 temporary" in r.getMessage() for r in caplog.records) == 1


# --------------------------------------------------------------------------- the real demo


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory, demo_db, tiny_cfg):
    from drfuse.data.cohort import build_cohort

    out = tmp_path_factory.mktemp("demo_features")
    build_cohort(demo_db, out / "cohort", tiny_cfg)
    build_features(demo_db, out / "cohort" / "stays.parquet", out / "features", tiny_cfg)
    return out


def expected_bins(demo_dir: Path, stay: dict, itemids: tuple[int, ...], clean=lambda itemid, v: v) -> dict[int, float]:
    """Hour -> last cleaned value, from the raw CSV rows of one stay, binned here in plain Python.

    `clean(itemid, value)` converts a value, or returns None to drop it.
    """
    rows = duckdb.sql(
        f"SELECT charttime, itemid, valuenum FROM read_csv('{demo_dir}/icu/chartevents.csv.gz') "
        f"WHERE stay_id = {stay['stay_id']} AND itemid IN ({', '.join(map(str, itemids))}) AND valuenum IS NOT NULL"
    ).fetchall()
    end = min(stay["intime"] + timedelta(hours=48), stay["outtime"])
    last: dict[int, tuple] = {}
    for charttime, itemid, value in rows:
        value = clean(itemid, value)
        if value is None or not stay["intime"] <= charttime < end:
            continue
        hour = max(0, math.ceil((charttime - stay["intime"]).total_seconds() / 3600) - 1)
        key = (charttime, itemid, value)
        if hour not in last or key > last[hour]:
            last[hour] = key
    return {hour: key[2] for hour, key in last.items()}


def clean_temperature(itemid: int, value: float) -> float | None:
    celsius = (value - 32) * 5 / 9 if itemid == TEMP_F else value
    if not 14.2 <= celsius <= 47:  # variable_ranges.csv outlier range
        return None
    return min(max(celsius, 26.0), 45.0)  # valid range


def test_demo_hourly_matches_raw_chart_rows(demo_features, demo_dir):
    stays = pl.read_parquet(demo_features / "cohort" / "stays.parquet")
    hourly = pl.read_parquet(demo_features / "features" / "hourly.parquet")
    index = pl.read_parquet(demo_features / "features" / "index.parquet")
    assert index["stay_id"].to_list() == stays["stay_id"].to_list()
    assert hourly.columns == ["stay_id", "hour", *CHANNELS]
    assert hourly.height == index["length"].sum()

    checked = {"Heart Rate": 0, "Temperature": 0, "Glascow coma scale eye opening": 0}
    for stay in stays.head(5).to_dicts():
        n_bins = max(1, min(48, math.ceil((stay["outtime"] - stay["intime"]).total_seconds() / 3600)))
        expected = {
            "Heart Rate": expected_bins(demo_dir, stay, (HR,)),
            "Temperature": expected_bins(demo_dir, stay, (TEMP_F, TEMP_C), clean_temperature),
            # the demo charts GCS as the numeric score
            "Glascow coma scale eye opening": expected_bins(demo_dir, stay, (EYE,)),
        }
        for channel, want in expected.items():
            got = column(hourly, stay["stay_id"], channel)
            assert len(got) == n_bins
            assert got == pytest.approx([want.get(hour) for hour in range(n_bins)]), (stay["stay_id"], channel)
            checked[channel] += len(want)
    assert (
        checked["Heart Rate"] > 100 and checked["Temperature"] > 10 and checked["Glascow coma scale eye opening"] > 10
    )


def test_demo_matrix(demo_features):
    feats = demo_features / "features"
    stays = pl.read_parquet(demo_features / "cohort" / "stays.parquet")
    ehr = np.load(feats / "ehr.npy", mmap_mode="r")
    norm = json.loads((feats / "normalizer.json").read_text())
    index = pl.read_parquet(feats / "index.parquet")
    assert ehr.shape == (stays.height, 48, 76)
    assert np.isfinite(ehr).all()
    lengths = index["length"].to_numpy()
    for i, length in enumerate(lengths):
        assert not ehr[i, length:].any()
    # z-scored on train rows: the train rows of each continuous column have mean 0 and std 1
    train = (stays["split"] == "train").to_numpy()
    cont = [norm["columns"].index(c) for c in norm["continuous"]]
    rows = np.concatenate([ehr[i, : lengths[i]][:, cont] for i in np.flatnonzero(train)])
    assert rows.mean(axis=0) == pytest.approx(np.zeros(12), abs=1e-4)
    observed = rows.std(axis=0, ddof=1)
    assert observed == pytest.approx(np.ones(12), abs=1e-3)
    # one category per categorical channel in every real row
    for channel in [c for c in CHANNELS if variables.is_categorical(c)]:
        block = [i for i, c in enumerate(norm["columns"]) if c.startswith(channel + "->")]
        per_row = np.concatenate([ehr[i, : lengths[i]][:, block].sum(axis=1) for i in range(len(lengths))])
        assert np.all(per_row == 1.0), channel
