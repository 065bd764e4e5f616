"""The answer key of a dataset with planted structure: which modality carries each label's signal,
and the true (latent) label values.

`drfuse synth` writes it to `synth/answer_key/`, beside (never inside) the MIMIC-shaped trees:

- `label_groups.csv`: one row per phenotype (the 25 of `drfuse.phenotypes.PHENOTYPES`), columns
  `label`, `group` (`ehr`: only the time series carries a planted signal; `cxr`: only the chest
  X-ray; `both`; `inconsistent`: both can, but each positive shows it in one, drawn per patient
  (`synth.modal_inconsistency`); `none`: no direct signal, the label is predictable at most
  through labels it is correlated with), `ehr_channels` and `cxr_signs` (the evidence,
  `;`-separated, may be empty).
- `channels.parquet`: for the `inconsistent` labels, one row per ICU stay and label: `stay_id`
  (int64), `label`, `channel` (`ehr` or `cxr`: the modality that shows the positive's signal;
  `none` for a negative). No rows without such labels.
- `latent_labels.parquet`: one row per ICU stay, `subject_id, hadm_id, stay_id` (int64, MIMIC's
  ids, so it joins `cohort/stays.parquet`) and the generator's true labels (int8 0/1, one column
  per phenotype, named as PHENOTYPES). The cohort's labels come from the ICD codes written for
  them and differ from these where an admission was left uncoded.

- `mortality.csv`: the planted in-hospital mortality signal (`drfuse.synth.mortality`), one row:
  `label` (`in_hospital_mortality`), `group` (`both`: evidence in the time series and in the
  image; `none` with `synth.mortality_signal` off: deaths follow acuity, no split was planted),
  `ehr_channels`, `cxr_signs` (the evidence), `ehr_weight`, `cxr_weight` (log-odds per unit of
  `ehr_z` and per sign shown) and `ehr_share` (the EHR part's share of the planted log-odds
  variance over the stays with a matched image: "mostly EHR" above one half).
- `mortality_evidence.parquet`: one row per ICU stay: `stay_id` (int64), `ehr_z`, `cxr_sign`,
  `has_image` (a matched image in the first 48 h), `logit` (the planted log-odds; NaN unplanted)
  and `in_hospital_mortality` (int8: death during the stay's admission).

A held-out dataset with its own planted structure ships the same `label_groups.csv` (only `label`
and `group` are read; `read_label_groups`), `channels.parquet` beside it when a label is
`inconsistent` (`read_channels`), and `mortality.csv` for the mortality task (`label`, `group`,
`ehr_share` are read; `read_mortality`); the planted-structure check (`drfuse.evaluate.planted`)
reads the key, never this generator's tables.

The groups are derived from the generator's tables, so a changed generator changes the key: a
label is EHR-visible when a label effect of `drfuse.synth.events` (`VARIABLES`, `SIGNALS`) lands on
an item that the features stage reads into one of the model's 17 channels
(`drfuse.data.items.item_to_variable`; e.g. creatinine is generated but no channel reads it), and
CXR-visible when `drfuse.synth.cxr.SIGN_MODEL` draws a sign more often with the label than without.
The stay's acuity (which moves the heart rate and the chance of a CXR) is not a label effect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from drfuse.errors import UserError
from drfuse.phenotypes import PHENOTYPES

GROUPS = ("ehr", "cxr", "both", "inconsistent", "none")
DIR_NAME = "answer_key"
GROUPS_FILE = "label_groups.csv"
LATENT_FILE = "latent_labels.parquet"
CHANNELS_FILE = "channels.parquet"
MORTALITY_FILE = "mortality.csv"
MORTALITY_EVIDENCE_FILE = "mortality_evidence.parquet"
CHANNELS = ("ehr", "cxr", "none")


def ehr_channels() -> dict[str, set[str]]:
    """label -> the model channels on which the generator plants a direct effect of it."""
    from drfuse.data.items import item_to_variable
    from drfuse.synth.events import SIGNALS, VARIABLE_ITEMS, VARIABLES

    channel_of = item_to_variable()
    effects = [(effects, VARIABLE_ITEMS[name]) for name, (*_, effects) in VARIABLES.items()]
    effects += [(effects, items) for _, effects, items in SIGNALS.values()]
    out: dict[str, set[str]] = {label: set() for label in PHENOTYPES}
    for label_effects, items in effects:
        channels = {channel_of[i] for i in items if i in channel_of}
        for k, effect in label_effects.items():
            if effect != 0:
                out[PHENOTYPES[k]] |= channels
    return out


def cxr_signs() -> dict[str, set[str]]:
    """label -> the image signs the generator draws more often with the label than without."""
    from drfuse.synth.cxr import SIGN_MODEL

    out: dict[str, set[str]] = {label: set() for label in PHENOTYPES}
    for sign, (k, with_label, without_label) in SIGN_MODEL.items():
        if with_label != without_label:
            out[PHENOTYPES[k]].add(sign)
    return out


def label_groups(inconsistent: tuple[str, ...] = ()) -> pl.DataFrame:
    """The `label_groups.csv` table of this generator; `inconsistent`: the labels of
    `synth.modal_inconsistency` (each has a signal in both modalities)."""
    ehr, cxr = ehr_channels(), cxr_signs()
    group = {(True, False): "ehr", (False, True): "cxr", (True, True): "both", (False, False): "none"}
    return pl.DataFrame(
        {
            "label": list(PHENOTYPES),
            "group": [
                "inconsistent" if lab in inconsistent else group[(bool(ehr[lab]), bool(cxr[lab]))] for lab in PHENOTYPES
            ],
            "ehr_channels": [";".join(sorted(ehr[lab])) for lab in PHENOTYPES],
            "cxr_signs": [";".join(sorted(cxr[lab])) for lab in PHENOTYPES],
        }
    )


def write(
    out_dir: Path,
    icustays: pl.DataFrame,
    stay_labels: np.ndarray,
    stay_channel: np.ndarray,
    inconsistent: tuple[str, ...],
) -> None:
    """`label_groups.csv`, `latent_labels.parquet` and `channels.parquet` into `out_dir` (the caller
    renames the whole synthetic dataset into place, so nothing here is seen half-written).
    `stay_channel` (n_stays, 25): `drfuse.synth.channels.draw`'s channels per stay."""
    from drfuse.synth.channels import NAMES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_groups(inconsistent).write_csv(out_dir / GROUPS_FILE)
    stay_id = icustays["stay_id"].cast(pl.Int64).to_numpy()
    order = np.argsort(stay_id, kind="stable")
    names = np.array([NAMES[c] for c in sorted(NAMES)])
    pl.DataFrame(
        {
            "stay_id": np.tile(stay_id[order], len(inconsistent)),
            "label": np.repeat(list(inconsistent), len(stay_id)).astype(str),
            "channel": np.concatenate([names[stay_channel[order, PHENOTYPES.index(lab)]] for lab in inconsistent])
            if inconsistent
            else np.array([], str),
        },
        schema={"stay_id": pl.Int64, "label": pl.String, "channel": pl.String},
    ).write_parquet(out_dir / CHANNELS_FILE)
    latent = icustays.select(pl.col("subject_id", "hadm_id", "stay_id").cast(pl.Int64)).with_columns(
        pl.Series(label, stay_labels[:, k], dtype=pl.Int8) for k, label in enumerate(PHENOTYPES)
    )
    latent.sort("stay_id").write_parquet(out_dir / LATENT_FILE, statistics=False)


