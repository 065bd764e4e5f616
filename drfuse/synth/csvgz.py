"""Deterministic gzip CSV writing: same rows in, same bytes out.

The gzip header carries no file name and mtime 0, so two runs with one seed give identical files.
Large tables are written chunk by chunk (`GzipCsvWriter.write`), so memory stays bounded by the
chunk size, not the table size. Compression (most of the time at scale) runs in a helper thread
while the caller builds the next chunk; zlib releases the GIL, and one chunk at most is pending.
"""

from __future__ import annotations

import gzip
import io
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl

from drfuse.synth.schema import TIME_FORMAT


class GzipCsvWriter:
    """Append polars frames with the given columns to one .csv.gz file (header written once)."""

    def __init__(self, path: Path, columns: list[str], level: int = 6):
        self.path = path
        self.columns = columns
        self.rows = 0
        self._raw = open(path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=level, mtime=0)
        self._gz.write((",".join(columns) + "\n").encode())
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future | None = None

    def write(self, frame: pl.DataFrame) -> None:
        if list(frame.columns) != self.columns:
            raise ValueError(f"{self.path.name}: columns {frame.columns} != {self.columns}")
        if frame.height == 0:
            return
        buf = io.BytesIO()
        frame.write_csv(buf, include_header=False, datetime_format=TIME_FORMAT, null_value="")
        self._wait()
        self._pending = self._pool.submit(self._gz.write, buf.getvalue())
        self.rows += frame.height

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a compression/disk error here
            self._pending = None

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()
            self._gz.close()
            self._raw.close()

    def __enter__(self) -> GzipCsvWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_table(path: Path, frame: pl.DataFrame, columns: list[str], level: int = 6) -> int:
    """Write one whole table; returns its row count."""
    with GzipCsvWriter(path, columns, level) as writer:
        writer.write(frame.select(columns))
        return writer.rows


def epoch_to_datetime(seconds) -> pl.Series:
    """int64 seconds since 1970 (nulls allowed) -> polars Datetime, for TIME_FORMAT output."""
    return pl.from_epoch(pl.Series(seconds, dtype=pl.Int64), time_unit="s")


def masked(values, valid) -> pl.Series:
    """A polars Series of `values` with nulls (empty CSV fields) where `valid` is False."""
    return pl.select(pl.when(pl.lit(pl.Series(valid))).then(pl.lit(pl.Series(values)))).to_series()


def number_strings(values, decimals: int) -> pl.Series:
    """Floats as MIMIC writes them: rounded, no trailing '.0' on whole numbers ('84', '98.7')."""
    series = pl.Series(values, dtype=pl.Float64).round(decimals)
    return series.cast(pl.String).str.replace(r"\.0$", "")
