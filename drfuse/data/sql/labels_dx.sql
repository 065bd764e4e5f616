-- The diagnosis rows of the cohort's admissions, one id per row so that unmapped rows can be
-- counted. Codes are strings (never numbers: '0389' and '389' are different codes), normalised
-- as the mapping tables write them: blanks and dots removed, upper case ('428.0' -> '4280',
-- 'i50.23' -> 'I5023').
CREATE OR REPLACE TEMP TABLE dx AS
SELECT
    row_number() OVER (ORDER BY c.stay_id, d.seq_num, d.icd_version, d.icd_code) AS dx_row,
    c.stay_id,
    trim(d.icd_version) AS icd_version,
    upper(replace(replace(d.icd_code, '.', ''), ' ', '')) AS icd_code
FROM diagnoses_icd AS d
JOIN cohort AS c ON c.hadm_id = d.hadm_id;
