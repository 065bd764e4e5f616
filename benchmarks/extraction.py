"""Extraction benchmark: our ingest + features against a bare scan and a mimic3-benchmarks-style
per-subject pandas extraction, on the same generated MIMIC-shaped files.

Data: generated here with numpy (not drfuse.synth, so the row count is exact and the generation
takes seconds): `--stays` ICU stays with `--rows-per-stay` chart rows each (default 2,500 x 4,000
= 10 M chartevents rows; ~60 % are items of the 17 variables, the rest other item ids, some
outside the stays), a smaller labevents, and the small tables ingest needs.

Variants, each in its own subprocess (wall time and peak RSS of that process):
  floor   count(*) over DuckDB read_csv of chartevents.csv.gz and labevents.csv.gz
  ours    drfuse.data.ingest.ingest + drfuse.data.features.build_features
  pandas  mimic3-benchmarks style: events split into per-subject files (pandas chunks), then per
          subject: read, map items, convert, per-stay hourly binning and discretising in Python.
          Its per-subject part runs on `--pandas-fraction` of the subjects and is extrapolated
          linearly (the split pass always runs in full).

    .venv/bin/python benchmarks/extraction.py [--stays 2500] [--rows-per-stay 4000]
Prints a table and writes benchmarks/out/extraction.json.
"""

from __future__ import annotations

import argparse
import json
import math
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
    220045: (85, 15, "bpm"), 220050: (120, 20, "mmHg"), 220179: (118, 20, "mmHg"), 220051: (60, 12, "mmHg"),
    220180: (62, 12, "mmHg"), 220052: (78, 12, "mmHg"), 220181: (77, 12, "mmHg"), 220210: (19, 5, "insp/min"),
    220277: (97, 3, "%"), 223761: (98.4, 1.5, "°F"), 223762: (36.9, 0.8, "°C"), 220621: (130, 40, "mg/dL"),
    225664: (130, 40, "mg/dL"), 223835: (45, 15, ""), 226512: (80, 20, "kg"), 226531: (176, 40, ""),
    226707: (67, 4, "Inch"), 226730: (170, 10, "cm"), 223830: (7.38, 0.08, "units"),
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
        return pa.table({
            "labevent_id": np.arange(n_rows), **cols, "specimen_id": np.arange(n_rows), "itemid": item,
            "order_provider_id": pa.nulls(n_rows, pa.string()), "charttime": _ts(t), "storetime": _ts(t + 600),
            "value": value, "valuenum": pa.array(valuenum, from_pandas=True), "valueuom": uom,
            "ref_range_lower": pa.nulls(n_rows, pa.float64()), "ref_range_upper": pa.nulls(n_rows, pa.float64()),
            "flag": pa.nulls(n_rows, pa.string()), "priority": pa.nulls(n_rows, pa.string()),
            "comments": pa.nulls(n_rows, pa.string()),
        })
    return pa.table({
        **cols, "stay_id": stays["stay_id"][idx], "caregiver_id": pa.nulls(n_rows, pa.int64()), "charttime": _ts(t),
        "storetime": _ts(t + 300), "itemid": item, "value": value, "valuenum": pa.array(valuenum, from_pandas=True),
        "valueuom": uom, "warning": np.zeros(n_rows, dtype=np.int64),
    })


