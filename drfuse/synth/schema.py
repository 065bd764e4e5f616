"""Column names and order of every file the generator writes, as in the real releases.

MIMIC-IV v2.2 (checked against the official demo's headers) and MIMIC-CXR-JPG v2.0.0's metadata
file. Kept in one place so the writers and the tests agree on the layout.
"""

from __future__ import annotations

PATIENTS = ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
ADMISSIONS = [
    "subject_id",
    "hadm_id",
    "admittime",
    "dischtime",
    "deathtime",
    "admission_type",
    "admit_provider_id",
    "admission_location",
    "discharge_location",
    "insurance",
    "language",
    "marital_status",
    "race",
    "edregtime",
    "edouttime",
    "hospital_expire_flag",
]
TRANSFERS = ["subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime"]
DIAGNOSES_ICD = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
LABEVENTS = [
    "labevent_id",
    "subject_id",
    "hadm_id",
    "specimen_id",
    "itemid",
    "order_provider_id",
    "charttime",
    "storetime",
    "value",
    "valuenum",
    "valueuom",
    "ref_range_lower",
    "ref_range_upper",
    "flag",
    "priority",
    "comments",
]
ICUSTAYS = ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"]
CHARTEVENTS = [
    "subject_id",
    "hadm_id",
    "stay_id",
    "caregiver_id",
    "charttime",
    "storetime",
    "itemid",
    "value",
    "valuenum",
    "valueuom",
    "warning",
]
CXR_METADATA = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]

# Dictionaries copied byte for byte from the MIMIC-IV v2.2 demo (drfuse/synth/resources/).
DICTIONARIES = {
    "hosp/d_labitems.csv.gz": "d_labitems.csv.gz",
    "hosp/d_icd_diagnoses.csv.gz": "d_icd_diagnoses.csv.gz",
    "icu/d_items.csv.gz": "d_items.csv.gz",
}

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