def write_mortality(
    out_dir: Path,
    icustays: pl.DataFrame,
    ehr_z: np.ndarray,
    cxr_sign: np.ndarray,
    has_image: np.ndarray,
    logit: np.ndarray,
    died: np.ndarray,
    planted: bool,
) -> None:
    """`mortality.csv` and `mortality_evidence.parquet` (per ICU stay, aligned with `icustays`)."""
    from drfuse.synth.mortality import LABEL, key_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = key_table(ehr_z, cxr_sign, has_image)
    if not planted:
        key = key.with_columns(
            group=pl.lit("none"),
            ehr_channels=pl.lit(""),
            cxr_signs=pl.lit(""),
            ehr_weight=pl.lit(0.0),
            cxr_weight=pl.lit(0.0),
            ehr_share=pl.lit(None, pl.Float64),
        )
    key.write_csv(out_dir / MORTALITY_FILE)
    pl.DataFrame(
        {
            "stay_id": icustays["stay_id"].cast(pl.Int64),
            "ehr_z": ehr_z,
            "cxr_sign": cxr_sign,
            "has_image": has_image,
            "logit": logit,
            LABEL: pl.Series(died.astype(np.int8), dtype=pl.Int8),
        }
    ).sort("stay_id").write_parquet(out_dir / MORTALITY_EVIDENCE_FILE, statistics=False)


