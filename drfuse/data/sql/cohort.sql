-- The MedFuse cohort rules, one temporary table per step so that the attrition table can count
-- each of them. Needs the variable min_age (SET VARIABLE).

-- 0. Stays that end after they begin (an outtime before the intime is a data error: it would give
--    a negative length of stay and no hourly rows). A stay without outtime is kept.
CREATE OR REPLACE TEMP TABLE cohort_valid_times AS
SELECT *
FROM icustays
WHERE intime IS NOT NULL AND (outtime IS NULL OR outtime > intime);

-- 1. No transfer between care units during the stay.
CREATE OR REPLACE TEMP TABLE cohort_same_unit AS
SELECT subject_id, hadm_id, stay_id, intime, outtime
FROM cohort_valid_times
WHERE first_careunit = last_careunit;

-- 2a. The stay's admission and patient are on record (inner joins, as MedFuse merges them).
CREATE OR REPLACE TEMP TABLE cohort_on_record AS
SELECT s.*, p.anchor_age
FROM cohort_same_unit AS s
JOIN admissions AS a ON a.subject_id = s.subject_id AND a.hadm_id = s.hadm_id
JOIN patients AS p ON p.subject_id = s.subject_id;

-- 2b. Admissions with exactly one remaining ICU stay (counted after step 1).
CREATE OR REPLACE TEMP TABLE cohort_single_stay AS
SELECT *
FROM cohort_on_record
WHERE hadm_id IN (SELECT hadm_id FROM cohort_on_record GROUP BY hadm_id HAVING count(*) = 1);

-- 3. Adults. MIMIC-IV gives the age at the anchor year only; MedFuse uses it as the age.
CREATE OR REPLACE TEMP TABLE cohort_adult AS
SELECT *
FROM cohort_single_stay
WHERE anchor_age >= getvariable('min_age');

-- 4. Stays whose admission has no diagnosis row cannot be labelled.
CREATE OR REPLACE TEMP TABLE cohort AS
SELECT subject_id, hadm_id, stay_id, intime, outtime, anchor_age AS age
FROM cohort_adult
WHERE hadm_id IN (SELECT hadm_id FROM diagnoses_icd);
