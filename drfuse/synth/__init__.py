"""`drfuse synth`: a MIMIC-IV v2.2 + MIMIC-CXR-JPG v2.0.0 shaped synthetic dataset.

Used when config.yaml names no MIMIC data. Real file names, column names and order, id and
timestamp formats, item ids, units and text values, so every later stage runs unchanged on it.
Planted structure lets models learn: correlated phenotypes with the paper's prevalences, some
visible only in the time series, some only in the image, some in both; sicker stays get a CXR more
often. Beside the two MIMIC-shaped trees, `answer_key/` says which modality carries each label's
signal and holds the true labels (`drfuse.synth.answer_key`). Deterministic by seed
(byte-identical output, whatever the number of worker processes drawing the images). Memory is
bounded at any size: events are generated and gzip-streamed in chunks of ICU stays.


Settings (config.yaml `synth:`): n_subjects, seed, image_size [h, w], first_year,
icd10_from_year, and the optional ones of `drfuse.synth.settings.DEFAULTS`, among them
`modal_inconsistency`: labels whose positives show their signal in one modality each, drawn per
admission (`drfuse.synth.channels`; the draw is in the answer key), and `mortality_signal`: who dies
in hospital drawn from planted evidence with a known modality split (`drfuse.synth.mortality`).
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np
from tqdm import tqdm

from drfuse import atomic
from drfuse.synth import answer_key, channels, cxr, events, icd, mortality, population, schema
from drfuse.synth.csvgz import GzipCsvWriter, write_table
from drfuse.synth.settings import SynthSettings, parse

__all__ = ["generate"]


def generate(out_dir: Path, settings: dict, workers: int = 1) -> None:
    """Write the dataset to `out_dir` (`mimic-iv/`, `mimic-cxr-jpg/`, `answer_key/`), replacing it whole;
    `workers` processes draw the images (0: one per core).

    Everything is written to a sibling temporary folder first and renamed at the end, so a failed
    run leaves no half-written dataset behind.
    """
    s = parse(settings)
    out_dir = Path(out_dir)
    with atomic.writing(out_dir) as tmp:
        _generate(tmp, s, workers)


def _generate(tmp: Path, s: SynthSettings, workers: int) -> None:
    iv, cxr_root = tmp / "mimic-iv", tmp / "mimic-cxr-jpg"
    for folder in (iv / "hosp", iv / "icu", cxr_root):
        folder.mkdir(parents=True)
    pop_rng, dx_rng, cxr_rng = (np.random.default_rng(x) for x in np.random.SeedSequence(s.seed).spawn(3))
    level = s.gzip_level

    pop = population.build(pop_rng, s)
    adm = pop.admissions
    write_table(iv / "hosp" / "transfers.csv.gz", pop.transfers, schema.TRANSFERS, level)
    write_table(iv / "icu" / "icustays.csv.gz", pop.icustays, schema.ICUSTAYS, level)
    dx = icd.diagnoses(
        dx_rng, adm["subject_id"].to_numpy(), adm["hadm_id"].to_numpy(), pop.adm_labels, pop.adm_icd10, pop.adm_coded
    )
    write_table(iv / "hosp" / "diagnoses_icd.csv.gz", dx, schema.DIAGNOSES_ICD, level)
    source = resources.files("drfuse.synth") / "resources"
    for target, name in schema.DICTIONARIES.items():
        with (source / name).open("rb") as src, open(iv / target, "wb") as dst:
            shutil.copyfileobj(src, dst)

    stay_subject = pop.icustays["subject_id"].to_numpy()
    female = (pop.patients["gender"].to_numpy() == "F")[
        np.searchsorted(pop.patients["subject_id"].to_numpy(), stay_subject)
    ]
    stay_labels = pop.adm_labels[pop.stay_adm]
    stay_acuity = pop.adm_acuity[pop.stay_adm]
    # its own stream: without modal inconsistency every other draw is as before
    channel = channels.draw(np.random.default_rng([s.seed, 505]), pop.adm_labels, s.modal_inconsistency)
    ehr_view, cxr_view = (view[pop.stay_adm] for view in channels.modality_views(pop.adm_labels, channel))
    answer_key.write(tmp / answer_key.DIR_NAME, pop.icustays, stay_labels, channel[pop.stay_adm], s.modal_inconsistency)
    stay_levels = _write_events(iv, s, pop, stay_subject, female, ehr_view, stay_acuity)

    plan = cxr.plan_studies(cxr_rng, pop.stay_in, pop.stay_out, stay_acuity, s.cxr_share)
    meta = cxr.metadata(cxr_rng, plan, stay_subject, s.image_height, s.image_width)
    write_table(cxr_root / "mimic-cxr-2.0.0-metadata.csv.gz", meta, schema.CXR_METADATA, level)
    image_labels = cxr_view[plan["stay"].to_numpy()]
    if s.images:
        cxr.write_images(cxr_root, meta, image_labels, s.seed, s.jpeg_quality, workers)
    pop = _deaths(tmp / answer_key.DIR_NAME, s, pop, stay_levels, plan, meta, image_labels)
    write_table(iv / "hosp" / "patients.csv.gz", pop.patients, schema.PATIENTS, level)
    write_table(iv / "hosp" / "admissions.csv.gz", pop.admissions, schema.ADMISSIONS, level)


def _deaths(key_dir: Path, s: SynthSettings, pop, stay_levels, plan, meta, image_labels):
    """Who dies in hospital (`drfuse.synth.mortality`): with `synth.mortality_signal`, drawn again
    from the stays' evidence in its own random stream; the evidence, the deaths and the planted
    split go to the answer key either way. Returns the population with its death columns."""
    stay_ehr_z = mortality.ehr_z(stay_levels)
    matched = mortality.matched_image(plan, meta, pop.stay_in)
    has_image = matched >= 0
    stay_sign = np.zeros(len(matched), bool)
    stay_sign[has_image] = mortality.image_signs_of(matched[has_image], image_labels, s.seed)
    if s.mortality_signal:
        died, logit, _ = mortality.draw(
            np.random.default_rng([s.seed, 707]), pop.stay_adm, len(pop.adm_last), pop.adm_last, stay_ehr_z, stay_sign
        )
        pop = population.with_deaths(pop, died)
    else:
        logit = np.full(len(matched), np.nan)
    died_stay = pop.admissions["hospital_expire_flag"].to_numpy()[pop.stay_adm].astype(bool)
    answer_key.write_mortality(
        key_dir, pop.icustays, stay_ehr_z, stay_sign, has_image, logit, died_stay, planted=s.mortality_signal
    )
    return pop


def _write_events(
    iv: Path, s: SynthSettings, pop, stay_subject, female, stay_labels, stay_acuity
) -> dict[str, np.ndarray]:
    """chartevents and labevents, chunk by chunk of ICU stays, streamed to gzip; `stay_labels`: the
    labels as the time series shows them (`drfuse.synth.channels.modality_views`). Returns the
    stays' latent levels of the variables that planted deaths read (`drfuse.synth.mortality`)."""
    n = len(stay_subject)
    stay_hadm = pop.icustays["hadm_id"].to_numpy()
    stay_id = pop.icustays["stay_id"].to_numpy()
    caregivers = np.sort(np.random.default_rng([s.seed, 303]).choice(np.arange(100, 100_000), 2000, replace=False))
    next_lab_id, next_specimen = 1, 10_000_000
    evidence = {name: np.empty(n) for name in mortality.EHR_EVIDENCE}
    with (
        GzipCsvWriter(iv / "icu" / "chartevents.csv.gz", schema.CHARTEVENTS, s.gzip_level) as chart,
        GzipCsvWriter(iv / "hosp" / "labevents.csv.gz", schema.LABEVENTS, s.gzip_level) as lab,
        tqdm(total=n, desc="synth events", unit="stay") as bar,
    ):
        for chunk, lo in enumerate(range(0, n, s.chunk_stays)):
            sl = slice(lo, min(lo + s.chunk_stays, n))
            rng = np.random.default_rng([s.seed, 101, chunk])
            stays = events.StayChunk(
                subject_id=stay_subject[sl],
                hadm_id=stay_hadm[sl],
                stay_id=stay_id[sl],
                intime=pop.stay_in[sl],
                outtime=pop.stay_out[sl],
                labels=stay_labels[sl],
                acuity=stay_acuity[sl],
                female=female[sl],
            )
            levels = events.stay_levels(rng, stays)
            for name in evidence:
                evidence[name][sl] = levels[name][0]
            chart.write(events.chartevents_frame(rng, stays, levels, caregivers))
            labs = events.labevents_frame(rng, stays, levels, next_lab_id, next_specimen)
            lab.write(labs)
            next_lab_id += labs.height
            next_specimen = int(labs["specimen_id"].max()) + 1 if labs.height else next_specimen
            bar.update(sl.stop - sl.start)
    return evidence
