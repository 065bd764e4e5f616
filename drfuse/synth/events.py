"""chartevents and labevents for a chunk of ICU stays, fully vectorised with numpy.

Each stay gets a latent level per variable: a normal value, shifted by its admission's phenotypes
(sepsis/shock: heart rate up, blood pressure down, fever; respiratory failure: SpO2 down, FiO2 and
respiratory rate up, low pH; diabetes: glucose), plus a per-stay offset and trend; each event adds
measurement noise. Phenotypes also change what is charted and how (`SIGNALS`: acute cerebrovascular
disease lowers the GCS, shock slows capillary refill, respiratory failure brings oxygen and
ventilation, diabetics get more finger sticks, ...). Every label effect is in one of the two tables
`VARIABLES` and `SIGNALS`, each with the item ids that show it (`VARIABLE_ITEMS`), so the answer
key (`drfuse.synth.answer_key`) derives from them which labels the model's inputs can see. Items,
units and text values are MIMIC-IV's (temperature in F or C, heights in inches and cm, weights in
kg and lbs, FiO2 in percent, GCS as phrases with the score in valuenum, capillary refill as text).
Realistic mess: outliers (heart rate 0 or 1000, temperatures in the wrong unit, FiO2 as a
fraction), exact duplicate rows, and events of unrelated items.

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from drfuse.synth.csvgz import epoch_to_datetime, masked, number_strings
from drfuse.synth.phenotype_model import label_index
from drfuse.synth.schema import CHARTEVENTS, LABEVENTS

HOUR = 3600

SEPSIS = label_index("Septicemia (except in labor)")
SHOCK = label_index("Shock")
RESP_FAIL = label_index("Respiratory failure; insufficiency; arrest (adult)")
PNEUMONIA = label_index("Pneumonia (except that caused by tuberculosis or sexually transmitted disease)")
COPD = label_index("Chronic obstructive pulmonary disease and bronchiectasis")
DM_COMP = label_index("Diabetes mellitus with complications")
DM = label_index("Diabetes mellitus without complication")
STROKE = label_index("Acute cerebrovascular disease")
RENAL = label_index("Acute and unspecified renal failure")
CKD = label_index("Chronic kidney disease")
DYSRHYTHMIA = label_index("Cardiac dysrhythmias")
CHF = label_index("Congestive heart failure; nonhypertensive")
HTN = label_index("Essential hypertension")
HTN_COMP = label_index("Hypertension with complications and secondary hypertension")

# variable -> normal level, between-stay sd, within-stay sd, clip range, label effects
VARIABLES = {
    "hr": (84.0, 10.0, 5.0, (30, 200), {SEPSIS: 15, SHOCK: 10, DYSRHYTHMIA: 8}),
    "sbp": (121.0, 13.0, 9.0, (50, 230), {SHOCK: -25, SEPSIS: -10, HTN: 6, HTN_COMP: 8}),
    "dbp": (63.0, 8.0, 6.0, (20, 140), {SHOCK: -12, SEPSIS: -5}),
    "rr": (18.0, 2.5, 2.5, (6, 50), {RESP_FAIL: 6, PNEUMONIA: 3, SEPSIS: 2}),
    "spo2": (97.3, 1.2, 1.2, (70, 100), {RESP_FAIL: -4, PNEUMONIA: -1.5, COPD: -2}),
    "temp": (36.8, 0.3, 0.3, (33, 41.5), {SEPSIS: 1.1, PNEUMONIA: 0.5}),
    "glucose": (125.0, 18.0, 22.0, (40, 600), {DM_COMP: 100, DM: 30}),
    "ph": (7.39, 0.03, 0.03, (6.9, 7.65), {RESP_FAIL: -0.06, RENAL: -0.05, SEPSIS: -0.03, SHOCK: -0.04}),
    "fio2": (32.0, 7.0, 6.0, (21, 100), {RESP_FAIL: 25}),
    "weight": (80.0, 17.0, 0.8, (35, 250), {CHF: 8}),
    "creat": (1.0, 0.3, 0.15, (0.3, 12), {RENAL: 1.5, CKD: 1.2}),
}

# variable -> the chart and lab item ids its values are written as (mean pressures are computed
# from sbp and dbp; the heart rhythm text follows the heart rate). tests/test_synth.py checks that
# every item of the generated data that the features stage reads is listed here or in SIGNALS.
VARIABLE_ITEMS = {
    "hr": (220045, 220048),
    "sbp": (220050, 220052, 220179, 220181, 224167, 225309, 225312, 227243),
    "dbp": (220051, 220052, 220180, 220181, 224643, 225310, 225312),
    "rr": (220210, 224422, 224689, 224690),
    "spo2": (220227, 220277, 50817),
    "temp": (223761, 223762),
    "glucose": (220621, 225664, 226537, 50809, 50931),
    "ph": (220274, 223830, 50820),
    "fio2": (223835,),
    "weight": (224639, 226512, 226531),
    "creat": (50912,),
}
assert set(VARIABLE_ITEMS) == set(VARIABLES)

# The other label effects: signal -> (base, label effects, item ids that show it). For a chance
# (per stay or per charted value) base + the effects of the labels set is the chance; `gcs_depth`
# is a shift of the latent depth of unconsciousness (0 = awake), base + effects likewise.
SIGNALS = {
    "oxygen": (0.25, {RESP_FAIL: 0.75}, (223835,)),  # FiO2 charted
    "ventilated": (0.2, {RESP_FAIL: 0.4}, (220339, 220739, 223900, 223901, 224689, 224690)),  # among stays on oxygen
    "gcs_depth": (0.0, {STROKE: -2.2, SHOCK: -0.3}, (220739, 223900, 223901)),
    "cap_refill_abnormal": (0.05, {SHOCK: 0.35, SEPSIS: 0.1}, (223951, 224308)),  # per charted value
    "glucose_checks": (0.4, {DM: 0.6, DM_COMP: 0.6}, (225664,)),  # per 6-hourly finger stick
    "atrial_fibrillation": (0.0, {DYSRHYTHMIA: 0.5}, (220048,)),  # per charted rhythm
    "blood_gas": (0.3, {RESP_FAIL: 0.5}, (50809, 50817, 50820)),  # per blood draw
}


def signal(name: str, labels: np.ndarray) -> np.ndarray:
    """base + the effects of the labels set, per row of `labels` (bool (m, 25))."""
    base, effects, _ = SIGNALS[name]
    value = np.full(len(labels), base)
    for k, effect in effects.items():
        value = value + effect * labels[:, k]
    return value


# Text values: index into TEXTS (value column), score in the matching valuenum.
EYE = ["None", "To Pain", "To Speech", "Spontaneously"]  # 1..4
VERBAL = ["No Response", "Incomprehensible sounds", "Inappropriate Words", "Confused", "Oriented"]  # 1..5
MOTOR = [
    "No response",
    "Abnormal extension",
    "Abnormal Flexion",
    "Flex-withdraws",
    "Localizes Pain",
    "Obeys Commands",
]  # 1..6
CAP_REFILL = ["Normal <3 Seconds", "Abnormal >3 Seconds"]
RHYTHM = ["SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "SB (Sinus Bradycardia)", "AF (Atrial Fibrillation)"]
URINE_GLUCOSE = ["NEG", "100"]
TEXTS = EYE + VERBAL + ["No Response-ETT"] + MOTOR + CAP_REFILL + RHYTHM + URINE_GLUCOSE
T_EYE, T_VERBAL, T_ETT = 0, len(EYE), len(EYE) + len(VERBAL)
T_MOTOR = T_ETT + 1
T_CAP = T_MOTOR + len(MOTOR)
T_RHYTHM = T_CAP + len(CAP_REFILL)
T_URINE = T_RHYTHM + len(RHYTHM)

# Units as MIMIC-IV v2.2 writes them in chartevents.valueuom (empty for FiO2, lbs, GCS, ...).
UNITS = ["", "bpm", "mmHg", "insp/min", "%", "°F", "°C", "mg/dL", "units", "kg", "Inch", "cm", "cmH2O", "mEq/L", "g/dL"]
U = {name: i for i, name in enumerate(UNITS)}


@dataclass
class StayChunk:
    """The stays of one chunk: ids, times (s), admission labels (bool (n, 25)), acuity, sex."""

    subject_id: np.ndarray
    hadm_id: np.ndarray
    stay_id: np.ndarray
    intime: np.ndarray
    outtime: np.ndarray
    labels: np.ndarray
    acuity: np.ndarray
    female: np.ndarray


class _Rows:
    """Collects event parts (row arrays) and concatenates them once."""

    def __init__(self):
        self.parts: list[dict] = []

    def add(self, idx, t, item, num=None, decimals=0, text=None, uom=""):
        n = len(idx)
        if n == 0:
            return
        num = np.full(n, np.nan) if num is None else np.round(np.asarray(num, float), decimals)
        text = np.full(n, -1, np.int16) if text is None else np.asarray(text, np.int16)
        self.parts.append(
            {
                "idx": idx,
                "t": t,
                "item": np.broadcast_to(np.asarray(item, np.int64), n),
                "num": num,
                "text": text,
                "uom": np.broadcast_to(np.asarray(U[uom] if isinstance(uom, str) else uom, np.int16), n),
            }
        )

    def concat(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[k] for p in self.parts]) for k in ("idx", "t", "item", "num", "text", "uom")}


def _schedule(rng, start, end, every_h, p=1.0, jitter_min=0):
    """Times from each stay's start every `every_h` hours while < end: (stay index, seconds)."""
    step = int(every_h * HOUR)
    counts = np.maximum((end - start) // step + 1, 0)
    idx = np.repeat(np.arange(len(start)), counts)
    k = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)
    t = start[idx] + k * step
    if jitter_min:
        t = t + rng.integers(-jitter_min, jitter_min + 1, len(t)) * 60
    keep = (t >= start[idx]) & (t < end[idx])
    if p < 1.0:
        keep &= rng.random(len(t)) < p
    return idx[keep], t[keep]


