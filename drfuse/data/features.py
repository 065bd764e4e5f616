"""Features stage: the 17 variables binned hourly over each stay's first hours, then the
76-column matrix that the models read.

1. `sql/hourly_stays.sql` loads the cohort (stays.parquet order, window end, number of bins);
   `drfuse.data.variables.clean_events` cleans the chart and lab rows (`sql/variables.sql`);
   `sql/hourly.sql` bins them into `hourly.parquet` (last value per hour, NULL when unobserved).
2. In numpy, a chunk of stays at a time: forward fill from the last observation (the normal value
   of discretizer_config.json before the first), one-hot categoricals, 17 observed masks; the
   12 continuous columns z-scored with train-split statistics (`normalizer.json`); rows past a
   stay's length zero. `ehr.npy` is written through a memmap, so memory stays bounded at MIMIC
   scale (60 k stays x 48 x 76 float32 = 0.9 GB on disk).

Column layout (as mimic3-benchmarks' Discretizer): channels in discretizer order, a continuous
channel one column, a categorical channel one column per possible value (12 + 47), then the 17
masks. Hourly values of a categorical are scores; a score is one-hot encoded on the possible value
that spells it in its numbered form ('4 Spontaneously', '15', '0.0'), so the phrase-only columns
('Spontaneously', 'No Response-ETT', ...) stay 0 and keep the 76-column layout.

Every file is written in a temporary folder and moved into `out_dir` at the end; the folders that
killed runs leave behind are removed at the next start.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from drfuse import atomic
from drfuse.data import duckdb_limits, variables
from drfuse.errors import UserError

log = logging.getLogger(__name__)

STAY_COLUMNS = ("stay_id", "hadm_id", "intime", "outtime", "split")


@dataclass(frozen=True)
class Layout:
    """The 76 columns: names, where each channel starts, and score -> column for categoricals."""

    columns: tuple[str, ...]
    begin: tuple[int, ...]  # first column of each channel
    lookup: dict[int, np.ndarray]  # channel index -> score -> column offset in its block (-1: none)
    continuous: tuple[int, ...]  # column index of each continuous channel
    mask_begin: int


def layout() -> Layout:
    cfg = variables.discretizer_config()
    columns: list[str] = []
    begin, lookup, continuous = [], {}, []
    for c, channel in enumerate(variables.channels()):
        begin.append(len(columns))
        if not variables.is_categorical(channel):
            continuous.append(len(columns))
            columns.append(channel)
            continue
        possible = cfg["possible_values"][channel]
        columns.extend(f"{channel}->{v}" for v in possible)
        lookup[c] = _score_lookup(channel, possible)
    mask_begin = len(columns)
    columns.extend(f"mask->{channel}" for channel in variables.channels())
    return Layout(tuple(columns), tuple(begin), lookup, tuple(continuous), mask_begin)


def _score_lookup(channel: str, possible: list[str]) -> np.ndarray:
    """Score -> offset of the possible value that spells the score in its numbered form."""
    low, _, high, _ = variables.ranges()[channel]
    table = np.full(int(high) + 1, -1, dtype=np.int64)
    for offset, value in enumerate(possible):
        score = variables.score_of(channel, value)
        numbered = value in (f"{score:g}", f"{score:.1f}") or value.startswith(f"{score:g} ")
        if numbered and score == int(score) and table[int(score)] == -1:
            table[int(score)] = offset
    missing = [s for s in range(int(low), int(high) + 1) if table[s] == -1]
    if missing:
        raise ValueError(f"discretizer_config.json: no possible value of {channel!r} spells scores {missing}")
    return table


def normal_scores() -> np.ndarray:
    """Normal value of every channel as a number (categoricals: their score)."""
    normals = variables.discretizer_config()["normal_values"]
    return np.array([variables.score_of(c, normals[c]) for c in variables.channels()], dtype=np.float64)


def forward_fill(values: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Fill NaN along axis 1 from the last observation; the normal value before the first.

    values: (n, T, C); normal: (C,). Returns a new float64 array of the same shape.
    """
    n, t, c = values.shape
    observed = ~np.isnan(values)
    # index 0 of `extended` is the normal value, index k + 1 the value of bin k
    idx = np.where(observed, np.arange(1, t + 1)[None, :, None], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    extended = np.concatenate([np.broadcast_to(normal, (n, 1, c)), values], axis=1).astype(np.float64)
    return np.take_along_axis(extended, idx, axis=1)


def encode(values: np.ndarray, lengths: np.ndarray, lay: Layout, normal: np.ndarray) -> np.ndarray:
    """Hourly values (n, T, 17; NaN unobserved) -> (n, T, 76) float32, before normalisation."""
    n, t, _ = values.shape
    filled = forward_fill(values, normal)
    out = np.zeros((n, t, len(lay.columns)), dtype=np.float32)
    for c in range(values.shape[2]):
        if c in lay.lookup:
            # scores are whole numbers after the range clip; rint guards against float noise
            offsets = lay.lookup[c][np.rint(filled[:, :, c]).astype(np.int64)]
            np.put_along_axis(out, (lay.begin[c] + offsets)[:, :, None], 1.0, axis=2)
        else:
            out[:, :, lay.begin[c]] = filled[:, :, c]
        out[:, :, lay.mask_begin + c] = ~np.isnan(values[:, :, c])
    out[np.arange(t)[None, :] >= lengths[:, None]] = 0.0
    return out


def _check_stays(stays_path: Path) -> None:
    if not stays_path.exists():
        raise UserError(f"features: stays file not found: {stays_path} (run the cohort stage first)")
    names = pq.read_schema(stays_path).names
    missing = [c for c in STAY_COLUMNS if c not in names]
    if missing:
        raise UserError(f"{stays_path}: missing columns {missing} (expected the cohort/stays.parquet contract)")


def _load_stays(con: duckdb.DuckDBPyConnection, stays_path: Path, hours: int) -> pa.Table:
    con.execute(variables.read_sql("hourly_stays.sql"), {"stays_path": str(stays_path), "hours": hours})
    stays = con.sql("SELECT pos, stay_id, n_bins, split FROM feat_stays ORDER BY pos").to_arrow_table()
    if stays.num_rows == 0:
        raise UserError(f"{stays_path}: no stays")
    if pc.count_distinct(stays["stay_id"]).as_py() != stays.num_rows:
        raise UserError(f"{stays_path}: stay_id is not unique")
    return stays


def _hourly_sql() -> str:
    columns = ",\n       ".join(
        f'max(b.value) FILTER (WHERE b.channel_id = {i}) AS "{name}"' for i, name in enumerate(variables.channels())
    )
    return variables.read_sql("hourly.sql").replace("{channel_columns}", columns)


def _dense(con: duckdb.DuckDBPyConnection, n: int, hours: int) -> np.ndarray:
    """feat_hourly as an (n, hours, 17) float32 array, NaN where unobserved or past the length."""
    chans = variables.channels()
    dense = np.full((n, hours, len(chans)), np.nan, dtype=np.float32)
    reader = con.sql("SELECT * FROM feat_hourly").to_arrow_reader(1_000_000)
    for batch in reader:
        pos = batch.column("pos").to_numpy()
        hour = batch.column("hour").to_numpy()
        for c, name in enumerate(chans):
            dense[pos, hour, c] = pc.fill_null(batch.column(name), np.nan).to_numpy()
    return dense


def _train_stats(dense, lengths, train, lay, normal, chunk) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and std (ddof 1) of the continuous columns over the train stays' rows < length,
    after imputation (as mimic3-benchmarks' normalizer)."""
    cont = [c for c in range(dense.shape[2]) if c not in lay.lookup]
    total = np.zeros(len(cont))
    total_sq = np.zeros(len(cont))
    count = 0
    rows = np.flatnonzero(train)
    for start in range(0, len(rows), chunk):
        sel = rows[start : start + chunk]
        filled = forward_fill(dense[sel][:, :, cont], normal[cont])
        valid = np.arange(dense.shape[1])[None, :] < lengths[sel][:, None]
        x = filled[valid]
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)
        count += x.shape[0]
    if count < 2:
        raise UserError("features: fewer than 2 train-split hours in stays.parquet; cannot normalise")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq - count * mean * mean, 0.0) / (count - 1))
    # a constant column (e.g. an unobserved variable on a tiny cohort) is only centred
    std[~(std > 1e-7)] = 1.0
    return mean, std, count