def read_mortality(path: Path) -> dict:
    """The planted mortality signal of a `mortality.csv`: {label, group, ehr_share (NaN unknown)};
    one-line errors name the file and what to fix."""
    from drfuse.tasks import MORTALITY_LABEL

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"mortality answer key not found: {path} (built-in data: re-run `drfuse synth`; other data: "
            f"put its {MORTALITY_FILE} beside data.answer_key's label_groups.csv)"
        )
    try:
        table = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise UserError(f"mortality answer key {path}: not a CSV file ({exc})") from None
    missing = [c for c in ("label", "group") if c not in table.columns]
    if missing or table.height != 1 or table["label"][0] != MORTALITY_LABEL:
        raise UserError(
            f"mortality answer key {path}: expected one row with label {MORTALITY_LABEL} and a group "
            f"(columns label, group[, ehr_share]); got {table.height} row(s), columns {table.columns}"
        )
    group = table["group"][0]
    if group not in GROUPS:
        raise UserError(f"mortality answer key {path}: group must be one of {', '.join(GROUPS)}, got {group!r}")
    share = table["ehr_share"][0] if "ehr_share" in table.columns else None
    try:
        share = float(share) if share not in (None, "") else float("nan")
    except ValueError:
        raise UserError(f"mortality answer key {path}: ehr_share must be a number, got {share!r}") from None
    return {"label": MORTALITY_LABEL, "group": group, "ehr_share": share}


def read_label_groups(path: Path) -> dict[str, str]:
    """label -> group from a `label_groups.csv`; one-line errors name the file and what to fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"answer key not found: {path} (built-in data: re-run `drfuse synth`; "
            f"other data: point data.answer_key at its label_groups.csv)"
        )
    try:
        table = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise UserError(f"answer key {path}: not a CSV file ({exc})") from None
    missing_cols = [c for c in ("label", "group") if c not in table.columns]
    if missing_cols:
        raise UserError(f"answer key {path}: missing column(s) {missing_cols}; expected label,group")
    groups = dict(zip(table["label"].to_list(), table["group"].to_list()))
    if len(groups) != table.height:
        raise UserError(f"answer key {path}: a label is listed twice")
    unknown = sorted(set(groups) - set(PHENOTYPES))
    absent = [lab for lab in PHENOTYPES if lab not in groups]
    if unknown or absent:
        raise UserError(
            f"answer key {path}: labels must be the 25 phenotypes of drfuse.phenotypes; "
            f"unknown {unknown[:2]}, missing {absent[:2]}"
        )
    bad = sorted({g for g in groups.values() if g not in GROUPS})
    if bad:
        raise UserError(f"answer key {path}: group must be one of {', '.join(GROUPS)}, got {bad}")
    return {lab: groups[lab] for lab in PHENOTYPES}


def read_channels(groups_path: Path, groups: dict[str, str]) -> pl.DataFrame:
    """The `channels.parquet` beside a `label_groups.csv` whose key has `inconsistent` labels:
    `stay_id`, `label`, `channel` for exactly those labels; an empty table when there are none."""
    wanted = [lab for lab in PHENOTYPES if groups[lab] == "inconsistent"]
    empty = pl.DataFrame(schema={"stay_id": pl.Int64, "label": pl.String, "channel": pl.String})
    if not wanted:
        return empty
    path = Path(groups_path).parent / CHANNELS_FILE
    if not path.is_file():
        raise UserError(
            f"answer key {groups_path} has inconsistent labels but no {path}: it must say, per stay and "
            "label, which modality shows the signal (drfuse.synth.answer_key)"
        )
    try:
        table = pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise UserError(f"answer key {path}: not a Parquet file ({exc})") from None
    missing = [c for c in ("stay_id", "label", "channel") if c not in table.columns]
    if missing:
        raise UserError(f"answer key {path}: missing column(s) {missing}; expected stay_id, label, channel")
    table = table.select(
        pl.col("stay_id").cast(pl.Int64), pl.col("label").cast(pl.String), pl.col("channel").cast(pl.String)
    )
    bad = sorted(set(table["channel"].unique().to_list()) - set(CHANNELS))
    if bad:
        raise UserError(f"answer key {path}: channel must be one of {', '.join(CHANNELS)}, got {bad[:3]}")
    absent = [lab for lab in wanted if lab not in set(table["label"].to_list())]
    if absent:
        raise UserError(f"answer key {path}: no rows for the inconsistent label(s) {absent[:2]}")
    return table.filter(pl.col("label").is_in(wanted))
