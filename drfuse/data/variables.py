"""The 17 clinical variables: from raw chart and lab rows to one cleaned value per event.

The reference data (channel names and categorical values from `discretizer_config.json` and
`channel_info.json`, outlier and valid ranges from `variable_ranges.csv`, item ids from
`drfuse.data.items`) are loaded here and registered as small DuckDB tables; the cleaning itself is
`sql/variables.sql` (see there), so it runs the same on MIMIC-IV and on a hand-made test database
with the same table names.

Cleaning rules (where mimic3-benchmarks / MedFuse differ, see docs/deviations):
- units by item id, else by `valueuom`: inch -> cm, degrees F -> C, lbs -> kg; FiO2 charted as a
  percentage (> 1) -> fraction;
- ranges applied in the converted unit: outside the outlier range dropped, outside the valid
  range clipped;
- categoricals from the charted phrase (channel_info.json, plus MIMIC-IV's capillary refill
  phrases) or from the number; GCS eye 'None' is score 1 (MetaVision charts it with valuenum 1;
  channel_info.json's 0 is a MIMIC-III CareVue code and would fall outside the GCS range);
- GCS total = eye + verbal + motor charted at the same time.
"""

from __future__ import annotations

import csv
import json
import logging
from functools import cache
from importlib import resources

import duckdb

from drfuse.data import items

log = logging.getLogger(__name__)

RESOURCES = resources.files("drfuse.data") / "resources"
SQL = resources.files("drfuse.data") / "sql"

# Item ids whose charted unit is not the channel's unit (MIMIC-IV d_items).
ITEM_CONVERSIONS: dict[int, str] = {
    226707: "inch_to_cm",  # Height (Inch)
    223761: "f_to_c",  # Temperature Fahrenheit
    226531: "lbs_to_kg",  # Admission Weight (lbs.)
}
# Channels whose every item may be charted either way.
CHANNEL_CONVERSIONS: dict[str, str] = {"Fraction inspired oxygen": "percent_to_fraction"}
# valueuom (lower case) -> conversion, for items without their own rule.
UNIT_CONVERSIONS: dict[str, dict[str, str]] = {
    "Height": {"inch": "inch_to_cm", "in": "inch_to_cm", "inches": "inch_to_cm"},
    "Temperature": {"°f": "f_to_c", "deg. f": "f_to_c", "f": "f_to_c"},
    "Weight": {"lbs": "lbs_to_kg", "lb": "lbs_to_kg", "lbs.": "lbs_to_kg"},
}
# Categorical phrases that channel_info.json lacks or scores for MIMIC-III only.
EXTRA_TEXT: dict[str, dict[str, float]] = {
    "Capillary refill rate": {
        "normal <3 seconds": 0.0,
        "normal <3 secs": 0.0,
        "abnormal >3 seconds": 1.0,
        "abnormal >3 secs": 1.0,
    },
    "Glascow coma scale eye opening": {"none": 1.0},
}
GCS = {
    "eye": "Glascow coma scale eye opening",
    "verbal": "Glascow coma scale verbal response",
    "motor": "Glascow coma scale motor response",
    "total": "Glascow coma scale total",
}


def _json(name: str) -> dict:
    with (RESOURCES / name).open() as fh:
        return json.load(fh)


@cache
def discretizer_config() -> dict:
    return _json("discretizer_config.json")


@cache
def channel_info() -> dict:
    return _json("channel_info.json")


def channels() -> tuple[str, ...]:
    """The 17 channel names in discretizer order (the hourly columns, the ehr.npy blocks)."""
    return tuple(discretizer_config()["id_to_channel"])


def is_categorical(channel: str) -> bool:
    return bool(discretizer_config()["is_categorical_channel"][channel])


def text_scores(channel: str) -> dict[str, float]:
    """Lower-case charted phrase -> score of a categorical channel."""
    scores = {text.strip().lower(): float(v) for text, v in channel_info()[channel].get("values", {}).items()}
    scores.update(EXTRA_TEXT.get(channel, {}))
    return scores


