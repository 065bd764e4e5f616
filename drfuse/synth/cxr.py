"""MIMIC-CXR-JPG v2.0.0 metadata and JPEG files for the synthetic ICU stays.

About `cxr_share` of the stays get a portable AP study inside [intime, intime + 48 h], sicker
stays more often (a logistic in acuity, its intercept solved for the share). Realistic mess on top:
a second AP study in the window for some stays, AP studies outside the window (in the ED before
the ICU, or after 48 h), outpatient PA + LATERAL studies months before, and a few studies with
two AP images. StudyDate is YYYYMMDD (int), StudyTime HHMMSS.fff written as a number, as in the
real file (leading zeros dropped, e.g. 83015.125 for 08:30:15.125).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from tqdm import tqdm

from drfuse.synth.csvgz import masked
from drfuse.synth.phenotype_model import label_index
from drfuse.synth.schema import CXR_METADATA
from drfuse.synth.xray import SIGNS, draw
from drfuse.workers import ordered_map, worker_count

HOUR = 3600
DAY = 24 * HOUR

# sign -> (label, chance the sign shows when the label is set, chance it shows without it)
SIGN_MODEL = {
    "pacemaker": (label_index("Conduction disorders"), 0.85, 0.01),
    "cardiomegaly": (label_index("Congestive heart failure; nonhypertensive"), 0.8, 0.04),
    "pneumothorax": (label_index("Pleurisy; pneumothorax; pulmonary collapse"), 0.8, 0.01),
    "hyperinflation": (label_index("Chronic obstructive pulmonary disease and bronchiectasis"), 0.8, 0.03),
    "opacity": (
        label_index("Pneumonia (except that caused by tuberculosis or sexually transmitted disease)"),
        0.75,
        0.04,
    ),
}
VIEW_CODE = {"AP": "antero-posterior", "PA": "postero-anterior", "LATERAL": "lateral"}


def _intercept(acuity: np.ndarray, share: float, slope: float) -> float:
    """Solve mean(sigmoid(b + slope * acuity)) = share for b by bisection."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + slope * acuity)))) < share:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def plan_studies(rng, stay_in, stay_out, stay_acuity, share: float) -> pl.DataFrame:
    """One row per image: stay (row index), view, time (seconds, ms precision), study (index)."""
    n = len(stay_in)
    los = stay_out - stay_in
    p = 1 / (1 + np.exp(-(_intercept(stay_acuity, share, 1.0) + stay_acuity)))
    in_window = rng.random(n) < p
    parts = []  # (stay, time, view, n_images)

    def add(stays, times, view, n_images=None):
        parts.append(
            (stays, times, np.full(len(stays), view), np.ones(len(stays), int) if n_images is None else n_images)
        )

    s = np.flatnonzero(in_window)
    window = np.minimum(48 * HOUR, los[s])
    add(s, stay_in[s] + rng.uniform(0, 1, len(s)) * window, "AP", 1 + (rng.random(len(s)) < 0.04))
    s2 = s[rng.random(len(s)) < 0.3]  # an earlier second AP in the window
    add(s2, stay_in[s2] + rng.uniform(0, 0.5, len(s2)) * np.minimum(48 * HOUR, los[s2]), "AP")
    before = np.flatnonzero(rng.random(n) < 0.12)  # in the ED, before the ICU
    add(before, stay_in[before] - rng.uniform(1, 36, len(before)) * HOUR, "AP")
    late = np.flatnonzero((rng.random(n) < 0.3) & (los > 50 * HOUR))  # after the first 48 h
    add(late, stay_in[late] + 48 * HOUR + rng.uniform(0.02, 1, len(late)) * (los[late] - 48 * HOUR), "AP")
    out = np.flatnonzero(rng.random(n) < 0.1)  # outpatient PA + LATERAL
    out_t = stay_in[out] - rng.uniform(30, 400, len(out)) * DAY
    add(out, out_t, "PA")
    add(out, out_t, "LATERAL")

    stays = np.concatenate([q[0] for q in parts])
    times = np.concatenate([q[1] for q in parts])
    views = np.concatenate([q[2] for q in parts])
    n_images = np.concatenate([q[3] for q in parts])
    # PA and LATERAL of one outpatient visit share a study; every other entry is its own study.
    study = np.arange(len(stays))
    k = sum(len(q[0]) for q in parts[:-1])
    study[k:] = study[k - len(out) : k]
    stays, times, views, study = (np.repeat(a, n_images) for a in (stays, times, views, study))
    times = np.round(times, 3)
    return pl.DataFrame({"stay": stays, "time": times, "view": views, "study": study})