def stay_levels(rng, stays: StayChunk) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per stay and variable: (mean level, trend per 48 h)."""
    n = len(stays.stay_id)
    out = {}
    for name, (normal, between, _, _, effects) in VARIABLES.items():
        level = normal + between * rng.standard_normal(n)
        for k, shift in effects.items():
            level = level + shift * stays.labels[:, k] * rng.uniform(0.6, 1.4, n)
        out[name] = (level, between * 0.5 * rng.standard_normal(n))
    out["hr"] = (out["hr"][0] + 3 * stays.acuity, out["hr"][1])
    return out


def _values(rng, name, levels, idx, t, stays, sd_scale=1.0):
    level, trend = levels[name]
    _, _, within, (lo, hi), _ = VARIABLES[name]
    hours = (t - stays.intime[idx]) / HOUR
    v = level[idx] + trend[idx] * hours / 48 + within * sd_scale * rng.standard_normal(len(idx))
    return np.clip(v, lo, hi)


@dataclass
class _ChartPlan:
    """Per stay: when charting starts and ends (s), and which devices it has."""

    start: np.ndarray
    end: np.ndarray
    arterial: np.ndarray  # an arterial line
    oxygen: np.ndarray  # oxygen therapy
    ventilated: np.ndarray


def chart_rows(rng, stays: StayChunk, levels) -> dict[str, np.ndarray]:
    """The chartevents rows of a chunk of stays (idx, t, item, num, text, uom), unsorted."""
    n = len(stays.stay_id)
    rows = _Rows()
    start = stays.intime - stays.intime % 60 + 60 * rng.integers(1, 16, n)
    arterial = rng.random(n) < 0.25 + 0.3 * (stays.acuity > 0.5)
    oxygen = rng.random(n) < signal("oxygen", stays.labels)
    ventilated = oxygen & (rng.random(n) < signal("ventilated", stays.labels))
    plan = _ChartPlan(start, stays.outtime, arterial, oxygen, ventilated)
    # In this order: each draws from rng in turn, so a seed gives the same rows.
    for chart in (
        _vital_signs,
        _blood_pressures,
        _respiratory_support,
        _temperatures,
        _gcs,
        _capillary_refill,
        _glucose,
        _ph,
        _height_weight,
        _unrelated_items,
    ):
        chart(rng, rows, stays, levels, plan)
    return rows.concat()


def _vital_signs(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Heart rate, respiratory rate, SpO2: hourly."""
    idx, t = _schedule(rng, plan.start, plan.end, 1.0, p=0.97)
    hr = _values(rng, "hr", levels, idx, t, stays)
    rows.add(idx, t, 220045, hr, 0, uom="bpm")
    idx_r, t_r = idx, t + 60 * rng.integers(0, 3, len(t))
    rows.add(idx_r, t_r, 220210, _values(rng, "rr", levels, idx_r, t_r, stays), 0, uom="insp/min")
    rows.add(idx, t, 220277, _values(rng, "spo2", levels, idx, t, stays), 0, uom="%")