def score_of(channel: str, value: str) -> float:
    """Score of a discretizer value string ('4 Spontaneously' -> 4, '0.0' -> 0), normal values included."""
    scores = text_scores(channel)
    key = value.strip().lower()
    if key in scores:
        return scores[key]
    return float(value)


@cache
def ranges() -> dict[str, tuple[float | None, float | None, float | None, float | None]]:
    """Channel -> (outlier low, valid low, valid high, outlier high) from variable_ranges.csv.

    Its LEVEL2 names are the channel names except for case ('Heart rate' vs 'Heart Rate'), so they
    are matched case-insensitively; every one of the 17 channels has a row with all four bounds.
    """
    by_lower = {c.lower(): c for c in channels()}
    out: dict[str, tuple] = {}
    with (RESOURCES / "variable_ranges.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            channel = by_lower.get(row["LEVEL2"].strip().lower())
            if channel is None:
                continue
            bounds = tuple(
                float(row[k]) if row[k].strip() else None
                for k in ("OUTLIER LOW", "VALID LOW", "VALID HIGH", "OUTLIER HIGH")
            )
            out[channel] = bounds
    missing = [c for c in channels() if c not in out]
    if missing:
        raise ValueError(f"variable_ranges.csv has no row for channels {missing}")
    return out


def _item_rows() -> list[tuple]:
    chans = channels()
    rows = []
    for channel, kinds in items.variable_items().items():
        cid = chans.index(channel)
        for source in ("chart", "lab"):
            for itemid in kinds[source]:
                conversion = ITEM_CONVERSIONS.get(itemid, CHANNEL_CONVERSIONS.get(channel, "none"))
                rows.append((itemid, source, cid, is_categorical(channel), conversion))
    return rows


def register_reference_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the temp tables feat_items, feat_units, feat_text, feat_ranges, feat_gcs."""
    chans = channels()
    tables = {
        (
            "feat_items(itemid BIGINT, source VARCHAR, channel_id INTEGER, categorical BOOLEAN, conversion VARCHAR)"
        ): _item_rows(),
        "feat_units(channel_id INTEGER, unit VARCHAR, conversion VARCHAR)": [
            (chans.index(c), unit, conv) for c, units in UNIT_CONVERSIONS.items() for unit, conv in units.items()
        ],
        "feat_text(channel_id INTEGER, text VARCHAR, score DOUBLE)": [
            (i, text, score) for i, c in enumerate(chans) if is_categorical(c) for text, score in text_scores(c).items()
        ],
        (
            "feat_ranges(channel_id INTEGER, outlier_low DOUBLE, valid_low DOUBLE, valid_high DOUBLE, "
            "outlier_high DOUBLE)"
        ): [(chans.index(c), *bounds) for c, bounds in ranges().items()],
        "feat_gcs(part VARCHAR, channel_id INTEGER)": [(part, chans.index(c)) for part, c in GCS.items()],
    }
    for schema, rows in tables.items():
        name = schema.split("(", 1)[0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {schema}")
        if rows:
            placeholders = ", ".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO {name} VALUES ({placeholders})", rows)


def read_sql(name: str) -> str:
    return (SQL / name).read_text()


def clean_events(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Run variables.sql on a connection that holds `chartevents`, `labevents` and `feat_stays`.

    Leaves the temp table `feat_events` (stay_id, channel_id, charttime, source_rank, itemid,
    derived, value) and returns the row counts of every step (also logged).
    """
    register_reference_tables(con)
    counts: dict[str, int] = {}
    for source, n_rows, unknown, not_in_cohort, outside in con.execute(read_sql("variables_counts.sql")).fetchall():
        counts[f"{source}_rows"] = n_rows
        counts[f"{source}_unknown_item"] = unknown
        counts[f"{source}_not_in_cohort"] = not_in_cohort
        counts[f"{source}_outside_window"] = outside
    con.execute(read_sql("variables.sql"))
    counts.update({step: int(n) for step, n in con.execute("SELECT step, n FROM feat_counts").fetchall()})
    log.info("event rows: %s", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return counts
