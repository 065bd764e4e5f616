"""`tables/label_modes.{csv,md,tex}`: what the choice of `cohort.labels` does to the labels.

Written by the cohort stage, so a user sees it before training anything: for each of the 25
benchmark labels, its prevalence over every cohort stay (all splits) under each label source of
`drfuse.data.labels` (computed from the same diagnosis rows), the difference `ahrq - medfuse`,
and the prevalence that the paper's Table 3 reports (MIMIC-IV v1.0, MedFuse's labelling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from drfuse.config import data_source
from drfuse.data.labels import SOURCES
from drfuse.evaluate.render import write_table
from drfuse.evaluate.tables import paper_label, paper_table
from drfuse.phenotypes import PHENOTYPES

NAME = "label_modes"


def label_modes_table(matrices: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per label: prevalence and positive stays per source, difference, paper prevalence."""
    paper = paper_table(3).set_index("label")["prevalence"]
    table = pd.DataFrame({"label": list(PHENOTYPES)})
    for source in SOURCES:
        table[f"prevalence_{source}"] = matrices[source].mean(axis=0)
    table["difference_ahrq_minus_medfuse"] = table["prevalence_ahrq"] - table["prevalence_medfuse"]
    table["prevalence_paper"] = [paper[paper_label(name)] for name in PHENOTYPES]
    for source in SOURCES:
        table[f"positives_{source}"] = matrices[source].sum(axis=0).astype(np.int64)
    return table


def write_label_modes(out_dir: Path, table: pd.DataFrame, n_stays: int, used: str, cfg: dict) -> None:
    header = ["Label", "Prevalence ahrq", "Prevalence medfuse", "ahrq - medfuse", "Prevalence paper"]
    rows = [
        [
            paper_label(r.label),
            f"{r.prevalence_ahrq:.3f}",
            f"{r.prevalence_medfuse:.3f}",
            f"{r.difference_ahrq_minus_medfuse:+.3f}",
            f"{r.prevalence_paper:.2f}",
        ]
        for r in table.itertuples()
    ]
    notes = [
        f"Ours: {data_source(cfg)}; prevalence over all {n_stays:,} cohort stays (every split). "
        f"This run's labels: {used} (cohort.labels). ahrq: ICD-9 through the CCS definitions, ICD-10 "
        "through AHRQ's CCS for ICD-10-CM; medfuse: MedFuse's icd_9_10_definitions_2.yaml. "
        "Paper: Table 3 (MIMIC-IV v1.0, MedFuse's labelling)."
    ]
    write_table(out_dir, NAME, table, "Label prevalence by label source", header, rows, notes)
