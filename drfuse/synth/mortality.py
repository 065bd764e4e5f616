"""Who dies in hospital: the planted in-hospital mortality (IHM) signal (`synth.mortality_signal`).

Off, deaths are the population's own draw (`drfuse.synth.population`: a logistic in the
admission's acuity), whose modality split nobody set. On (the default), who dies is drawn again,
from its own random stream, from evidence the generated data already show, with a known split
between the modalities: mostly the time series, with a chest X-ray component.

- EHR: the ICU stay's latent levels of systolic blood pressure (low), SpO2 (low) and respiratory
  rate (high) (`drfuse.synth.events.stay_levels`), each in units of its between-stay standard
  deviation, averaged: `ehr_z`. The levels carry the phenotypes' effects (shock lowers the
  pressure, respiratory failure the saturation), as a sick patient's would.
- CXR: whether the stay's matched image (its latest AP image in the first 48 hours, ties to the
  largest dicom_id, as the cohort stage matches it) shows a pneumothorax or a pacemaker
  (`drfuse.synth.cxr.SIGN_MODEL`; their labels have no effect on the time series, so this evidence
  is in the image alone): `cxr_sign`. A stay without such an image has none.
- Death: logit = intercept + EHR_WEIGHT * ehr_z + CXR_WEIGHT * cxr_sign, from the admission's
  last ICU stay, at the subject's last admission only (the intercept solved for DEATH_SHARE of the
  admissions with an ICU stay). An admission ends where it ended before (`population.with_deaths`).

Nothing the phenotyping task reads changes: the stays, their times, events, diagnoses and images
are byte-identical with the signal on or off; only admissions' deathtime, discharge_location and
hospital_expire_flag and patients' dod follow the new draw. The answer key gets `mortality.csv`
(the planted split) and `mortality_evidence.parquet` (per stay, its evidence and its death).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from drfuse.synth.cxr import SIGN_MODEL, _intercept
from drfuse.synth.xray import SIGNS

HOUR = 3600
# variable of drfuse.synth.events.VARIABLES -> the sign of its deviation that raises the risk
EHR_EVIDENCE = {"sbp": -1.0, "spo2": -1.0, "rr": 1.0}
CXR_EVIDENCE = ("pneumothorax", "pacemaker")
EHR_WEIGHT, CXR_WEIGHT = 1.5, 2.0  # log-odds per unit of ehr_z, and of a sign shown
DEATH_SHARE = 0.12  # of the admissions with an ICU stay (MIMIC-IV's IHM cohort: about 12 %)
WINDOW_HOURS = 48  # the generator's CXR window (drfuse.synth.cxr), the cohort's default
LABEL = "in_hospital_mortality"


def ehr_z(levels: dict[str, np.ndarray]) -> np.ndarray:
    """Per stay, the mean signed deviation of its EVIDENCE levels in between-stay SDs; `levels`:
    variable -> latent level per stay."""
    from drfuse.synth.events import VARIABLES

    parts = [sign * (levels[name] - VARIABLES[name][0]) / VARIABLES[name][1] for name, sign in EHR_EVIDENCE.items()]
    return np.mean(parts, axis=0)


def image_signs_of(rows: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Per image row of `rows`: whether it shows one of CXR_EVIDENCE, from the same draws that
    `drfuse.synth.cxr._write_image` makes for it (its own generator, one uniform per sign in
    SIGNS order, first); `labels` (n_images, 25): the labels each image is drawn from."""
    shown = np.zeros(len(rows), bool)
    for j, i in enumerate(rows):
        uniforms = np.random.default_rng([seed, 202, int(i)]).random(len(SIGNS))
        for u, name in zip(uniforms, SIGNS):
            k, sensitivity, false_rate = SIGN_MODEL[name]
            if name in CXR_EVIDENCE and u < (sensitivity if labels[i, k] else false_rate):
                shown[j] = True
    return shown


def matched_image(plan: pl.DataFrame, meta: pl.DataFrame, stay_in: np.ndarray) -> np.ndarray:
    """Per stay, the row of its matched image in `plan` / `meta` (the latest AP image in [intime,
    intime + 48 h], ties to the largest dicom_id), -1 without one."""
    frame = pl.DataFrame(
        {
            "row": np.arange(plan.height),
            "stay": plan["stay"],
            "time": plan["time"],
            "view": plan["view"],
            "dicom_id": meta["dicom_id"],
        }
    )
    start = stay_in[frame["stay"].to_numpy()]
    in_window = (
        (frame["view"] == "AP").to_numpy()
        & (frame["time"].to_numpy() >= start)
        & (frame["time"].to_numpy() <= start + WINDOW_HOURS * HOUR)
    )
    latest = (
        frame.filter(pl.Series(in_window))
        .sort(["stay", "time", "dicom_id"])
        .group_by("stay", maintain_order=True)
        .last()
    )
    out = np.full(len(stay_in), -1, np.int64)
    out[latest["stay"].to_numpy()] = latest["row"].to_numpy()
    return out


def draw(
    rng: np.random.Generator,
    stay_adm: np.ndarray,
    n_adm: int,
    adm_last: np.ndarray,
    stay_ehr_z: np.ndarray,
    stay_cxr_sign: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(died per admission, the logit per stay, the intercept): each admission's last ICU stay's
    logit decides; only a subject's last admission with an ICU stay can end in death, and the
    intercept makes DEATH_SHARE of those die on average."""
    # stays are listed by admission, in time order within one: an admission's last is the last listed
    last_stay = np.searchsorted(stay_adm, np.arange(n_adm), side="right") - 1
    can_die = (last_stay >= 0) & (stay_adm[np.maximum(last_stay, 0)] == np.arange(n_adm)) & adm_last
    evidence = EHR_WEIGHT * stay_ehr_z + CXR_WEIGHT * stay_cxr_sign
    intercept = _intercept(evidence[last_stay[can_die]], DEATH_SHARE, 1.0)
    logit = intercept + evidence
    u = rng.random(n_adm)
    died = can_die & (u < 1 / (1 + np.exp(-logit[np.maximum(last_stay, 0)])))
    return died, logit, intercept


def key_table(stay_ehr_z: np.ndarray, stay_cxr_sign: np.ndarray, has_image: np.ndarray) -> pl.DataFrame:
    """`mortality.csv`: the planted split. `ehr_share`: the EHR part's share of the variance of the
    planted log-odds over the stays with a matched image (the CXR part is zero without one)."""
    from drfuse.data.items import item_to_variable
    from drfuse.synth.events import VARIABLE_ITEMS

    channel_of = item_to_variable()
    channels = sorted({channel_of[i] for name in EHR_EVIDENCE for i in VARIABLE_ITEMS[name] if i in channel_of})
    var_ehr = float(np.var(EHR_WEIGHT * stay_ehr_z[has_image])) if has_image.any() else 0.0
    var_cxr = float(np.var(CXR_WEIGHT * stay_cxr_sign[has_image])) if has_image.any() else 0.0
    share = var_ehr / (var_ehr + var_cxr) if var_ehr + var_cxr > 0 else float("nan")
    return pl.DataFrame(
        {
            "label": [LABEL],
            "group": ["both"],
            "ehr_channels": [";".join(channels)],
            "cxr_signs": [";".join(sorted(CXR_EVIDENCE))],
            "ehr_weight": [EHR_WEIGHT],
            "cxr_weight": [CXR_WEIGHT],
            "ehr_share": [round(share, 4)],
        }
    )