def generate(root: Path, n_stays: int, rows_per_stay: int, seed: int = 0) -> None:
    """MIMIC-IV v2.2-shaped files under root/mimic-iv and root/stays.parquet."""
    rng = np.random.default_rng(seed)
    n_subjects = max(1, int(n_stays * 0.8))
    subject = 10_000_000 + np.sort(rng.integers(0, n_subjects, n_stays))
    subject[: n_subjects] = 10_000_000 + np.arange(min(n_subjects, n_stays))
    subject.sort()
    stays = {
        "subject_id": subject, "hadm_id": 20_000_000 + np.arange(n_stays), "stay_id": 30_000_000 + np.arange(n_stays),
        "intime_s": rng.integers(0, 10 * 365 * 86400, n_stays), "los_s": rng.integers(4 * 3600, 10 * 86400, n_stays),
    }
    mimic = root / "mimic-iv"
    intime, outtime = _ts(stays["intime_s"]), _ts(stays["intime_s"] + stays["los_s"])
    subjects = np.unique(subject)
    _write(mimic / "hosp" / "patients.csv.gz", pa.table({
        "subject_id": subjects, "gender": ["F"] * len(subjects), "anchor_age": rng.integers(18, 90, len(subjects)),
        "anchor_year": [2150] * len(subjects), "anchor_year_group": ["2008 - 2010"] * len(subjects),
        "dod": pa.nulls(len(subjects), pa.timestamp("s"))}))
    _write(mimic / "hosp" / "admissions.csv.gz", pa.table({
        "subject_id": subject, "hadm_id": stays["hadm_id"], "admittime": _ts(stays["intime_s"] - 3600),
        "dischtime": _ts(stays["intime_s"] + stays["los_s"] + 3600), "race": ["WHITE"] * n_stays}))
    _write(mimic / "hosp" / "transfers.csv.gz", pa.table({
        "subject_id": subject, "hadm_id": stays["hadm_id"], "transfer_id": stays["stay_id"],
        "eventtype": ["admit"] * n_stays, "careunit": ["MICU"] * n_stays, "intime": intime, "outtime": outtime}))
    _write(mimic / "hosp" / "diagnoses_icd.csv.gz", pa.table({
        "subject_id": subject, "hadm_id": stays["hadm_id"], "seq_num": [1] * n_stays,
        "icd_code": ["4280"] * n_stays, "icd_version": ["9"] * n_stays}))
    _write(mimic / "hosp" / "d_labitems.csv.gz", pa.table({
        "itemid": list(LAB_ITEMS), "label": ["lab"] * len(LAB_ITEMS), "fluid": ["Blood"] * len(LAB_ITEMS),
        "category": ["Chemistry"] * len(LAB_ITEMS)}))
    all_items = sorted(set(NUMERIC_ITEMS) | set(TEXT_ITEMS) | set(OTHER_ITEMS.tolist()))
    _write(mimic / "icu" / "d_items.csv.gz", pa.table({
        "itemid": all_items, "label": ["item"] * len(all_items), "linksto": ["chartevents"] * len(all_items)}))
    _write(mimic / "icu" / "icustays.csv.gz", pa.table({
        "subject_id": subject, "hadm_id": stays["hadm_id"], "stay_id": stays["stay_id"],
        "first_careunit": ["MICU"] * n_stays, "last_careunit": ["MICU"] * n_stays, "intime": intime,
        "outtime": outtime, "los": stays["los_s"] / 86400}))
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
    pq.write_table(pa.table({
        "stay_id": stays["stay_id"], "subject_id": subject, "hadm_id": stays["hadm_id"], "intime": intime,
        "outtime": outtime, "los_hours": stays["los_s"] / 3600, "split": split}), root / "stays.parquet")
    (root / "done").write_text(json.dumps({"stays": n_stays, "chartevents_rows": total}))


# --------------------------------------------------------------------------- variants