def _time_fields(seconds: np.ndarray) -> tuple[np.ndarray, list[str]]:
    whole = np.floor(seconds).astype(np.int64)
    ms = np.round((seconds - whole) * 1000).astype(np.int64)
    dt = whole.astype("datetime64[s]")
    day = dt.astype("datetime64[D]")
    ymd = day.astype(str)
    date = np.char.replace(ymd.astype("U10"), "-", "").astype(np.int64)
    sec_of_day = whole - day.astype("datetime64[s]").astype(np.int64)
    hhmmss = (sec_of_day // 3600) * 10000 + (sec_of_day % 3600 // 60) * 100 + sec_of_day % 60
    return date, [repr(round(float(v) + float(m) / 1000, 3)) for v, m in zip(hhmmss, ms)]


def metadata(rng, plan: pl.DataFrame, stay_subject: np.ndarray, height: int, width: int) -> pl.DataFrame:
    n = plan.height
    n_studies = int(plan["study"].max()) + 1 if n else 0
    study_ids = 50_000_000 + np.sort(rng.choice(10_000_000, n_studies, replace=False))
    study_ids = rng.permutation(study_ids)
    raw = rng.integers(0, 2**32, (n, 5), dtype=np.uint64)
    dicom = ["-".join(f"{int(v):08x}" for v in row) for row in raw]
    view = plan["view"].to_numpy()
    date, time = _time_fields(plan["time"].to_numpy())
    description = np.where(view == "AP", "CHEST (PORTABLE AP)", "CHEST (PA AND LAT)")
    orientation = np.where(view == "AP", np.where(rng.random(n) < 0.65, "Recumbent", "Erect"), "Erect")
    orientation = np.where((view == "AP") & (rng.random(n) < 0.08), "", orientation)
    return pl.DataFrame(
        {
            "dicom_id": dicom,
            "subject_id": stay_subject[plan["stay"].to_numpy()],
            "study_id": study_ids[plan["study"].to_numpy()],
            "PerformedProcedureStepDescription": description,
            "ViewPosition": view,
            "Rows": np.full(n, height),
            "Columns": np.full(n, width),
            "StudyDate": date,
            "StudyTime": time,
            "ProcedureCodeSequence_CodeMeaning": description,
            "ViewCodeSequence_CodeMeaning": [VIEW_CODE[v] for v in view],
            "PatientOrientationCodeSequence_CodeMeaning": masked(orientation, orientation != ""),
        }
    ).select(CXR_METADATA)


def image_path(subject_id: int, study_id: int, dicom_id: str) -> str:
    s = str(subject_id)
    return f"files/p{s[:2]}/p{s}/s{study_id}/{dicom_id}.jpg"


def _write_image(task: tuple) -> None:
    """Draw and save one image: (root, index, subject, study, dicom, view, height, width, its
    admission's labels (25,), seed, JPEG quality)."""
    root, i, subject, study, dicom, view, h, w, labels, seed, quality = task
    # One generator per image: its pixels depend on neither the other images nor the process.
    rng = np.random.default_rng([seed, 202, i])
    signs = {}
    for name in SIGNS:
        k, sensitivity, false_rate = SIGN_MODEL[name]
        signs[name] = rng.random() < (sensitivity if labels[k] else false_rate)
    path = root / image_path(subject, study, dicom)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(rng, h, w, signs, view)).save(path, format="JPEG", quality=quality)


def write_images(root: Path, meta: pl.DataFrame, labels: np.ndarray, seed: int, quality: int, workers: int = 1) -> None:
    """Draw and save every image of `meta` in `workers` processes (0: one per core); `labels`
    (n_images, 25) are its admission's labels. The files do not depend on `workers`."""
    rows = meta.select("subject_id", "study_id", "dicom_id", "ViewPosition", "Rows", "Columns").iter_rows()
    tasks = [(root, i, *row, labels[i], seed, quality) for i, row in enumerate(rows)]
    workers = worker_count(workers, len(tasks), "synth: --threads")
    for _ in tqdm(ordered_map(_write_image, tasks, workers), total=len(tasks), desc="synth CXR images", unit="img"):
        pass