def _blood_pressures(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Blood pressure triples: arterial line hourly (+ cuff every 4 h) or cuff hourly; rare manual
    pressures (left arm systolic/diastolic, right arm systolic)."""
    start, end, arterial = plan.start, plan.end, plan.arterial
    art_items = np.where(rng.random(len(start)) < 0.1, 1, 0)  # 1: the 'ART BP' items
    for every, use, items in (
        (1.0, arterial, None),
        (4.0, arterial, (220179, 220180, 220181)),
        (1.0, ~arterial, (220179, 220180, 220181)),
    ):
        idx, t = _schedule(rng, np.where(use, start, end), end, every, p=0.95)
        sbp = _values(rng, "sbp", levels, idx, t, stays)
        dbp = np.minimum(_values(rng, "dbp", levels, idx, t, stays), sbp - 10)
        mbp = (sbp + 2 * dbp) / 3 + rng.normal(0, 2, len(idx))
        if items is None:
            alt = art_items[idx] == 1
            items = (np.where(alt, 225309, 220050), np.where(alt, 225310, 220051), np.where(alt, 225312, 220052))
        rows.add(idx, t, items[0], sbp, 0, uom="mmHg")
        rows.add(idx, t, items[1], dbp, 0, uom="mmHg")
        rows.add(idx, t, items[2], mbp, 0, uom="mmHg")
    idx, t = _schedule(rng, start, end, 24.0, p=0.1, jitter_min=30)
    rows.add(idx, t, 224167, _values(rng, "sbp", levels, idx, t, stays), 0, uom="mmHg")
    rows.add(idx, t, 224643, _values(rng, "dbp", levels, idx, t, stays), 0, uom="mmHg")
    rows.add(idx, t, 227243, _values(rng, "sbp", levels, idx, t, stays), 0, uom="mmHg")


def _respiratory_support(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Ventilator respiratory rates, FiO2 (percent) under oxygen, arterial SpO2."""
    start, end = plan.start, plan.end
    idx, t = _schedule(rng, np.where(plan.ventilated, start, end), end, 2.0, p=0.9)
    rows.add(idx, t, 224690, _values(rng, "rr", levels, idx, t, stays), 0, uom="insp/min")
    rows.add(idx, t, 224689, np.maximum(_values(rng, "rr", levels, idx, t, stays) - 4, 0), 0, uom="insp/min")
    idx, t = _schedule(rng, start, end, 24.0, p=0.05, jitter_min=60)
    rows.add(idx, t, 224422, _values(rng, "rr", levels, idx, t, stays), 0, uom="bpm")
    idx, t = _schedule(rng, np.where(plan.oxygen, start, end), end, 4.0, p=0.9, jitter_min=20)
    fio2 = _values(rng, "fio2", levels, idx, t, stays)
    fio2 = np.where(fio2 < 24, 21, np.round(fio2 / 5) * 5)
    as_fraction = rng.random(len(idx)) < 0.02  # charted as a fraction: a unit mix-up MIMIC has
    rows.add(idx[~as_fraction], t[~as_fraction], 223835, fio2[~as_fraction], 0)
    rows.add(idx[as_fraction], t[as_fraction], 223835, fio2[as_fraction] / 100, 2)
    idx, t = _schedule(rng, np.where(plan.arterial, start, end), end, 12.0, p=0.8, jitter_min=60)
    rows.add(idx, t, 220227, _values(rng, "spo2", levels, idx, t, stays, 1.5), 0, uom="%")


def _temperatures(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Temperature every 4 h, in F for most stays, in C for the rest."""
    idx, t = _schedule(rng, plan.start, plan.end, 4.0, p=0.9, jitter_min=20)
    temp_c = _values(rng, "temp", levels, idx, t, stays)
    fahrenheit = (stays.stay_id[idx] % 5) != 0
    wrong_unit = rng.random(len(idx)) < 0.004
    value = np.where(fahrenheit != wrong_unit, temp_c * 9 / 5 + 32, temp_c)
    rows.add(idx, t, np.where(fahrenheit, 223761, 223762), value, 1, uom=np.where(fahrenheit, U["°F"], U["°C"]))


def _gcs(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """GCS eye/verbal/motor every 4 h as MIMIC-IV's phrases; stroke, shock and sedation lower it."""
    idx, t = _schedule(rng, plan.start, plan.end, 4.0, p=0.9, jitter_min=15)
    depth = signal("gcs_depth", stays.labels) - 0.6 * plan.ventilated + 0.4 * rng.standard_normal(len(plan.start))
    g = np.minimum(depth[idx] + 0.5 * rng.standard_normal(len(idx)) + 0.3, 0.0)
    eye = np.clip(np.round(4 + 1.0 * g), 1, 4).astype(int)
    verbal = np.clip(np.round(5 + 1.5 * g), 1, 5).astype(int)
    motor = np.clip(np.round(6 + 1.3 * g), 1, 6).astype(int)
    ett = plan.ventilated[idx] & (rng.random(len(idx)) < 0.8)
    rows.add(idx, t, 220739, eye, text=T_EYE + eye - 1)
    rows.add(idx, t, 223900, np.where(ett, 1, verbal), text=np.where(ett, T_ETT, T_VERBAL + verbal - 1))
    rows.add(idx, t, 223901, motor, text=T_MOTOR + motor - 1)


def _capillary_refill(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Capillary refill (right and left) as text, no valuenum."""
    charted = rng.random(len(plan.start)) < 0.6
    idx, t = _schedule(rng, np.where(charted, plan.start, plan.end), plan.end, 8.0, p=0.9, jitter_min=30)
    abnormal = rng.random(len(idx)) < signal("cap_refill_abnormal", stays.labels[idx])
    rows.add(idx, t, 223951, text=T_CAP + abnormal)
    rows.add(idx, t, 224308, text=T_CAP + (abnormal ^ (rng.random(len(idx)) < 0.05)))


def _glucose(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Glucose: finger sticks (more often in diabetics), serum, whole blood."""
    start, end = plan.start, plan.end
    idx, t = _schedule(rng, start, end, 6.0, jitter_min=40)
    keep = rng.random(len(idx)) < signal("glucose_checks", stays.labels[idx])
    idx, t = idx[keep], t[keep]
    rows.add(idx, t, 225664, _values(rng, "glucose", levels, idx, t, stays), 0)
    idx, t = _schedule(rng, start + 2 * HOUR, end, 24.0, p=0.8, jitter_min=60)
    rows.add(idx, t, 220621, _values(rng, "glucose", levels, idx, t, stays), 0, uom="mg/dL")
    idx, t = _schedule(rng, np.where(plan.arterial, start, end), end, 12.0, p=0.3, jitter_min=60)
    rows.add(idx, t, 226537, _values(rng, "glucose", levels, idx, t, stays), 0, uom="mg/dL")


def _ph(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """pH: arterial (blood gas on arterial lines) and venous."""
    idx, t = _schedule(rng, np.where(plan.arterial, plan.start, plan.end), plan.end, 12.0, p=0.8, jitter_min=60)
    rows.add(idx, t, 223830, _values(rng, "ph", levels, idx, t, stays), 2, uom="units")
    idx, t = _schedule(rng, plan.start, plan.end, 24.0, p=0.3, jitter_min=60)
    rows.add(idx, t, 220274, _values(rng, "ph", levels, idx, t, stays) - 0.03, 2, uom="units")


def _height_weight(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Height (inches and cm, charted together) and weights (kg, daily kg, lbs) near admission."""
    start, end, n = plan.start, plan.end, len(plan.start)
    height_cm = np.where(stays.female, 162.0, 176.0) + 7 * rng.standard_normal(n)
    first = np.minimum(start + HOUR, end - 60)
    has_height = rng.random(n) < 0.6
    rows.add(np.flatnonzero(has_height), first[has_height], 226707, height_cm[has_height] / 2.54, 0, uom="Inch")
    rows.add(np.flatnonzero(has_height), first[has_height], 226730, height_cm[has_height], 0, uom="cm")
    weight = levels["weight"][0]
    has_w = rng.random(n) < 0.9
    rows.add(np.flatnonzero(has_w), first[has_w], 226512, weight[has_w], 1, uom="kg")
    has_lbs = rng.random(n) < 0.35
    rows.add(np.flatnonzero(has_lbs), first[has_lbs], 226531, weight[has_lbs] * 2.20462, 1)
    idx, t = _schedule(rng, start + 20 * HOUR, end, 24.0, p=0.7, jitter_min=60)
    rows.add(idx, t, 224639, _values(rng, "weight", levels, idx, t, stays), 1, uom="kg")


def _unrelated_items(rng, rows: _Rows, stays: StayChunk, levels, plan: _ChartPlan) -> None:
    """Unrelated items: heart rhythm (text), heart-rate alarm, PEEP, CVP."""
    start, end = plan.start, plan.end
    idx, t = _schedule(rng, start, end, 4.0, p=0.9, jitter_min=10)
    af = rng.random(len(idx)) < signal("atrial_fibrillation", stays.labels[idx])
    rhythm = np.where(af, 3, np.where(levels["hr"][0][idx] > 100, 1, 0))
    rows.add(idx, t, 220048, text=T_RHYTHM + rhythm)
    idx, t = _schedule(rng, start, end, 12.0, p=0.8, jitter_min=10)
    rows.add(idx, t, 220046, np.full(len(idx), 120.0), 0, uom="bpm")
    idx, t = _schedule(rng, np.where(plan.ventilated, start, end), end, 4.0, p=0.9, jitter_min=10)
    rows.add(idx, t, 220339, np.round(rng.uniform(5, 12, len(idx))), 0, uom="cmH2O")
    idx, t = _schedule(rng, np.where(plan.arterial, start, end), end, 2.0, p=0.7, jitter_min=5)
    rows.add(idx, t, 220074, np.clip(rng.normal(9, 4, len(idx)), -2, 30), 0, uom="mmHg")


def _add_outliers(rng, rows: dict[str, np.ndarray]) -> np.ndarray:
    """Heart rates of 0 or 1000 and SpO2 of 0 (warning = 1 on them), as MIMIC has."""
    warning = np.zeros(len(rows["idx"]), np.int8)
    for item, values in ((220045, (0.0, 1000.0)), (220277, (0.0,))):
        hit = (rows["item"] == item) & (rng.random(len(warning)) < 0.0005)
        rows["num"][hit] = rng.choice(values, hit.sum())
        warning[hit] = 1
    return warning


def chartevents_frame(rng, stays: StayChunk, levels, caregivers: np.ndarray) -> pl.DataFrame:
    rows = chart_rows(rng, stays, levels)
    warning = _add_outliers(rng, rows)
    n_rows = len(warning)
    caregiver = caregivers[rng.integers(0, len(caregivers), n_rows)]
    store_delay = 60 * rng.integers(0, 45, n_rows)
    order = np.lexsort((rows["item"], rows["t"], rows["idx"]))
    # A few exact duplicate rows, as in MIMIC.
    order = np.repeat(order, 1 + (rng.random(len(order)) < 0.002))
    idx, t = rows["idx"][order], rows["t"][order]
    num, text, uom = rows["num"][order], rows["text"][order], rows["uom"][order]
    num_str = number_strings(num, 2)
    has_text = text >= 0
    value = pl.Series(TEXTS).gather(pl.Series(np.maximum(text, 0), dtype=pl.UInt32))
    value = masked(value, has_text).fill_null(num_str)
    valuenum = masked(num_str, ~np.isnan(num))
    return pl.DataFrame(
        {
            "subject_id": stays.subject_id[idx],
            "hadm_id": stays.hadm_id[idx],
            "stay_id": stays.stay_id[idx],
            "caregiver_id": caregiver[order],
            "charttime": epoch_to_datetime(t),
            "storetime": epoch_to_datetime(t + store_delay[order]),
            "itemid": rows["item"][order],
            "value": value,
            "valuenum": valuenum,
            "valueuom": masked(pl.Series(UNITS).gather(pl.Series(uom, dtype=pl.UInt32)), uom > 0),
            "warning": warning[order],
        }
    ).select(CHARTEVENTS)


# lab item -> (unit, ref low, ref high, decimals)
LAB_ITEMS = {
    50931: ("mg/dL", 70, 100, 0),
    50809: ("mg/dL", 70, 105, 0),
    50820: ("units", 7.35, 7.45, 2),
    50817: ("%", None, None, 0),
    50831: ("units", None, None, 2),
    51491: ("units", 5, 8, 1),
    51478: ("mg/dL", 0, 0, 0),
    50971: ("mEq/L", 3.3, 5.1, 1),
    50983: ("mEq/L", 135, 147, 0),
    50912: ("mg/dL", 0.5, 1.2, 1),
    51221: ("%", 40, 51, 1),
    51222: ("g/dL", 13.7, 17.5, 1),
}


class _Panels:
    """Collects lab panels: each drawn panel one specimen, its items' rows as parts
    (idx, t, specimen, item, num, text)."""

    def __init__(self, first_specimen_id: int):
        self.next_specimen = first_specimen_id
        self.parts: list[tuple] = []

    def add(self, idx, t, items_values):
        """One specimen per (idx, t); items_values: (item, num, text or None, keep or None)."""
        spec = self.next_specimen + np.arange(len(idx))
        self.next_specimen += len(idx)
        for item, num, text, keep in items_values:
            keep = np.ones(len(idx), bool) if keep is None else keep
            self.parts.append((idx[keep], t[keep], spec[keep], item, num[keep], None if text is None else text[keep]))


def labevents_frame(rng, stays: StayChunk, levels, first_event_id: int, first_specimen_id: int) -> pl.DataFrame:
    """Blood draws every ~8 h from 12 h before ICU admission to discharge: chemistry (glucose and
    unrelated analytes), blood gases (pH, O2 saturation, glucose), sometimes urine (pH, glucose)."""
    panels = _Panels(first_specimen_id)
    idx, t = _schedule(rng, stays.intime - 12 * HOUR, stays.outtime, 8.0, p=0.9, jitter_min=90)
    t = t - t % 60
    # In this order: each draws from rng in turn, so a seed gives the same rows.
    _chemistry(rng, panels, stays, levels, idx, t)
    _blood_gases(rng, panels, stays, levels, idx, t)
    _urine(rng, panels, idx, t)
    return _labevents_table(rng, stays, panels.parts, first_event_id)


def _chemistry(rng, panels: _Panels, stays: StayChunk, levels, idx, t) -> None:
    """At every draw: glucose, potassium, sodium, creatinine; hematocrit and hemoglobin mostly."""
    m = len(idx)
    creat_level = levels["creat"][0][idx] * np.exp(0.1 * rng.standard_normal(m))
    panels.add(
        idx,
        t,
        [
            (50931, _values(rng, "glucose", levels, idx, t, stays), None, None),
            (50971, rng.normal(4.2, 0.5, m), None, None),
            (50983, rng.normal(139, 3.5, m), None, None),
            (50912, np.clip(creat_level, 0.2, 15), None, None),
            (51221, rng.normal(31, 5, m), None, rng.random(m) < 0.7),
            (51222, rng.normal(10.3, 1.7, m), None, rng.random(m) < 0.7),
        ],
    )


def _blood_gases(rng, panels: _Panels, stays: StayChunk, levels, idx, t) -> None:
    """At some draws (more with respiratory failure) a blood gas: pH, O2 saturation, glucose; rarely
    the pH of another fluid."""
    m = len(idx)
    gas = rng.random(m) < signal("blood_gas", stays.labels[idx])
    gi, gt = idx[gas], t[gas] + 60 * rng.integers(0, 30, gas.sum())
    g = len(gi)
    panels.add(
        gi,
        gt,
        [
            (50820, _values(rng, "ph", levels, gi, gt, stays), None, None),
            (50817, _values(rng, "spo2", levels, gi, gt, stays, 1.5), None, rng.random(g) < 0.6),
            (50809, _values(rng, "glucose", levels, gi, gt, stays), None, rng.random(g) < 0.5),
        ],
    )
    other = rng.random(g) < 0.02  # pH of another fluid (pleural, ...), a rare item
    panels.add(gi[other], gt[other], [(50831, rng.normal(7.4, 0.1, other.sum()), None, None)])


def _urine(rng, panels: _Panels, idx, t) -> None:
    """At a few draws a urine sample: pH and glucose (text 'NEG' or '100')."""
    urine = rng.random(len(idx)) < 0.05
    ui, ut = idx[urine], t[urine] + 60 * rng.integers(0, 120, urine.sum())
    u_glu = (rng.random(len(ui)) < 0.2).astype(np.int64)
    panels.add(
        ui,
        ut,
        [
            (51491, np.round(rng.normal(6.0, 0.8, len(ui)) * 2) / 2, None, None),
            (51478, np.where(u_glu == 1, 100.0, np.nan), T_URINE + u_glu, None),
        ],
    )


def _labevents_table(rng, stays: StayChunk, parts: list[tuple], first_event_id: int) -> pl.DataFrame:
    """The labevents rows of the panels, sorted by stay, time and item, with units, reference
    ranges, flags and store times."""
    idx = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    spec = np.concatenate([p[2] for p in parts])
    item = np.concatenate([np.full(len(p[0]), p[3]) for p in parts])
    num = np.concatenate([np.round(p[4], LAB_ITEMS[p[3]][3]) for p in parts])
    text = np.concatenate([np.full(len(p[0]), -1) if p[5] is None else p[5] for p in parts])
    order = np.lexsort((item, t, idx))
    idx, t, spec, item, num, text = idx[order], t[order], spec[order], item[order], num[order], text[order]
    k = len(idx)
    keys = np.array(sorted(LAB_ITEMS))
    unit = np.array([LAB_ITEMS[i][0] for i in keys])
    low = np.array([np.nan if LAB_ITEMS[i][1] is None else LAB_ITEMS[i][1] for i in keys], float)
    high = np.array([np.nan if LAB_ITEMS[i][2] is None else LAB_ITEMS[i][2] for i in keys], float)
    pos = np.searchsorted(keys, item)
    lo, hi = low[pos], high[pos]
    num_str = number_strings(num, 2)
    has_text = text >= 0
    value = masked(pl.Series(TEXTS).gather(pl.Series(np.maximum(text, 0), dtype=pl.UInt32)), has_text)
    abnormal = ~np.isnan(num) & ~np.isnan(lo) & ((num < lo) | (num > hi))
    stat = t >= stays.intime[idx]
    return pl.DataFrame(
        {
            "labevent_id": first_event_id + np.arange(k),
            "subject_id": stays.subject_id[idx],
            "hadm_id": stays.hadm_id[idx],
            "specimen_id": spec,
            "itemid": item,
            "order_provider_id": pl.Series([None] * k, dtype=pl.String),
            "charttime": epoch_to_datetime(t),
            "storetime": epoch_to_datetime(t + 60 * rng.integers(20, 150, k)),
            "value": value.fill_null(num_str),
            "valuenum": masked(num_str, ~np.isnan(num)),
            "valueuom": unit[pos],
            "ref_range_lower": masked(number_strings(lo, 2), ~np.isnan(lo)),
            "ref_range_upper": masked(number_strings(hi, 2), ~np.isnan(hi)),
            "flag": masked(np.full(k, "abnormal"), abnormal),
            "priority": np.where(stat, "STAT", "ROUTINE"),
            "comments": pl.Series([None] * k, dtype=pl.String),
        }
    ).select(LABEVENTS)
