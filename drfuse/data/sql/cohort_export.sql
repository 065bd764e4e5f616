-- One row per cohort stay in the column order of the stays.parquet contract (labels are added
-- from stay_labels in Python). subject_split: subject_id -> split.
SELECT
    c.stay_id,
    c.subject_id,
    c.hadm_id,
    c.intime,
    c.outtime,
    epoch(c.outtime - c.intime) / 3600.0 AS los_hours,
    c.age,
    sp.split,
    x.dicom_id IS NOT NULL AS has_cxr,
    x.dicom_id,
    x.study_id,
    x.cxr_time,
    x.cxr_path
FROM cohort AS c
JOIN subject_split AS sp ON sp.subject_id = c.subject_id
LEFT JOIN stay_cxr AS x ON x.stay_id = c.stay_id
ORDER BY c.stay_id;
