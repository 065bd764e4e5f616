"""Extraction benchmark: our ingest + features against a bare scan and a mimic3-benchmarks-style
per-subject pandas extraction, on the same generated MIMIC-shaped files.

Data: generated here with numpy (not drfuse.synth, so the row count is exact and the generation
takes seconds): `--stays` ICU stays with `--rows-per-stay` chart rows each (default 2,500 x 4,000
= 10 M chartevents rows; ~75 % are items of the 17 variables, the rest other item ids, some
outside the stays), a smaller labevents, and the small tables ingest needs.

Variants, each in its own subprocess (wall time, CPU time and peak RSS of that process):
  floor         count(*) over DuckDB read_csv of chartevents.csv.gz and labevents.csv.gz
  typed_memory  ingest's own load of the two event tables (typed columns, item filter, the kept
                columns, both files side by side), into an in-memory database
  typed_disk    the same into a database file: what ingest writes for the event tables
  ours          drfuse.data.ingest.ingest + drfuse.data.features.build_features
  pandas        mimic3-benchmarks / MedFuse mimic4extract style: every event row read with
                csv.DictReader in Python and appended to per-subject files (item + subject filter),
                then per subject: pandas read, map items, clean, per stay a timeseries CSV, and the
                Discretizer's per-row hourly binning. The row scan always runs in full; the
                subjects kept are `--pandas-fraction` of all, and the writes and per-subject part
                are extrapolated linearly to all subjects. Run once, after the rounds.

The machine this runs on may be shared: the other variants run `--repeat` rounds, each round all
of them one after the other, and every ratio is taken within a round (median, min and max over
the rounds are printed).

    .venv/bin/python benchmarks/extraction.py [--stays 2500] [--rows-per-stay 4000] [--repeat 3]
Prints a table and writes benchmarks/out/extraction.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "out"
T_START = np.datetime64("2150-01-01T00:00:00", "s")

# item id -> (mean, sd, unit) of generated values; GCS and capillary refill get phrases
NUMERIC_ITEMS = {
    220045: (85, 15, "bpm"),
    220050: (120, 20, "mmHg"),
    220179: (118, 20, "mmHg"),
    220051: (60, 12, "mmHg"),
    220180: (62, 12, "mmHg"),
    220052: (78, 12, "mmHg"),
    220181: (77, 12, "mmHg"),
    220210: (19, 5, "insp/min"),
    220277: (97, 3, "%"),
    223761: (98.4, 1.5, "°F"),
    223762: (36.9, 0.8, "°C"),
    220621: (130, 40, "mg/dL"),
    225664: (130, 40, "mg/dL"),
    223835: (45, 15, ""),
    226512: (80, 20, "kg"),
    226531: (176, 40, ""),
    226707: (67, 4, "Inch"),
    226730: (170, 10, "cm"),
    223830: (7.38, 0.08, "units"),
}
TEXT_ITEMS = {
    220739: ["Spontaneously", "To Speech", "To Pain", "None"],
    223900: ["Oriented", "Confused", "Inappropriate Words", "Incomprehensible sounds", "No Response-ETT"],
    223901: ["Obeys Commands", "Localizes Pain", "Flex-withdraws", "Abnormal Flexion", "No response"],
    223951: ["Normal <3 Seconds", "Abnormal >3 Seconds"],
}
OTHER_ITEMS = np.arange(224000, 224040)  # items that are none of the 17 variables
LAB_ITEMS = {50931: (130, 40, "mg/dL"), 50820: (7.38, 0.08, "units"), 50817: (96, 3, "%"), 50912: (1.0, 0.3, "mg/dL")}


# --------------------------------------------------------------------------- data


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array(T_START + seconds.astype("timedelta64[s]"), pa.timestamp("s"))


def _write(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = pa.CompressedOutputStream(str(path), "gzip")
    pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="needed"))
    sink.close()


def _events(rng, stays: dict, n_rows: int, kind: str) -> pa.Table:
    """n_rows events spread over random stays, from 2 h before intime to 2 h after outtime."""
    idx = rng.integers(0, len(stays["stay_id"]), n_rows)
    start = stays["intime_s"][idx] - 7200
    span = stays["los_s"][idx] + 14400
    t = (start + rng.random(n_rows) * span).astype(np.int64) // 60 * 60  # whole minutes, as MIMIC
    if kind == "lab":
        items = np.array(list(LAB_ITEMS))
        item = items[rng.integers(0, len(items), n_rows)]
        params = LAB_ITEMS
    else:
        pool = np.concatenate([np.array(list(NUMERIC_ITEMS) * 3 + list(TEXT_ITEMS)), OTHER_ITEMS[:20]])
        item = pool[rng.integers(0, len(pool), n_rows)]
        params = NUMERIC_ITEMS
    valuenum = np.full(n_rows, np.nan)
    value = np.empty(n_rows, dtype=object)
    uom = np.empty(n_rows, dtype=object)
    for it in np.unique(item):
        sel = item == it
        if it in TEXT_ITEMS:
            phrases = np.array(TEXT_ITEMS[it], dtype=object)
            value[sel] = phrases[rng.integers(0, len(phrases), sel.sum())]
            continue
        mean, sd, unit = params.get(int(it), (50, 10, "units"))
        v = np.round(rng.normal(mean, sd, sel.sum()), 2)
        valuenum[sel] = v
        value[sel] = v.astype(str)
        uom[sel] = unit or None
    cols = {"subject_id": stays["subject_id"][idx], "hadm_id": stays["hadm_id"][idx]}
    if kind == "lab":
        return pa.table(
            {
                "labevent_id": np.arange(n_rows),
                **cols,
                "specimen_id": np.arange(n_rows),
                "itemid": item,
                "order_provider_id": pa.nulls(n_rows, pa.string()),
                "charttime": _ts(t),
                "storetime": _ts(t + 600),
                "value": value,
                "valuenum": pa.array(valuenum, from_pandas=True),
                "valueuom": uom,
                "ref_range_lower": pa.nulls(n_rows, pa.float64()),
                "ref_range_upper": pa.nulls(n_rows, pa.float64()),
                "flag": pa.nulls(n_rows, pa.string()),
                "priority": pa.nulls(n_rows, pa.string()),
                "comments": pa.nulls(n_rows, pa.string()),
            }
        )
    return pa.table(
        {
            **cols,
            "stay_id": stays["stay_id"][idx],
            "caregiver_id": pa.nulls(n_rows, pa.int64()),
            "charttime": _ts(t),
            "storetime": _ts(t + 300),
            "itemid": item,
            "value": value,
            "valuenum": pa.array(valuenum, from_pandas=True),
            "valueuom": uom,
            "warning": np.zeros(n_rows, dtype=np.int64),
        }
    )


def generate(root: Path, n_stays: int, rows_per_stay: int, seed: int = 0) -> None:
    """MIMIC-IV v2.2-shaped files under root/mimic-iv and root/stays.parquet."""
    rng = np.random.default_rng(seed)
    n_subjects = max(1, int(n_stays * 0.8))
    subject = 10_000_000 + np.sort(rng.integers(0, n_subjects, n_stays))
    subject[:n_subjects] = 10_000_000 + np.arange(min(n_subjects, n_stays))
    subject.sort()
    stays = {
        "subject_id": subject,
        "hadm_id": 20_000_000 + np.arange(n_stays),
        "stay_id": 30_000_000 + np.arange(n_stays),
        "intime_s": rng.integers(0, 10 * 365 * 86400, n_stays),
        "los_s": rng.integers(4 * 3600, 10 * 86400, n_stays),
    }
    mimic = root / "mimic-iv"
    intime, outtime = _ts(stays["intime_s"]), _ts(stays["intime_s"] + stays["los_s"])
    subjects = np.unique(subject)
    _write(
        mimic / "hosp" / "patients.csv.gz",
        pa.table(
            {
                "subject_id": subjects,
                "gender": ["F"] * len(subjects),
                "anchor_age": rng.integers(18, 90, len(subjects)),
                "anchor_year": [2150] * len(subjects),
                "anchor_year_group": ["2008 - 2010"] * len(subjects),
                "dod": pa.nulls(len(subjects), pa.timestamp("s")),
            }
        ),
    )
    _write(
        mimic / "hosp" / "admissions.csv.gz",
        pa.table(
            {
                "subject_id": subject,
                "hadm_id": stays["hadm_id"],
                "admittime": _ts(stays["intime_s"] - 3600),
                "dischtime": _ts(stays["intime_s"] + stays["los_s"] + 3600),
                "race": ["WHITE"] * n_stays,
            }
        ),
    )
    _write(
        mimic / "hosp" / "transfers.csv.gz",
        pa.table(
            {
                "subject_id": subject,
                "hadm_id": stays["hadm_id"],
                "transfer_id": stays["stay_id"],
                "eventtype": ["admit"] * n_stays,
                "careunit": ["MICU"] * n_stays,
                "intime": intime,
                "outtime": outtime,
            }
        ),
    )
    _write(
        mimic / "hosp" / "diagnoses_icd.csv.gz",
        pa.table(
            {
                "subject_id": subject,
                "hadm_id": stays["hadm_id"],
                "seq_num": [1] * n_stays,
                "icd_code": ["4280"] * n_stays,
                "icd_version": ["9"] * n_stays,
            }
        ),
    )
    _write(
        mimic / "hosp" / "d_labitems.csv.gz",
        pa.table(
            {
                "itemid": list(LAB_ITEMS),
                "label": ["lab"] * len(LAB_ITEMS),
                "fluid": ["Blood"] * len(LAB_ITEMS),
                "category": ["Chemistry"] * len(LAB_ITEMS),
            }
        ),
    )
    all_items = sorted(set(NUMERIC_ITEMS) | set(TEXT_ITEMS) | set(OTHER_ITEMS.tolist()))
    _write(
        mimic / "icu" / "d_items.csv.gz",
        pa.table(
            {"itemid": all_items, "label": ["item"] * len(all_items), "linksto": ["chartevents"] * len(all_items)}
        ),
    )
    _write(
        mimic / "icu" / "icustays.csv.gz",
        pa.table(
            {
                "subject_id": subject,
                "hadm_id": stays["hadm_id"],
                "stay_id": stays["stay_id"],
                "first_careunit": ["MICU"] * n_stays,
                "last_careunit": ["MICU"] * n_stays,
                "intime": intime,
                "outtime": outtime,
                "los": stays["los_s"] / 86400,
            }
        ),
    )
    _write(mimic / "hosp" / "labevents.csv.gz", _events(rng, stays, n_stays * rows_per_stay // 20, "lab"))
    # chartevents in chunks: bounded memory at any size
    path = mimic / "icu" / "chartevents.csv.gz"
    sink = pa.CompressedOutputStream(str(path), "gzip")
    total, chunk = n_stays * rows_per_stay, 1_000_000
    for start in range(0, total, chunk):
        table = _events(rng, stays, min(chunk, total - start), "chart")
        pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="needed", include_header=start == 0))
    sink.close()
    split = np.where(rng.random(n_stays) < 0.7, "train", np.where(rng.random(n_stays) < 0.33, "val", "test"))
    pq.write_table(
        pa.table(
            {
                "stay_id": stays["stay_id"],
                "subject_id": subject,
                "hadm_id": stays["hadm_id"],
                "intime": intime,
                "outtime": outtime,
                "los_hours": stays["los_s"] / 3600,
                "split": split,
            }
        ),
        root / "stays.parquet",
    )
    (root / "done").write_text(json.dumps({"stays": n_stays, "chartevents_rows": total}))


# --------------------------------------------------------------------------- variants


def run_floor(root: Path, work: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    counts = {}
    for name in ("icu/chartevents", "hosp/labevents"):
        path = root / "mimic-iv" / f"{name}.csv.gz"
        counts[name] = con.execute(
            f"SELECT count(*) FROM read_csv('{path}', header = true, all_varchar = true)"
        ).fetchone()[0]
    return counts


def run_typed(root: Path, work: Path, on_disk: bool) -> dict:
    """ingest's load of the event tables alone, with ingest's own planning and loading code."""
    import duckdb

    from drfuse.data import ingest
    from drfuse.data import mimic_version as mv

    layout = mv.detect_layout(root / "mimic-iv")
    plan, _ = ingest._plan(root / "mimic-iv", None, layout)
    events = {table: plan[table] for table in ingest.EVENT_ITEMS}
    con = duckdb.connect(str(work / "events.duckdb") if on_disk else ":memory:")
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    con.execute("SET preserve_insertion_order = false")
    loaded = ingest._load_all(con, events, layout)
    con.close()
    return {t: {k: v for k, v in info.items() if k != "path"} for t, info in loaded.items()}


def run_ours(root: Path, work: Path) -> dict:
    from drfuse import config as config_mod
    from drfuse.data.features import build_features
    from drfuse.data.ingest import ingest

    cfg = config_mod.load(Path(__file__).resolve().parents[1] / "config.yaml")
    t0 = time.perf_counter()
    manifest = ingest(root / "mimic-iv", None, work / "mimiciv.duckdb", work / "manifest.json")
    t1 = time.perf_counter()
    build_features(work / "mimiciv.duckdb", root / "stays.parquet", work / "features", cfg)
    t2 = time.perf_counter()
    return {
        "ingest_seconds": t1 - t0,
        "features_seconds": t2 - t1,
        "tables": {t: {k: v for k, v in info.items() if k != "path"} for t, info in manifest["tables"].items()},
        "counts": json.loads((work / "features" / "counts.json").read_text()),
    }


SPLIT_FLUSH_ROWS = 200_000  # rows buffered before they are appended to the subjects' files
OBS_HEADER = ["subject_id", "hadm_id", "stay_id", "charttime", "itemid", "value", "valueuom"]


def _split_events(path: Path, subjects_dir: Path, keep_subjects: set, keep_items: set, key: str) -> tuple[int, float]:
    """mimic3-benchmarks' read_events_table_and_break_up_by_subject: csv.DictReader row by row,
    its subject and item filters, rows appended to <subject>/events_<key>.csv with csv.DictWriter.
    It flushes when the subject changes (MIMIC's files are sorted by subject); the generated file
    is not sorted, so rows are buffered per subject and flushed every SPLIT_FLUSH_ROWS instead
    (same writes per row, no file opened per row). Returns (rows read, seconds spent writing)."""
    import csv
    import gzip
    from collections import defaultdict

    buffered: dict[str, list] = defaultdict(list)
    n_rows = n_buf = 0
    write_s = 0.0

    def flush() -> float:
        t = time.perf_counter()
        for subject, rows in buffered.items():
            out = subjects_dir / subject / f"events_{key}.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            new = not out.exists()
            with open(out, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=OBS_HEADER, quoting=csv.QUOTE_MINIMAL)
                if new:
                    w.writeheader()
                w.writerows(rows)
        buffered.clear()
        return time.perf_counter() - t

    with gzip.open(path, "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            n_rows += 1
            if row["subject_id"] not in keep_subjects or row["itemid"] not in keep_items:
                continue
            buffered[row["subject_id"]].append(
                {
                    "subject_id": row["subject_id"],
                    "hadm_id": row["hadm_id"],
                    "stay_id": row.get("stay_id", ""),
                    "charttime": row["charttime"],
                    "itemid": row["itemid"],
                    "value": row["value"],
                    "valueuom": row["valueuom"],
                }
            )
            n_buf += 1
            if n_buf >= SPLIT_FLUSH_ROWS:
                write_s += flush()
                n_buf = 0
    write_s += flush()
    return n_rows, write_s


def _clean_events(events, item_var: dict, rng_of: dict):
    """mimic3-benchmarks' map_itemids_to_variables + clean_events, vectorised per variable as
    there: text categoricals to scores, unit conversions, then the outlier/valid ranges."""
    import pandas as pd

    from drfuse.data import variables

    events = events.merge(pd.Series(item_var, name="variable"), left_on="itemid", right_index=True)
    value = pd.Series(np.nan, index=events.index)
    for var, idx in events.groupby("variable").groups.items():
        sub = events.loc[idx]
        raw = pd.to_numeric(sub["value"], errors="coerce")
        if variables.is_categorical(var):
            raw = sub["value"].astype(str).str.strip().str.lower().map(variables.text_scores(var)).fillna(raw)
        unit = sub["valueuom"].astype(str).str.strip().str.lower()
        conv = (
            sub["itemid"]
            .map(variables.ITEM_CONVERSIONS)
            .fillna(unit.map(variables.UNIT_CONVERSIONS.get(var, {})))
            .fillna(variables.CHANNEL_CONVERSIONS.get(var, "none"))
        )
        raw = raw.where(conv != "inch_to_cm", raw * 2.54)
        raw = raw.where(conv != "f_to_c", (raw - 32) * 5 / 9)
        raw = raw.where(conv != "lbs_to_kg", raw * 0.45359237)
        raw = raw.where(~((conv == "percent_to_fraction") & (raw > 1)), raw / 100)
        lo_out, lo, hi, hi_out = rng_of[var]
        raw = raw.where((raw >= lo_out) & (raw <= hi_out)).clip(lo, hi)
        value.loc[idx] = raw
    events["value"] = value
    return events[events["value"].notna()]


def _discretize(path: Path, chans: list, lay, normal, hours: int) -> np.ndarray:
    """mimic3-benchmarks' Discretizer.transform on one episode CSV: rows read with the csv module,
    each value written into its hourly bin in Python, then 'previous' imputation bin by bin."""
    import csv

    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [r for r in reader]
    data = np.zeros((hours, len(lay.columns)), dtype=np.float32)
    mask = np.zeros((hours, len(chans)), dtype=np.int8)
    original = [[None] * len(chans) for _ in range(hours)]
    channel_of = [chans.index(name) if name in chans else -1 for name in header]

    def write(bin_id: int, c: int, value: str) -> None:
        if c in lay.lookup:
            data[bin_id, lay.begin[c] + lay.lookup[c][int(round(float(value)))]] = 1
        else:
            data[bin_id, lay.begin[c]] = float(value)

    for row in rows:
        bin_id = int(float(row[0]) - 1e-6)
        if not 0 <= bin_id < hours:
            continue
        for j in range(1, len(row)):
            if row[j] == "" or channel_of[j] < 0:
                continue
            c = channel_of[j]
            mask[bin_id, c] = 1
            write(bin_id, c, row[j])
            original[bin_id][c] = row[j]
    previous: list[list] = [[] for _ in chans]
    for bin_id in range(hours):
        for c in range(len(chans)):
            if mask[bin_id, c]:
                previous[c].append(original[bin_id][c])
                continue
            write(bin_id, c, previous[c][-1] if previous[c] else repr(float(normal[c])))
        data[bin_id, lay.mask_begin : lay.mask_begin + len(chans)] = mask[bin_id]
    return data


def run_pandas(root: Path, work: Path, fraction: float) -> dict:
    """mimic3-benchmarks (and MedFuse's mimic4extract) style, condensed: extract_subjects'
    per-row split of the event files by subject, extract_episodes_from_subjects' per-subject
    pandas (read, map items, clean, per stay: window, pivot to a timeseries CSV), then the
    Discretizer per episode. The split reads every row of both files; only `fraction` of the
    subjects are kept, so the writes and the per-subject part are extrapolated linearly."""
    import pandas as pd

    from drfuse.data import items, variables
    from drfuse.data.features import layout, normal_scores

    hours = 48
    item_var = items.item_to_variable()
    chans = list(variables.channels())
    lay, normal, rng_of = layout(), normal_scores(), variables.ranges()
    stays = pd.read_parquet(root / "stays.parquet")
    subjects = sorted(stays.subject_id.unique())
    # a seeded random sample: the generator gives the lowest subject ids one stay each
    rng = np.random.default_rng(0)
    subset = sorted(rng.choice(subjects, max(1, int(len(subjects) * fraction)), replace=False).tolist())
    scale = len(subjects) / len(subset)
    subjects_dir = work / "subjects"

    t0 = time.perf_counter()
    rows_read, write_s = 0, 0.0
    for name, key in (("icu/chartevents", "chart"), ("hosp/labevents", "lab")):
        n, w = _split_events(
            root / "mimic-iv" / f"{name}.csv.gz",
            subjects_dir,
            {str(s) for s in subset},
            {str(i) for i in item_var},
            key,
        )
        rows_read += n
        write_s += w
    split_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    n_episodes = 0
    for subject in subset:
        parts = [
            pd.read_csv(f, header=0, index_col=None, dtype={"value": str, "valueuom": str})
            for f in sorted((subjects_dir / str(subject)).glob("events_*.csv"))
        ]
        events = pd.concat(parts, ignore_index=True)
        events["charttime"] = pd.to_datetime(events["charttime"])
        events["stay_id"] = events["stay_id"].fillna(-1).astype(int)
        events["valueuom"] = events["valueuom"].fillna("")
        events = _clean_events(events, item_var, rng_of)
        for i, stay in enumerate(stays[stays.subject_id == subject].itertuples()):
            # get_events_for_stay + add_hours_elapsed_to_events + convert_events_to_timeseries
            own = (events.stay_id == stay.stay_id) | ((events.stay_id == -1) & (events.hadm_id == stay.hadm_id))
            ev = events[own & (events.charttime >= stay.intime) & (events.charttime <= stay.outtime)].copy()
            ev["hours"] = (ev.charttime - stay.intime).dt.total_seconds() / 3600
            ts = (
                ev[["hours", "variable", "value"]]
                .sort_values(by=["hours", "variable", "value"])
                .drop_duplicates(subset=["hours", "variable"], keep="last")
                .pivot(index="hours", columns="variable", values="value")
                .sort_index()
            )
            ts = ts.reindex(columns=chans)
            episode = subjects_dir / str(subject) / f"episode{i + 1}_timeseries.csv"
            ts.to_csv(episode, index_label="Hours")
            _discretize(episode, chans, lay, normal, min(hours, max(1, math.ceil(stay.los_hours))))
            n_episodes += 1
    per_subject_s = time.perf_counter() - t1
    scan_s = split_s - write_s
    return {
        "rows_read": rows_read,
        "split_seconds": split_s,
        "split_write_seconds_subset": write_s,
        "per_subject_seconds_subset": per_subject_s,
        "subjects_done": len(subset),
        "subjects_total": len(subjects),
        "episodes_done": n_episodes,
        "extrapolated_seconds": scan_s + (write_s + per_subject_s) * scale,
        "extrapolation": f"row scan measured in full ({rows_read:,} rows); writes and per-subject part "
        f"measured on {len(subset)} of {len(subjects)} subjects, scaled x{scale:.1f}",
    }


def child(variant: str, root: Path, work: Path, fraction: float) -> None:
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    if variant == "floor":
        info = run_floor(root, work)
    elif variant in ("typed_memory", "typed_disk"):
        info = run_typed(root, work, on_disk=variant == "typed_disk")
    elif variant == "ours":
        info = run_ours(root, work)
    else:
        info = run_pandas(root, work, fraction)
    wall = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    peak = max(u.ru_maxrss for u in usage)
    # CPU seconds as well: on a shared machine the wall time of the multi-threaded variant suffers
    # most from other people's load, CPU time hardly at all
    cpu = sum(u.ru_utime + u.ru_stime for u in usage) - (before.ru_utime + before.ru_stime)
    print(
        json.dumps(
            {"variant": variant, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak / 1024, "info": info}, default=str
        )
    )


def _run_child(args, variant: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--stays",
            str(args.stays),
            "--rows-per-stay",
            str(args.rows_per_stay),
            "--data-dir",
            str(args.data_dir),
            "--pandas-fraction",
            str(args.pandas_fraction),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(f"variant {variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "all": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stays", type=int, default=2500)
    parser.add_argument("--rows-per-stay", type=int, default=4000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/drfuse-bench-extraction"))
    parser.add_argument("--pandas-fraction", type=float, default=0.1)
    parser.add_argument("--variants", default="floor,typed_memory,typed_disk,ours,pandas")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the variants other than pandas")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.data_dir / f"s{args.stays}_r{args.rows_per_stay}"
    if args.child:
        work = args.data_dir / f"work-{args.child}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        child(args.child, root, work, args.pandas_fraction)
        shutil.rmtree(work, ignore_errors=True)
        return
    if not (root / "done").exists():
        print(f"generating {args.stays * args.rows_per_stay:,} chartevents rows under {root} ...", flush=True)
        t = time.perf_counter()
        generate(root, args.stays, args.rows_per_stay)
        print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    variants = args.variants.split(",")
    rounds: list[dict] = []
    for k in range(args.repeat):
        rounds.append({v: _run_child(args, v) for v in variants if v != "pandas"})
        print(f"round {k + 1}: " + ", ".join(f"{v} {r['wall_s']:.1f} s" for v, r in rounds[-1].items()), flush=True)
    results = {}
    if "pandas" in variants:
        pandas = _run_child(args, "pandas")
        pandas["wall_s_measured"], pandas["cpu_s_measured"] = pandas["wall_s"], pandas["cpu_s"]
        pandas["wall_s"] = pandas["info"]["extrapolated_seconds"]
        # CPU time extrapolated in the measured CPU / wall proportion
        pandas["cpu_s"] = pandas["wall_s"] * pandas["cpu_s_measured"] / pandas["wall_s_measured"]
        results["pandas"] = pandas

    names = [v for v in variants if v != "pandas"]
    summary = {
        v: {
            "wall_s": _spread([r[v]["wall_s"] for r in rounds]),
            "cpu_s": _spread([r[v]["cpu_s"] for r in rounds]),
            "peak_rss_mb": max(r[v]["peak_rss_mb"] for r in rounds),
        }
        for v in names
    }
    has_floor = "floor" in names
    for v in names:
        if has_floor:
            summary[v]["wall_over_floor"] = _spread([r[v]["wall_s"] / r["floor"]["wall_s"] for r in rounds])
            summary[v]["cpu_over_floor"] = _spread([r[v]["cpu_s"] / r["floor"]["cpu_s"] for r in rounds])
    print(f"\n{args.repeat} rounds; median [min - max] over the rounds, ratios within a round")
    print(f"{'variant':<13} {'wall s':>19} {'x floor (wall)':>20} {'x floor (CPU)':>20} {'peak MB':>8}")
    fmt = lambda d, p: f"{d['median']:.{p}f} [{d['min']:.{p}f}-{d['max']:.{p}f}]"  # noqa: E731
    for v in names:
        ratio_w = fmt(summary[v]["wall_over_floor"], 2) if has_floor else "-"
        ratio_c = fmt(summary[v]["cpu_over_floor"], 2) if has_floor else "-"
        print(
            f"{v:<13} {fmt(summary[v]['wall_s'], 1):>19} {ratio_w:>20} {ratio_c:>20} {summary[v]['peak_rss_mb']:8.0f}"
        )
    targets = {}
    if "ours" in names:
        ingest_s = [r["ours"]["info"]["ingest_seconds"] for r in rounds]
        features_s = [r["ours"]["info"]["features_seconds"] for r in rounds]
        print(f"ours: ingest {np.median(ingest_s):.1f} s + features {np.median(features_s):.1f} s (medians)")
        targets["peak_under_2GB"] = summary["ours"]["peak_rss_mb"] < 2048
        if has_floor:
            targets["ours_over_floor_median"] = summary["ours"]["wall_over_floor"]["median"]
            targets["within_2x_floor"] = targets["ours_over_floor_median"] <= 2
    if "ours" in names and "pandas" in results:
        ours_wall = summary["ours"]["wall_s"]["median"]
        targets["pandas_over_ours"] = results["pandas"]["wall_s"] / ours_wall
        targets["at_least_20x_faster_than_pandas"] = targets["pandas_over_ours"] >= 20
        print(
            f"pandas: {results['pandas']['wall_s']:.1f} s, {targets['pandas_over_ours']:.1f}x ours "
            f"({results['pandas']['info']['extrapolation']})"
        )
    print("targets:", ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in targets.items()))
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {
        "stays": args.stays,
        "chartevents_rows": args.stays * args.rows_per_stay,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "targets": targets,
        "summary": summary,
        "rounds": rounds,
        "pandas": results.get("pandas"),
    }
    (OUT / "extraction.json").write_text(json.dumps(payload, indent=2, default=str))
    print(f"written {OUT / 'extraction.json'}")


if __name__ == "__main__":
    main()