def _warn_stays_without_events(con: duckdb.DuckDBPyConnection, n_empty: int, n_stays: int) -> None:
    if n_empty:
        examples = con.execute(
            "SELECT stay_id FROM feat_stays WHERE stay_id NOT IN (SELECT stay_id FROM feat_events) "
            "ORDER BY stay_id LIMIT 5"
        ).fetchnumpy()["stay_id"]
        log.warning(
            "features: %d of %d stays have no chart or lab value of the 17 variables in their window "
            "(e.g. stay_id %s): every hour of them is imputed (counts.json: stays_without_events)",
            n_empty,
            n_stays,
            ", ".join(map(str, examples)),
        )


def build_features(
    db_path: Path, stays_path: Path, out_dir: Path, cfg: dict, threads: int | None = None, memory_mb: int | None = None
) -> None:
    """Write hourly.parquet, ehr.npy, index.parquet, normalizer.json and counts.json to out_dir.

    `threads` / `memory_mb`: the job's cores and memory (None: the machine's; see duckdb_limits)."""
    db_path, stays_path, out_dir = Path(db_path), Path(stays_path), Path(out_dir)
    if not db_path.exists():
        raise UserError(f"features: database not found: {db_path} (run the ingest stage first)")
    _check_stays(stays_path)
    settings = cfg["features"]
    hours = int(cfg["cohort"]["hours"])
    # A temporary folder (DuckDB's spill files too) whose outputs are renamed into out_dir at the end.
    outputs = ("hourly.parquet", "index.parquet", "normalizer.json", "counts.json", "ehr.npy")
    with atomic.writing_files(out_dir, outputs) as tmp:
        _build(db_path, stays_path, tmp, hours, settings, duckdb_limits.limits(threads, memory_mb))
    log.info("features written to %s", out_dir)


