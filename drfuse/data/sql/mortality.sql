-- The in-hospital mortality (IHM) cohort and its label, as MedFuse defines the task: the
-- phenotyping cohort's stays (cohort_stays: stay_id, from cohort/stays.parquet) whose ICU stay
-- lasts at least min_hours (icustays.los is in days), each labelled 1 when the patient died during
-- the stay's hospital admission: admissions.deathtime within [admittime, dischtime], or
-- patients.dod (a date, taken as its midnight) within [admittime, dischtime], bounds included.
-- From MIMIC-IV v2.0 on, dod also records deaths after discharge (state records, up to a year
-- later): the bounds keep them out. A stay without los (no outtime) is left out.
-- Needs the variable min_hours (SET VARIABLE).
CREATE OR REPLACE TEMP TABLE mortality_cohort AS
SELECT
    c.stay_id,
    CAST(
        coalesce(a.deathtime BETWEEN a.admittime AND a.dischtime, FALSE)
        OR coalesce(CAST(CAST(p.dod AS DATE) AS TIMESTAMP) BETWEEN a.admittime AND a.dischtime, FALSE)
        AS TINYINT
    ) AS in_hospital_mortality
FROM cohort_stays AS c
JOIN icustays AS i ON i.stay_id = c.stay_id
JOIN admissions AS a ON a.subject_id = i.subject_id AND a.hadm_id = i.hadm_id
JOIN patients AS p ON p.subject_id = i.subject_id
WHERE i.los * 24 >= getvariable('min_hours')
ORDER BY c.stay_id;
