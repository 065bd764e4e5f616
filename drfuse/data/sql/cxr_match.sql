-- Per cohort stay, the latest image of the wanted view taken in [intime, intime + hours]; ties
-- (same time) go to the largest dicom_id, so the choice never depends on row order.
-- Needs the variables cxr_view and cxr_hours (SET VARIABLE).
CREATE OR REPLACE TEMP TABLE stay_cxr AS
SELECT
    c.stay_id,
    m.dicom_id,
    m.study_id,
    m.study_datetime AS cxr_time,
    'files/p' || left(CAST(m.subject_id AS VARCHAR), 2) || '/p' || CAST(m.subject_id AS VARCHAR)
        || '/s' || CAST(m.study_id AS VARCHAR) || '/' || m.dicom_id || '.jpg' AS cxr_path
FROM cohort AS c
JOIN cxr_metadata AS m ON m.subject_id = c.subject_id
WHERE m.ViewPosition = getvariable('cxr_view')
  AND m.study_datetime >= c.intime
  AND m.study_datetime <= c.intime + to_microseconds(CAST(round(getvariable('cxr_hours') * 3600e6) AS BIGINT))
QUALIFY row_number() OVER (PARTITION BY c.stay_id ORDER BY m.study_datetime DESC, m.dicom_id DESC) = 1;