def _build(db_path: Path, stays_path: Path, tmp: Path, hours: int, settings: dict, limits: tuple[int, str]) -> None:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        con.execute(f"SET temp_directory = '{tmp / 'duckdb'}'")
        duckdb_limits.apply(con, *limits)
        for table in ("chartevents", "labevents"):
            if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()[0]:
                raise UserError(f"{db_path}: no table {table!r} (run the ingest stage first)")
        stays = _load_stays(con, stays_path, hours)
        n = stays.num_rows
        log.info("features: %d stays, cleaning events", n)
        counts = variables.clean_events(con)
        _warn_stays_without_events(con, counts["stays_without_events"], n)
        log.info("features: binning hourly")
        con.execute(f"CREATE OR REPLACE TEMP TABLE feat_hourly AS {_hourly_sql()}")
        con.execute(
            "COPY (SELECT * EXCLUDE (pos) FROM feat_hourly ORDER BY pos, hour) "
            f"TO '{tmp / 'hourly.parquet'}' (FORMAT parquet)"
        )
        dense = _dense(con, n, hours)
    finally:
        con.close()
    (tmp / "counts.json").write_text(json.dumps(counts, indent=2))

    lengths = stays["n_bins"].to_numpy().astype(np.int64)
    train = np.asarray(pc.equal(stays["split"], "train").fill_null(False))
    lay, normal = layout(), normal_scores()
    chunk = int(settings["chunk_stays"])
    mean, std, n_rows = _train_stats(dense, lengths, train, lay, normal, chunk)
    cont = np.array(lay.continuous)

    ehr = np.lib.format.open_memmap(tmp / "ehr.npy", mode="w+", dtype=np.float32, shape=(n, hours, len(lay.columns)))
    for start in tqdm(range(0, n, chunk), desc="features: encode", unit="chunk", disable=None):
        stop = min(start + chunk, n)
        block = encode(dense[start:stop], lengths[start:stop], lay, normal)
        valid = np.arange(hours)[None, :] < lengths[start:stop, None]
        block[:, :, cont] = np.where(valid[:, :, None], (block[:, :, cont] - mean) / std, 0.0)
        ehr[start:stop] = block
    ehr.flush()
    del ehr

    pq.write_table(
        pa.table(
            {
                "stay_id": stays["stay_id"],
                "row": pa.array(np.arange(n), pa.int64()),
                "length": pa.array(lengths, pa.int64()),
            }
        ),
        tmp / "index.parquet",
    )
    normalizer = {
        "columns": list(lay.columns),
        "continuous": [lay.columns[i] for i in lay.continuous],
        "means": mean.tolist(),
        "stds": std.tolist(),
        "split": "train",
        "n_train_stays": int(train.sum()),
        "n_train_rows": n_rows,
    }
    (tmp / "normalizer.json").write_text(json.dumps(normalizer, indent=2))
