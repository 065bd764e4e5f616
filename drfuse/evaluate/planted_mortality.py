"""The planted-structure check of the in-hospital mortality task: `tables/planted_mortality.{csv,md}`.

The answer key's `mortality.csv` (`drfuse.synth.answer_key.read_mortality`) says where the planted
death signal is: `group` `both` with `ehr_share`, the time series' share of the planted log-odds
variance among the stays with an image (the built-in data: mostly the time series, with a chest
X-ray component), or `none` (nothing planted). Per prediction file (the workflow passes the
mortality runs trained and tested on the same set) and the mean over seeds: `auprc`, `auroc`,
`prevalence`, and for models with attention (the DrFuse family) `attn_ehr`, `attn_shared`,
`attn_cxr`, the mean attention weights on the task's one "disease" over the test stays with a CXR.

Criteria, per attention model, run and the seed mean (thresholds of `evaluation.planted`), when a
split was planted:
- `attention_favours_planted`: the distinct token of the modality that carries most of the signal
  (EHR when `ehr_share` > 1/2, else CXR) gets more attention than the other's, by more than
  `attention_margin`: the value is that difference;
- `prauc_ratio_ehr`: the model's AUPRC / the Transformer's (same training set, test set and seed),
  at least `min_prauc_ratio`: the fusion keeps what the time series alone gives; judged only when
  the Transformer learned (its AUPRC exceeds the prevalence by `min_reference_gain`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from drfuse import atomic
from drfuse.evaluate.bootstrap import parse_prediction_path, read_predictions
from drfuse.evaluate.metrics import ap_auroc
from drfuse.evaluate.names import display_name, ordered_models
from drfuse.evaluate.planted import DID_NOT_LEARN, MEAN, NOT_RUN, RUN_KEYS
from drfuse.evaluate.render import csv_text, markdown
from drfuse.evaluate.tables import fmt
from drfuse.synth.answer_key import read_mortality
from drfuse.tasks import MORTALITY_LABEL

log = logging.getLogger(__name__)

PARTS = ("ehr", "shared", "cxr")
ATTN = [f"attn_{part}" for part in PARTS]
REFERENCE = "transformer"
NO_DEATH = "n/a: no death in the test set"
CRITERIA = {
    "attention_favours_planted": "the planted majority modality's distinct token minus the other's, mean attention on "
    "in-hospital mortality over the test stays with a CXR",
    "prauc_ratio_ehr": "AUPRC / the Transformer's",
}


def run_table(prediction_paths: list[Path], describe: Callable[[Path], dict] = parse_prediction_path) -> pd.DataFrame:
    """One row per prediction file and per seed mean: auprc, auroc, prevalence, attention."""
    rows = []
    for path in map(Path, prediction_paths):
        _, y, p = read_predictions(path)
        frame = pd.read_parquet(path)
        with_cxr = frame["has_cxr"].astype(bool).to_numpy() if "has_cxr" in frame.columns else np.ones(len(frame), bool)
        auprc, auroc = ap_auroc(y[:, 0], p[:, 0])
        row = {
            **{k: describe(path)[k] for k in RUN_KEYS},
            "auprc": auprc,
            "auroc": auroc,
            "prevalence": float(y[:, 0].mean()),
        }
        for part in PARTS:
            column = f"attn:{MORTALITY_LABEL}:{part}"
            row[f"attn_{part}"] = (
                float(frame.loc[with_cxr, column].mean()) if column in frame.columns and with_cxr.any() else np.nan
            )
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*RUN_KEYS, "auprc", "auroc", "prevalence", *ATTN])
    keys = ["model", "train_set", "test_set"]
    mean = (
        table.groupby(keys, sort=False)[["auprc", "auroc", "prevalence", *ATTN]].mean().reset_index().assign(seed=MEAN)
    )
    out = pd.concat([table.astype({"seed": object}), mean], ignore_index=True)[table.columns]
    order = {m: i for i, m in enumerate(ordered_models(out["model"]))}
    return (
        out.assign(_m=out["model"].map(order), _last=out["seed"].eq(MEAN))
        .sort_values(["_m", "train_set", "test_set", "_last"], kind="stable")
        .drop(columns=["_m", "_last"])
        .reset_index(drop=True)
    )


def criteria(runs: pd.DataFrame, key: dict, settings: dict) -> pd.DataFrame:
    """The criteria per attention model and run (see the module docstring); none without a planted split."""
    columns = [*RUN_KEYS, "criterion", "value", "threshold", "note", "passed"]
    if key["group"] == "none" or np.isnan(key["ehr_share"]):
        return pd.DataFrame(columns=columns)
    sign = 1.0 if key["ehr_share"] > 0.5 else -1.0
    by_run = runs.set_index(RUN_KEYS)
    rows = []
    for r in runs.dropna(subset=["attn_ehr"]).itertuples(index=False):
        run = {k: getattr(r, k) for k in RUN_KEYS}
        margin = sign * (r.attn_ehr - r.attn_cxr)
        rows.append(
            {
                **run,
                "criterion": "attention_favours_planted",
                "value": margin,
                "threshold": float(settings["attention_margin"]),
                "note": None,
            }
        )
        ref_key = (REFERENCE, r.train_set, r.test_set, r.seed)
        ref = by_run.loc[ref_key] if ref_key in by_run.index else None
        if ref is None:
            ratio, note = np.nan, NOT_RUN
        elif np.isnan(ref["auprc"]) or np.isnan(r.auprc):
            ratio, note = np.nan, NO_DEATH
        elif ref["auprc"] <= ref["prevalence"] + float(settings["min_reference_gain"]):
            ratio, note = np.nan, DID_NOT_LEARN
        else:
            ratio, note = r.auprc / ref["auprc"], None
        rows.append(
            {
                **run,
                "criterion": "prauc_ratio_ehr",
                "value": ratio,
                "threshold": float(settings["min_prauc_ratio"]),
                "note": note,
            }
        )
    out = pd.DataFrame(rows, columns=columns[:-1])
    out["passed"] = pd.Series(
        [
            None if np.isnan(v) else bool(v > t if c == "attention_favours_planted" else v >= t)
            for c, v, t in zip(out["criterion"], out["value"], out["threshold"])
        ],
        dtype=object,
    )
    return out


def render(runs: pd.DataFrame, verdicts: pd.DataFrame, key: dict, answer_key: Path, settings: dict) -> str:
    split = (
        "nothing planted (deaths follow the stay's acuity)"
        if key["group"] == "none"
        else f"planted in both modalities, {key['ehr_share']:.0%} of the planted log-odds variance in the time series "
        "among the stays with an image"
    )
    rows = [
        [
            display_name(r.model),
            f"{r.train_set} -> {r.test_set}",
            str(r.seed),
            fmt(r.auprc),
            fmt(r.auroc),
            fmt(r.prevalence),
            *[fmt(getattr(r, c)) for c in ATTN],
        ]
        for r in runs.itertuples()
    ]
    sections = [
        markdown(
            "Planted structure, in-hospital mortality: each run",
            [
                "Model",
                "Trained -> tested",
                "Seed",
                "AUPRC",
                "AUROC",
                "Prevalence",
                "EHR-distinct",
                "shared",
                "CXR-distinct",
            ],
            rows,
            [
                f"The answer key's split: {split}. Attention: DrFuse's mean weights on the task's one disease over the "
                "test stays with a CXR."
            ],
        )
    ]
    if len(verdicts):
        rows = [
            [
                display_name(r.model),
                f"{r.train_set} -> {r.test_set}",
                str(r.seed),
                r.criterion,
                fmt(r.value),
                fmt(r.threshold),
                (r.note or "-") if r.passed is None else ("pass" if r.passed else "FAIL"),
            ]
            for r in verdicts.itertuples()
        ]
        notes = [
            " ".join(f"{name}: {text}." for name, text in CRITERIA.items())
            + " A ratio is judged when the Transformer's AUPRC exceeds the prevalence by "
            f"{fmt(settings['min_reference_gain'], 2)}." + f" Answer key: {answer_key}."
        ]
        sections.append(
            markdown(
                "Acceptance criteria (in-hospital mortality)",
                ["Model", "Trained -> tested", "Seed", "Criterion", "Value", "Threshold", "Result"],
                rows,
                notes,
            )
        )
    return "\n".join(sections)


def write_report(
    prediction_paths: list[Path],
    answer_key: Path,
    settings: dict,
    table_dir: Path,
    describe: Callable[[Path], dict] = parse_prediction_path,
) -> None:
    """planted_mortality.{csv,md} into `table_dir`; `answer_key`: the key's mortality.csv."""
    key = read_mortality(answer_key)
    runs = run_table(prediction_paths, describe)
    verdicts = criteria(runs, key, settings)
    csv = pd.concat([runs.assign(section="run"), verdicts.assign(section="criterion")], ignore_index=True)
    csv["model"] = csv["model"].map(display_name)
    csv = csv.reindex(
        columns=[
            "section",
            *RUN_KEYS,
            "auprc",
            "auroc",
            "prevalence",
            *ATTN,
            "criterion",
            "value",
            "threshold",
            "passed",
            "note",
        ]
    )
    atomic.write_text(Path(table_dir) / "planted_mortality.csv", csv_text(csv))
    atomic.write_text(Path(table_dir) / "planted_mortality.md", render(runs, verdicts, key, Path(answer_key), settings))
    for r in verdicts[verdicts["seed"] == MEAN].itertuples():
        log.info(
            "%s %s->%s: %s = %s (threshold %s)",
            r.model,
            r.train_set,
            r.test_set,
            r.criterion,
            fmt(r.value),
            r.threshold,
        )