def run_floor(root: Path, work: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    counts = {}
    for name in ("icu/chartevents", "hosp/labevents"):
        path = root / "mimic-iv" / f"{name}.csv.gz"
        counts[name] = con.execute(f"SELECT count(*) FROM read_csv('{path}', header = true, all_varchar = true)").fetchone()[0]
    return counts


def run_ours(root: Path, work: Path) -> dict:
    from drfuse.data.features import build_features
    from drfuse.data.ingest import ingest

    ingest(root / "mimic-iv", None, work / "mimiciv.duckdb", work / "manifest.json")
    build_features(work / "mimiciv.duckdb", root / "stays.parquet", work / "features", {"cohort": {"hours": 48}})
    return json.loads((work / "features" / "counts.json").read_text())


def run_pandas(root: Path, work: Path, fraction: float) -> dict:
    """mimic3-benchmarks style: split the events by subject into files, then a Python loop per
    subject and stay (its extract_episodes_from_subjects + Discretizer, condensed)."""
    import pandas as pd

    from drfuse.data import items, variables
    from drfuse.data.features import layout, normal_scores

    item_var = items.item_to_variable()
    chans = list(variables.channels())
    lay, normal = layout(), normal_scores()
    subjects_dir = work / "subjects"
    t0 = time.perf_counter()
    for name, key in (("icu/chartevents", "chart"), ("hosp/labevents", "lab")):
        path = root / "mimic-iv" / f"{name}.csv.gz"
        cols = ["subject_id", "hadm_id", "charttime", "itemid", "value", "valuenum"] + (["stay_id"] if key == "chart" else [])
        for chunk in pd.read_csv(path, usecols=cols, chunksize=1_000_000, dtype={"value": str}):
            chunk = chunk[chunk.itemid.isin(item_var)]
            for subject, rows in chunk.groupby("subject_id"):
                out = subjects_dir / str(subject) / f"{key}.csv"
                out.parent.mkdir(parents=True, exist_ok=True)
                rows.to_csv(out, mode="a", header=not out.exists(), index=False)
    split_s = time.perf_counter() - t0

    stays = pd.read_parquet(root / "stays.parquet")
    subjects = sorted(stays.subject_id.unique())
    subset = subjects[: max(1, int(len(subjects) * fraction))]
    text = {c: variables.text_scores(c) for c in chans if variables.is_categorical(c)}
    rng_of = variables.ranges()
    t1 = time.perf_counter()
    n_done = 0
    for subject in subset:
        parts = []
        for key in ("chart", "lab"):
            f = subjects_dir / str(subject) / f"{key}.csv"
            if f.exists():
                parts.append(pd.read_csv(f, parse_dates=["charttime"], dtype={"value": str}))
        events = pd.concat(parts, ignore_index=True) if parts else None
        for stay in stays[stays.subject_id == subject].itertuples():
            data = np.zeros((48, len(lay.columns)), dtype=np.float32)
            if events is not None:
                own = events["stay_id"].eq(stay.stay_id) if "stay_id" in events else False
                ev = events[(own | (events.hadm_id.eq(stay.hadm_id) & events.get("stay_id", pd.Series(dtype=float)).isna()))]
                end = min(stay.intime + pd.Timedelta(hours=48), stay.outtime)
                ev = ev[(ev.charttime >= stay.intime) & (ev.charttime < end)].sort_values("charttime")
                values = [[None] * len(chans) for _ in range(48)]
                for row in ev.itertuples():  # per-row Python, as the Discretizer
                    var = item_var[row.itemid]
                    c = chans.index(var)
                    v = text.get(var, {}).get(str(row.value).lower(), row.valuenum)
                    if v is None or v != v:
                        continue
                    if row.itemid == 223761:
                        v = (v - 32) * 5 / 9
                    elif row.itemid == 226707:
                        v *= 2.54
                    elif row.itemid == 226531:
                        v *= 0.45359237
                    elif var == "Fraction inspired oxygen" and v > 1:
                        v /= 100
                    lo_out, lo, hi, hi_out = rng_of[var]
                    if v < lo_out or v > hi_out:
                        continue
                    hours = (row.charttime - stay.intime).total_seconds() / 3600
                    values[max(0, math.ceil(hours) - 1)][c] = min(max(v, lo), hi)
                last = list(normal)
                for t in range(min(48, math.ceil(stay.los_hours))):
                    for c in range(len(chans)):
                        observed = values[t][c] is not None
                        if observed:
                            last[c] = values[t][c]
                        if c in lay.lookup:
                            data[t, lay.begin[c] + lay.lookup[c][int(round(last[c]))]] = 1
                        else:
                            data[t, lay.begin[c]] = last[c]
                        data[t, lay.mask_begin + c] = observed
        n_done += 1
    per_subject_s = time.perf_counter() - t1
    return {"split_seconds": split_s, "per_subject_seconds_subset": per_subject_s, "subjects_done": n_done,
            "subjects_total": len(subjects),
            "extrapolated_seconds": split_s + per_subject_s * len(subjects) / max(1, n_done)}


def child(variant: str, root: Path, work: Path, fraction: float) -> None:
    start = time.perf_counter()
    if variant == "floor":
        info = run_floor(root, work)
    elif variant == "ours":
        info = run_ours(root, work)
    else:
        info = run_pandas(root, work, fraction)
    wall = time.perf_counter() - start
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"variant": variant, "wall_s": wall, "peak_rss_mb": peak / 1024, "info": info}, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stays", type=int, default=2500)
    parser.add_argument("--rows-per-stay", type=int, default=4000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/drfuse-bench-extraction"))
    parser.add_argument("--pandas-fraction", type=float, default=0.1)
    parser.add_argument("--variants", default="floor,ours,pandas")
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
    results = {}
    for variant in args.variants.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--stays", str(args.stays), "--rows-per-stay",
             str(args.rows_per_stay), "--data-dir", str(args.data_dir), "--pandas-fraction", str(args.pandas_fraction)],
            capture_output=True, text=True,
        )
        if proc.returncode:
            sys.exit(f"variant {variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "pandas" in results:
        results["pandas"]["wall_s_measured"] = results["pandas"]["wall_s"]
        results["pandas"]["wall_s"] = results["pandas"]["info"]["extrapolated_seconds"]
    floor = results.get("floor", {}).get("wall_s")
    print(f"\n{'variant':<8} {'wall s':>9} {'x floor':>8} {'peak MB':>9}")
    for name, r in results.items():
        ratio = f"{r['wall_s'] / floor:8.2f}" if floor else "       -"
        print(f"{name:<8} {r['wall_s']:9.1f} {ratio} {r['peak_rss_mb']:9.0f}")
    if "ours" in results and "pandas" in results:
        print(f"pandas / ours: {results['pandas']['wall_s'] / results['ours']['wall_s']:.1f}x "
              f"(pandas per-subject part on {args.pandas_fraction:.0%} of subjects, extrapolated)")
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"stays": args.stays, "chartevents_rows": args.stays * args.rows_per_stay, "results": results}
    (OUT / "extraction.json").write_text(json.dumps(payload, indent=2, default=str))
    print(f"written {OUT / 'extraction.json'}")


if __name__ == "__main__":
    main()
