"""Phenotype labels of real demo stays, checked by hand against the CCS definitions and the GEM.

The stays below were picked from the demo and their diagnosis rows read by hand:
- stay 34324099 (ICD-9): 53240 (duodenal ulcer with hemorrhage: CCS "Gastrointestinal
  hemorrhage"), 2851 (acute posthemorrhagic anemia), 7200 (ankylosing spondylitis), 53560
  (duodenitis): none of the last three is a benchmark group.
- stay 36496303 (ICD-10): I82422, I871, I9751, Y838, Y92234. The backward GEM maps I9751
  (accidental puncture during a circulatory procedure) to 9982, in CCS "Complications of surgical
  procedures or medical care"; MedFuse's definitions do not list I9751.
- stay 32506122 (ICD-10): I214 (NSTEMI) -> GEM 41071, "Acute myocardial infarction" (also in
  MedFuse's definitions); I7102, K219, Z23, Z7902, Z7982 map to non-benchmark groups.
- stay 30665396 (ICD-10): E780 (pure hypercholesterolemia) is not in the FY2018 GEM (split into
  E7800/E7801, both -> 2720, "Disorders of lipid metabolism"); no other code of the stay is a lipid
  disorder. MedFuse's definitions do not list E780.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from drfuse.data.cohort import build_cohort
from drfuse.data.labels import GEM_FILE, RESOURCES, definitions_table, gem_table
from drfuse.phenotypes import PHENOTYPES

GI, COMPLICATIONS, AMI, LIPID = (
    "Gastrointestinal hemorrhage",
    "Complications of surgical procedures or medical care",
    "Acute myocardial infarction",
    "Disorders of lipid metabolism",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_db, tiny_cfg) -> dict:
    out = {}
    for source in ("gem", "medfuse"):
        cfg = copy.deepcopy(tiny_cfg)
        cfg["cohort"]["labels"] = source
        folder = tmp_path_factory.mktemp(source)
        build_cohort(demo_db, folder, cfg)
        out[source] = (pd.read_parquet(folder / "stays.parquet").set_index("stay_id"), json.loads((folder / "label_mapping.json").read_text()))
    return out


def _positives(stays: pd.DataFrame, stay_id: int) -> set[str]:
    row = stays.loc[stay_id, list(PHENOTYPES)]
    return {name for name, value in row.items() if value == 1}


def test_hand_checked_labels_gem(runs):
    stays, _ = runs["gem"]
    assert _positives(stays, 34324099) == {GI}
    assert _positives(stays, 36496303) == {COMPLICATIONS}
    assert _positives(stays, 32506122) == {AMI}
    assert LIPID in _positives(stays, 30665396)


def test_hand_checked_labels_medfuse(runs):
    stays, mapping = runs["medfuse"]
    assert mapping["label_source"] == "medfuse"
    assert _positives(stays, 34324099) == {GI}  # ICD-9: the same in both
    assert _positives(stays, 36496303) == set()  # I9751 missing from MedFuse's definitions
    assert _positives(stays, 32506122) == {AMI}
    assert LIPID not in _positives(stays, 30665396)
    gem_stays, _ = runs["gem"]
    # ICD-10-coded stays get fewer positives with MedFuse's definitions
    assert stays[list(PHENOTYPES)].to_numpy().sum() < gem_stays[list(PHENOTYPES)].to_numpy().sum()


def test_unmapped_icd10_rows(runs, demo_dir):
    """Counted independently: cohort ICD-10 rows whose code neither is nor prefixes a GEM code."""
    stays, mapping = runs["gem"]
    dx = pd.read_csv(demo_dir / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
    dx = dx[dx.hadm_id.astype(int).isin(stays.hadm_id)]
    with (RESOURCES / GEM_FILE).open() as fh:
        gem = pd.read_csv(fh, sep=r"\s+", header=None, names=["icd10", "icd9", "flags"], dtype=str)
    mapped = gem.loc[gem["flags"].str[1] == "0", "icd10"]
    icd10 = dx[dx.icd_version == "10"]
    unmapped = icd10[~icd10.icd_code.map(lambda c: mapped.str.startswith(c).any())]
    assert mapping["label_source"] == "gem"
    assert mapping["icd10_rows"] == len(icd10) == 945
    assert mapping["icd9_rows"] == (dx.icd_version == "9").sum()
    assert mapping["icd10_rows_unmapped"] == len(unmapped) == 4
    not_exact = icd10[~icd10.icd_code.isin(mapped)]
    assert mapping["icd10_rows_mapped_via_descendants"] == len(not_exact) - len(unmapped)
    assert mapping["icd10_share_unmapped"] == pytest.approx(4 / 945)


def test_gem_table_format():
    gem = gem_table().to_pandas()
    assert "R29700" not in set(gem.icd10_code)  # a NoDx ("no map") row
    assert "NODX" not in set(gem.icd9_code)
    assert set(gem.loc[gem.icd10_code == "A021", "icd9_code"]) == {"0031", "99591"}  # combination: both count
    assert set(gem.loc[gem.icd10_code == "I214", "icd9_code"]) == {"41071"}


def test_definitions_keep_code_strings():
    table = definitions_table("hcup_ccs_2015_definitions.yaml").to_pandas()
    septicemia = set(table.loc[table.phenotype == "Septicemia (except in labor)", "code"])
    assert {"0380", "0389", "99591"} <= septicemia  # leading zeros intact
    assert set(table.loc[table.benchmark, "phenotype"]) == set(PHENOTYPES)
