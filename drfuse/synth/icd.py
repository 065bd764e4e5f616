"""diagnoses_icd: ICD-9 or ICD-10 codes (by admission year) that carry the planted labels.

For each benchmark phenotype the generator needs codes that the cohort stage (default labelling
`ahrq`) maps back into that group and into no other benchmark group:
- ICD-9: the group's codes in the HCUP CCS definitions that exist in d_icd_diagnoses;
- ICD-10: codes of d_icd_diagnoses that AHRQ's CCS for ICD-10-CM puts in the group.
"Unrelated" codes map only into non-benchmark CCS groups. Codes stay strings (leading zeros).
"""

from __future__ import annotations

import csv
import gzip
from functools import cache
from importlib import resources

import numpy as np
import polars as pl

from drfuse.data.labels import ahrq_table
from drfuse.phenotypes import PHENOTYPES, ccs_definitions

SYNTH_RESOURCES = resources.files("drfuse.synth") / "resources"


@cache
def _dictionary_codes() -> dict[str, frozenset[str]]:
    codes: dict[str, set[str]] = {"9": set(), "10": set()}
    with (SYNTH_RESOURCES / "d_icd_diagnoses.csv.gz").open("rb") as raw, gzip.open(raw, "rt") as fh:
        for row in csv.DictReader(fh):
            codes[row["icd_version"]].add(row["icd_code"])
    return {k: frozenset(v) for k, v in codes.items()}


@cache
def code_pools() -> dict[str, dict]:
    """{'9'|'10': {'groups': [array of codes per phenotype], 'unrelated': array}} (sorted arrays)."""
    ccs = ccs_definitions()
    group_of: dict[str, str] = {}
    for name, group in ccs.items():
        for code in group.get("codes", []):
            group_of[code] = name
    benchmark = set(PHENOTYPES)
    dictionary = _dictionary_codes()

    icd9 = {name: sorted(c for c in ccs[name]["codes"] if c in dictionary["9"]) for name in PHENOTYPES}
    unrelated9 = sorted(c for c in dictionary["9"] if c in group_of and group_of[c] not in benchmark)

    ahrq = ahrq_table()
    icd10: dict[str, list[str]] = {name: [] for name in PHENOTYPES}
    unrelated10 = []
    for code, phenotype, in_benchmark in zip(*(ahrq[c].to_pylist() for c in ("icd10_code", "phenotype", "benchmark"))):
        if code not in dictionary["10"]:
            continue
        if in_benchmark:
            icd10[phenotype].append(code)
        else:
            unrelated10.append(code)
    pools = {
        "9": {"groups": [np.array(icd9[n]) for n in PHENOTYPES], "unrelated": np.array(unrelated9)},
        "10": {"groups": [np.array(sorted(icd10[n])) for n in PHENOTYPES], "unrelated": np.array(sorted(unrelated10))},
    }
    for version, pool in pools.items():
        empty = [n for n, codes in zip(PHENOTYPES, pool["groups"]) if len(codes) == 0]
        if empty:
            raise RuntimeError(f"no ICD-{version} code for phenotypes {empty}: check the resources")
    return pools


def diagnoses(
    rng: np.random.Generator,
    subject_id: np.ndarray,
    hadm_id: np.ndarray,
    labels: np.ndarray,
    icd10: np.ndarray,
    coded: np.ndarray,
) -> pl.DataFrame:
    """One code per positive label plus 2-10 unrelated codes per coded admission, seq_num shuffled.

    `icd10` says which admissions are ICD-10 coded; admissions with `coded` False get no rows
    (MIMIC has admissions without any diagnosis).
    """
    pools = code_pools()
    adm_parts, code_parts = [], []
    for version, use in (("9", ~icd10 & coded), ("10", icd10 & coded)):
        pool = pools[version]
        for k in range(len(PHENOTYPES)):
            rows = np.flatnonzero(use & labels[:, k])
            codes = pool["groups"][k]
            adm_parts.append(rows)
            code_parts.append(codes[rng.integers(0, len(codes), len(rows))])
        rows = np.flatnonzero(use)
        n_unrelated = rng.integers(2, 11, len(rows))
        rows = np.repeat(rows, n_unrelated)
        adm_parts.append(rows)
        code_parts.append(pool["unrelated"][rng.integers(0, len(pool["unrelated"]), len(rows))])
    adm = np.concatenate(adm_parts)
    code = np.concatenate(code_parts)
    frame = pl.DataFrame({"adm": adm, "icd_code": code, "key": rng.random(len(adm))})
    # A repeated code within an admission is listed once, as in MIMIC.
    frame = frame.unique(subset=["adm", "icd_code"], keep="first", maintain_order=True)
    frame = frame.sort(["adm", "key"]).with_columns((pl.int_range(pl.len()).over("adm") + 1).alias("seq_num"))
    adm = frame["adm"].to_numpy()
    return pl.DataFrame(
        {
            "subject_id": subject_id[adm],
            "hadm_id": hadm_id[adm],
            "seq_num": frame["seq_num"],
            "icd_code": frame["icd_code"],
            "icd_version": np.where(icd10[adm], 10, 9),
        }
    )
