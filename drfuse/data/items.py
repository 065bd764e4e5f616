"""MIMIC-IV item ids of the 17 variables: the one place that ingest and features take them from.

Derived from `resources/itemid_to_variable_map.csv` (mimic3-benchmarks' map, as used by MedFuse):
the rows with STATUS `ready` that are MetaVision chart items (item id >= 220000, `chartevents`) or
lab items (5xxxx, `labevents`), keyed by the map's LEVEL2 name, which is the channel name of
`discretizer_config.json`. Two corrections to the map:

- capillary refill has no MetaVision row in the map (MedFuse therefore always imputes it); its
  MetaVision items 223951 (Capillary Refill R) and 224308 (Capillary Refill L) are added;
- lab items measured in a fluid other than blood are dropped: 51478 is a *urine* glucose
  (urine glucose is ~0 or a dipstick 100-1000 mg/dL; it is not blood glucose), 51094 and 51491
  are *urine* pH (5-8, not the blood's 7.35-7.45), 50831 is the pH of "Other Body Fluid"
  (e.g. pleural fluid). Mixing them into the blood channels would corrupt them.

GCS total has no MetaVision item; the features stage derives it from eye + verbal + motor.
"""

from __future__ import annotations

import csv
import json
from functools import cache
from importlib import resources

RESOURCES = resources.files("drfuse.data") / "resources"

# item id -> why it is not used although the map marks it ready (see the module docstring).
EXCLUDED_ITEMS: dict[int, str] = {
    51478: "urine glucose (d_labitems fluid Urine), not blood glucose",
    51094: "urine pH (d_labitems fluid Urine), not blood pH",
    51491: "urine pH (d_labitems fluid Urine), not blood pH",
    50831: "pH of 'Other Body Fluid' (d_labitems), not blood pH",
}

# MetaVision items missing from the map: variable -> chart item ids.
EXTRA_CHART_ITEMS: dict[str, tuple[int, ...]] = {
    "Capillary refill rate": (223951, 224308),
}


@cache
def channels() -> tuple[str, ...]:
    """The 17 channel names, in the order of `discretizer_config.json`."""
    with (RESOURCES / "discretizer_config.json").open() as fh:
        return tuple(json.load(fh)["id_to_channel"])


@cache
def variable_items() -> dict[str, dict[str, tuple[int, ...]]]:
    """Channel name -> {"chart": chart item ids, "lab": lab item ids}, every channel present
    (GCS total with both empty), ids sorted."""
    items: dict[str, dict[str, set[int]]] = {name: {"chart": set(), "lab": set()} for name in channels()}
    with (RESOURCES / "itemid_to_variable_map.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["STATUS"] != "ready" or row["LEVEL2"] not in items:
                continue
            itemid = int(row["ITEMID"])
            if itemid in EXCLUDED_ITEMS:
                continue
            if itemid >= 220000 and row["LINKSTO"] == "chartevents":
                items[row["LEVEL2"]]["chart"].add(itemid)
            elif 50000 <= itemid < 60000 and row["LINKSTO"] == "labevents":
                items[row["LEVEL2"]]["lab"].add(itemid)
    for name, extra in EXTRA_CHART_ITEMS.items():
        items[name]["chart"].update(extra)
    return {name: {kind: tuple(sorted(ids)) for kind, ids in kinds.items()} for name, kinds in items.items()}


@cache
def item_to_variable() -> dict[int, str]:
    """Item id (chart or lab) -> channel name."""
    return {itemid: name for name, kinds in variable_items().items() for ids in kinds.values() for itemid in ids}


def chart_itemids() -> tuple[int, ...]:
    """All chart item ids of the 17 variables, sorted."""
    return tuple(sorted(i for kinds in variable_items().values() for i in kinds["chart"]))


def lab_itemids() -> tuple[int, ...]:
    """All lab item ids of the 17 variables, sorted."""
    return tuple(sorted(i for kinds in variable_items().values() for i in kinds["lab"]))
