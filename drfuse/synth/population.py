"""Patients, admissions, ICU stays and transfers, with MIMIC's mess.

Every subject has one or more admissions; most admissions reach the ICU, some have several ICU
stays, some stays move between ICU units (first_careunit != last_careunit), some are short
(< 48 h), a few patients are under 18. The transfers table follows each admission: optional ED
visit, optional ward stay, the ICU stay(s) (the first ICU transfer's id is the stay_id, as in
MIMIC), ward stays between them, and a 'discharge' row. Times are int64 seconds since 1970.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from drfuse.synth.csvgz import epoch_to_datetime, masked
from drfuse.synth.phenotype_model import sample_labels
from drfuse.synth.settings import SynthSettings

HOUR = 3600
DAY = 24 * HOUR

ICU_UNITS = np.array(
    [
        "Medical Intensive Care Unit (MICU)",
        "Surgical Intensive Care Unit (SICU)",
        "Cardiac Vascular Intensive Care Unit (CVICU)",
        "Medical/Surgical Intensive Care Unit (MICU/SICU)",
        "Trauma SICU (TSICU)",
        "Coronary Care Unit (CCU)",
        "Neuro Surgical Intensive Care Unit (Neuro SICU)",
        "Neuro Intermediate",
        "Neuro Stepdown",
    ]
)
ICU_WEIGHTS = np.array([0.22, 0.17, 0.17, 0.16, 0.12, 0.1, 0.03, 0.02, 0.01])
WARDS = np.array(
    [
        "Medicine",
        "Med/Surg",
        "Neurology",
        "Cardiac Surgery",
        "Medicine/Cardiology",
        "Transplant",
        "Hematology/Oncology",
        "Vascular",
        "Med/Surg/Trauma",
        "PACU",
    ]
)
ADMISSION_TYPES = np.array(
    [
        "EW EMER.",
        "OBSERVATION ADMIT",
        "URGENT",
        "EU OBSERVATION",
        "SURGICAL SAME DAY ADMISSION",
        "DIRECT EMER.",
        "ELECTIVE",
    ]
)
ADMISSION_TYPE_P = np.array([0.4, 0.15, 0.14, 0.1, 0.08, 0.07, 0.06])
ADMISSION_LOCATIONS = np.array(
    [
        "EMERGENCY ROOM",
        "PHYSICIAN REFERRAL",
        "TRANSFER FROM HOSPITAL",
        "CLINIC REFERRAL",
        "WALK-IN/SELF REFERRAL",
        "PROCEDURE SITE",
    ]
)
ADMISSION_LOCATION_P = np.array([0.5, 0.22, 0.16, 0.05, 0.04, 0.03])
DISCHARGE_LOCATIONS = np.array(
    [
        "HOME HEALTH CARE",
        "HOME",
        "SKILLED NURSING FACILITY",
        "REHAB",
        "CHRONIC/LONG TERM ACUTE CARE",
        "HOSPICE",
        "AGAINST ADVICE",
        "",
    ]
)
DISCHARGE_LOCATION_P = np.array([0.3, 0.28, 0.16, 0.06, 0.04, 0.02, 0.02, 0.12])
INSURANCE = np.array(["Other", "Medicare", "Medicaid"])
INSURANCE_P = np.array([0.5, 0.38, 0.12])
MARITAL = np.array(["SINGLE", "MARRIED", "WIDOWED", "DIVORCED", ""])
MARITAL_P = np.array([0.38, 0.32, 0.16, 0.1, 0.04])
RACES = np.array(
    [
        "WHITE",
        "BLACK/AFRICAN AMERICAN",
        "UNKNOWN",
        "HISPANIC/LATINO - PUERTO RICAN",
        "ASIAN - CHINESE",
        "OTHER",
        "WHITE - OTHER EUROPEAN",
        "UNABLE TO OBTAIN",
        "HISPANIC OR LATINO",
        "PATIENT DECLINED TO ANSWER",
    ]
)
RACE_P = np.array([0.62, 0.14, 0.06, 0.04, 0.03, 0.03, 0.03, 0.02, 0.02, 0.01])
YEAR_GROUPS = np.array(["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"])
# Made-up provider ids in MIMIC's format (P + 5 alphanumerics).
PROVIDERS = np.array([f"P{i:05X}" for i in range(0x1A2B3, 0x1A2B3 + 4000, 37)])


@dataclass
class Population:
    patients: pl.DataFrame
    admissions: pl.DataFrame
    transfers: pl.DataFrame
    icustays: pl.DataFrame
    # Per admission (aligned with `admissions`): labels (n, 25) bool, acuity, ICD-10 flag, coded flag.
    adm_labels: np.ndarray
    adm_acuity: np.ndarray
    adm_icd10: np.ndarray
    adm_coded: np.ndarray
    # Per stay (aligned with `icustays`): admission row, intime/outtime seconds.
    stay_adm: np.ndarray
    stay_in: np.ndarray
    stay_out: np.ndarray
    # What the death columns are written from (`death_columns`): per admission its subject's row,
    # whether it is the subject's last, its dischtime (s) and the discharge location drawn for it
    # alive; per subject the date of a death after discharge (s, -1: none).
    adm_subject: np.ndarray
    adm_last: np.ndarray
    adm_dischtime: np.ndarray
    adm_discharge_drawn: np.ndarray
    later_dod: np.ndarray


def _year_start(years: np.ndarray) -> np.ndarray:
    return (years.astype(np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)


def _unique_ids(rng: np.random.Generator, n: int, prefix: int) -> np.ndarray:
    """n distinct 8-digit ids starting with `prefix` (e.g. 1 -> 1xxxxxxx), ascending."""
    return prefix * 10_000_000 + np.sort(rng.choice(10_000_000, size=n, replace=False))


@dataclass
class _Subjects:
    """Per subject: ids and demographics (patients' columns but dod)."""

    subject_id: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    anchor_year: np.ndarray
    year_group: np.ndarray


@dataclass
class _Admissions:
    """Per admission (subjects' admissions in turn): what is drawn before its timeline is walked."""

    subject: np.ndarray  # the subject's row
    first: np.ndarray  # the subject's first admission
    admittime: np.ndarray  # seconds; `_walk_timelines` moves one that would overlap the previous
    icu: np.ndarray
    labels: np.ndarray
    acuity: np.ndarray
    n_stays: np.ndarray
    died: np.ndarray
    has_ed: np.ndarray


@dataclass
class _Timelines:
    """The walked timelines: transfer rows (adm, eventtype, careunit, intime, outtime, stay index
    or -1), ICU stays (adm, intime, outtime, first_unit, last_unit) and per admission its
    discharge and ED times (-1: no ED visit)."""

    transfers: list[tuple]
    stays: list[tuple]
    dischtime: np.ndarray
    edreg: np.ndarray
    edout: np.ndarray


def build(rng: np.random.Generator, s: SynthSettings) -> Population:
    """Draw the population. The draws from `rng` come in a fixed order (the helpers in turn), so
    a seed gives the same dataset."""
    subjects = _draw_subjects(rng, s)
    adm = _draw_admissions(rng, subjects.anchor_year)
    n_a = len(adm.subject)
    timelines = _walk_timelines(rng, adm)
    stay_id, transfer_id, hadm_id = _draw_ids(rng, timelines, n_a)

    # Where each admission would be discharged to alive; deaths after the last discharge (dod).
    discharge_drawn = DISCHARGE_LOCATIONS[rng.choice(len(DISCHARGE_LOCATIONS), n_a, p=DISCHARGE_LOCATION_P)]
    last_adm = np.r_[np.flatnonzero(adm.first)[1:] - 1, n_a - 1]
    n = s.n_subjects
    later = rng.random(n) < 0.15
    later_dod = np.where(later, timelines.dischtime[last_adm] + (rng.uniform(30, 900, n) * DAY).astype(np.int64), -1)
    adm_last = np.zeros(n_a, bool)
    adm_last[last_adm] = True
    deaths = _death_columns(adm.died, adm.subject, adm_last, timelines.dischtime, discharge_drawn, later_dod)

    patients = pl.DataFrame(
        {
            "subject_id": subjects.subject_id,
            "gender": subjects.gender,
            "anchor_age": subjects.age,
            "anchor_year": subjects.anchor_year,
            "anchor_year_group": subjects.year_group,
            "dod": deaths["dod"],
        }
    )
    admissions = _admissions_frame(rng, subjects, adm, timelines, hadm_id, deaths)
    transfers = _transfers_frame(subjects.subject_id[adm.subject], hadm_id, transfer_id, timelines.transfers)
    icustays, stay_adm, stay_in, stay_out = _icustays_frame(
        subjects.subject_id[adm.subject], hadm_id, stay_id, timelines.stays
    )
    adm_year = adm.admittime.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    return Population(
        patients=patients,
        admissions=admissions,
        transfers=transfers,
        icustays=icustays,
        adm_labels=adm.labels,
        adm_acuity=adm.acuity,
        adm_icd10=adm_year >= s.icd10_from_year,
        adm_coded=rng.random(n_a) >= 0.02,
        stay_adm=stay_adm,
        stay_in=stay_in,
        stay_out=stay_out,
        adm_subject=adm.subject,
        adm_last=adm_last,
        adm_dischtime=timelines.dischtime,
        adm_discharge_drawn=discharge_drawn,
        later_dod=later_dod,
    )


def _draw_subjects(rng: np.random.Generator, s: SynthSettings) -> _Subjects:
    n = s.n_subjects
    subject_id = _unique_ids(rng, n, 1)
    gender = np.where(rng.random(n) < 0.44, "F", "M")
    age = np.clip(np.round(rng.normal(64, 16, n)), 18, 91).astype(np.int64)
    minors = rng.random(n) < 0.015
    age[minors] = rng.integers(15, 18, minors.sum())
    anchor_year = s.first_year + rng.integers(0, s.year_span, n)
    year_group = YEAR_GROUPS[rng.integers(0, len(YEAR_GROUPS), n)]
    return _Subjects(subject_id, gender, age, anchor_year, year_group)


def _draw_admissions(rng: np.random.Generator, anchor_year: np.ndarray) -> _Admissions:
    """How many admissions each subject has, when, whether they reach the ICU (and how many stays),
    their labels and acuity, who dies and who comes through the ED."""
    n_adm = 1 + rng.poisson(0.3, len(anchor_year))
    adm_subj = np.repeat(np.arange(len(anchor_year)), n_adm)
    n_a = len(adm_subj)
    first = np.r_[True, adm_subj[1:] != adm_subj[:-1]]
    # Admissions follow each other by 1-24 months, the first within 3 years of anchor_year.
    gap = np.where(first, rng.uniform(0, 3 * 365, n_a), rng.uniform(30, 720, n_a)) * DAY
    cumulative = np.cumsum(gap)
    first_idx = np.flatnonzero(first)
    start_in_subject = cumulative - np.repeat(cumulative[first_idx] - gap[first_idx], n_adm)
    admittime = _year_start(anchor_year[adm_subj]) + start_in_subject.astype(np.int64)
    admittime -= admittime % 60
    icu = first | (rng.random(n_a) < 0.8)
    labels, acuity = sample_labels(rng, n_a)
    n_stays = np.where(icu, 1 + (rng.random(n_a) < 0.06) + (rng.random(n_a) < 0.01), 0)
    died = rng.random(n_a) < 1 / (1 + np.exp(-(-2.6 + 0.9 * acuity)))
    has_ed = rng.random(n_a) < 0.6
    return _Admissions(adm_subj, first, admittime, icu, labels, acuity, n_stays, died, has_ed)


def _walk_timelines(rng: np.random.Generator, adm: _Admissions) -> _Timelines:
    """Each admission's transfers in time order: the ED, a ward before the ICU, the ICU stay(s)
    (a move between units inside one), a ward after each (none after a death in the ICU), the
    discharge. A loop over admissions, not events."""
    n_a = len(adm.subject)
    first, admittime, icu, n_stays, died, has_ed = adm.first, adm.admittime, adm.icu, adm.n_stays, adm.died, adm.has_ed
    tr_rows: list[tuple] = []
    stays: list[tuple] = []
    dischtime = np.zeros(n_a, np.int64)
    edreg = np.full(n_a, -1, np.int64)
    edout = np.full(n_a, -1, np.int64)
    # Uniforms per admission: 0-1 ED times, 2-3 ward before the ICU, 4-6 ward after each stay,
    # 7 a move between ICU units.
    u = rng.random((n_a, 8))
    los_h = np.exp(rng.normal(np.log(46.0) + 0.25 * adm.acuity[:, None], 0.85, (n_a, 3)))
    los_h = np.clip(los_h, 3.0, 40 * 24.0)
    units = rng.choice(len(ICU_UNITS), size=(n_a, 3, 2), p=ICU_WEIGHTS)
    wards = rng.integers(0, len(WARDS), (n_a, 4))
    for a in range(n_a):
        if not first[a] and admittime[a] < dischtime[a - 1] + 7 * DAY:
            # Long stays can overrun the drawn gap: the next admission starts a week after.
            admittime[a] = dischtime[a - 1] + 7 * DAY
        t = int(admittime[a])
        event = "admit"
        if has_ed[a]:
            edreg[a] = t - int((2 + 6 * u[a, 0]) * HOUR)
            edout[a] = t + int(u[a, 1] * HOUR)
            tr_rows.append((a, "ED", "Emergency Department", int(edreg[a]), int(edout[a]), -1))
            t = int(edout[a])
        if not icu[a] or u[a, 2] < 0.4:
            ward_end = t + int((2 + 46 * u[a, 3]) * HOUR) if icu[a] else t + int((1 + 6 * u[a, 3]) * DAY)
            tr_rows.append((a, event, WARDS[wards[a, 0]], t, ward_end, -1))
            event, t = "transfer", ward_end
        for k in range(n_stays[a]):
            stay_in = t
            stay_out = stay_in + int(los_h[a, k] * HOUR)
            first_unit = last_unit = ICU_UNITS[units[a, k, 0]]
            if units[a, k, 1] != units[a, k, 0] and u[a, 7] < 0.12:
                # A move between ICU units inside one stay.
                last_unit = ICU_UNITS[units[a, k, 1]]
                mid = stay_in + int((stay_out - stay_in) * 0.5)
                tr_rows.append((a, event, first_unit, stay_in, mid, len(stays)))
                tr_rows.append((a, "transfer", last_unit, mid, stay_out, -1))
            else:
                tr_rows.append((a, event, first_unit, stay_in, stay_out, len(stays)))
            stays.append((a, stay_in, stay_out, first_unit, last_unit))
            event, t = "transfer", stay_out
            last = k == n_stays[a] - 1
            if not (last and died[a]):
                ward_end = t + int((12 + 84 * u[a, 4 + k]) * HOUR)
                tr_rows.append((a, "transfer", WARDS[wards[a, 1 + k]], t, ward_end, -1))
                t = ward_end
        dischtime[a] = t - t % 60
        tr_rows.append((a, "discharge", None, t, None, -1))
    return _Timelines(tr_rows, stays, dischtime, edreg, edout)


def _draw_ids(rng: np.random.Generator, timelines: _Timelines, n_a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """stay_id (per stay), transfer_id (per transfer row; an ICU stay's first is its stay_id) and
    hadm_id (per admission)."""
    n_s, n_t = len(timelines.stays), len(timelines.transfers)
    tr_stay = np.array([r[5] for r in timelines.transfers], np.int64)
    # Stay ids and the other transfer ids share MIMIC's 3xxxxxxx id space; shuffled so the id order
    # does not reveal the time order.
    ids = rng.permutation(_unique_ids(rng, n_s + n_t, 3))
    stay_id = ids[:n_s]
    transfer_id = ids[n_s : n_s + n_t].copy()
    is_stay = tr_stay >= 0
    transfer_id[is_stay] = stay_id[tr_stay[is_stay]]
    hadm_id = rng.permutation(_unique_ids(rng, n_a, 2))
    return stay_id, transfer_id, hadm_id


def _admissions_frame(
    rng: np.random.Generator,
    subjects: _Subjects,
    adm: _Admissions,
    timelines: _Timelines,
    hadm_id: np.ndarray,
    deaths: dict[str, pl.Series],
) -> pl.DataFrame:
    """The admissions table; draws the columns nothing else depends on (race, type, provider, ...)."""
    n, n_a, adm_subj = len(subjects.subject_id), len(adm.subject), adm.subject
    race = RACES[rng.choice(len(RACES), n, p=RACE_P)][adm_subj]
    return pl.DataFrame(
        {
            "subject_id": subjects.subject_id[adm_subj],
            "hadm_id": hadm_id,
            "admittime": epoch_to_datetime(adm.admittime),
            "dischtime": epoch_to_datetime(timelines.dischtime),
            "deathtime": deaths["deathtime"],
            "admission_type": ADMISSION_TYPES[rng.choice(len(ADMISSION_TYPES), n_a, p=ADMISSION_TYPE_P)],
            "admit_provider_id": PROVIDERS[rng.integers(0, len(PROVIDERS), n_a)],
            "admission_location": np.where(
                adm.has_ed,
                "EMERGENCY ROOM",
                ADMISSION_LOCATIONS[rng.choice(len(ADMISSION_LOCATIONS), n_a, p=ADMISSION_LOCATION_P)],
            ),
            "discharge_location": deaths["discharge_location"],
            "insurance": INSURANCE[rng.choice(len(INSURANCE), n_a, p=INSURANCE_P)],
            "language": np.where(rng.random(n_a) < 0.08, "?", "ENGLISH"),
            "marital_status": _opt_str(MARITAL[rng.choice(len(MARITAL), n, p=MARITAL_P)][adm_subj]),
            "race": race,
            "edregtime": _opt_time(timelines.edreg),
            "edouttime": _opt_time(timelines.edout),
            "hospital_expire_flag": deaths["hospital_expire_flag"],
        }
    )


def _transfers_frame(
    adm_subject_id: np.ndarray, hadm_id: np.ndarray, transfer_id: np.ndarray, rows: list[tuple]
) -> pl.DataFrame:
    tr_adm = np.array([r[0] for r in rows], np.int64)
    return pl.DataFrame(
        {
            "subject_id": adm_subject_id[tr_adm],
            "hadm_id": hadm_id[tr_adm],
            "transfer_id": transfer_id,
            "eventtype": [r[1] for r in rows],
            "careunit": [r[2] for r in rows],
            "intime": epoch_to_datetime(np.array([r[3] for r in rows], np.int64)),
            "outtime": epoch_to_datetime(pl.Series([r[4] for r in rows], dtype=pl.Int64)),
        }
    )


def _icustays_frame(
    adm_subject_id: np.ndarray, hadm_id: np.ndarray, stay_id: np.ndarray, stays: list[tuple]
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The icustays table, and per stay its admission row, intime and outtime (s)."""
    stay_adm = np.array([r[0] for r in stays], np.int64)
    stay_in = np.array([r[1] for r in stays], np.int64)
    stay_out = np.array([r[2] for r in stays], np.int64)
    icustays = pl.DataFrame(
        {
            "subject_id": adm_subject_id[stay_adm],
            "hadm_id": hadm_id[stay_adm],
            "stay_id": stay_id,
            "first_careunit": [r[3] for r in stays],
            "last_careunit": [r[4] for r in stays],
            "intime": epoch_to_datetime(stay_in),
            "outtime": epoch_to_datetime(stay_out),
            # MIMIC writes los (days) with 17 significant digits.
            "los": [f"{v:.17g}" for v in (stay_out - stay_in) / DAY],
        }
    )
    return icustays, stay_adm, stay_in, stay_out


def _opt_time(values: np.ndarray) -> pl.Series:
    return epoch_to_datetime(masked(values, values >= 0))


def _opt_str(values: np.ndarray) -> pl.Series:
    return masked(values, values != "")


def _death_columns(died, adm_subject, adm_last, dischtime, discharge_drawn, later_dod) -> dict[str, pl.Series]:
    """The columns that say who died: admissions' deathtime (at discharge), discharge_location
    ('DIED') and hospital_expire_flag, and patients' dod (the date of the death at the last
    admission, else of a death after discharge, else empty)."""
    deathtime = np.where(died, dischtime, -1)
    subject_died = np.zeros(len(later_dod), bool)
    subject_death = np.full(len(later_dod), -1, np.int64)
    subject_died[adm_subject[adm_last]] = died[adm_last]
    subject_death[adm_subject[adm_last]] = deathtime[adm_last]
    dod = np.where(subject_died, subject_death, later_dod)
    dod_date = np.where(dod >= 0, dod - dod % DAY, -1)
    return {
        "deathtime": _opt_time(deathtime),
        "discharge_location": _opt_str(np.where(died, "DIED", discharge_drawn)),
        "hospital_expire_flag": pl.Series(died.astype(np.int64)),
        "dod": _opt_time(dod_date).dt.strftime("%Y-%m-%d"),
    }


def with_deaths(pop: Population, died: np.ndarray) -> Population:
    """`pop` with another draw of who dies in hospital (`died`, per admission): the death columns
    of admissions and patients rewritten, every other column and every time unchanged (an
    admission of the original draw that ended in the ICU now ends there alive; a new death ends the
    admission where it ended, on the ward)."""
    deaths = _death_columns(
        died, pop.adm_subject, pop.adm_last, pop.adm_dischtime, pop.adm_discharge_drawn, pop.later_dod
    )
    admissions = pop.admissions.with_columns(
        deaths["deathtime"].alias("deathtime"),
        deaths["discharge_location"].alias("discharge_location"),
        deaths["hospital_expire_flag"].alias("hospital_expire_flag"),
    )
    return replace(pop, admissions=admissions, patients=pop.patients.with_columns(deaths["dod"].alias("dod")))
