-- MedFuse's labelling: the code string, whatever its version, is looked up in
-- icd_9_10_definitions_2.yaml (CCS ICD-9 codes plus one appended forward-GEM ICD-10 target per
-- ICD-9 code). dx_target: rows whose code is in the definitions; dx_group: rows in a CCS group.
CREATE OR REPLACE TEMP TABLE dx_target AS
SELECT dx_row, stay_id, icd_code, 'definitions' AS how
FROM dx
WHERE icd_code IN (SELECT code FROM definitions);

CREATE OR REPLACE TEMP TABLE dx_group AS
SELECT DISTINCT dx.dx_row, dx.stay_id, d.phenotype, d.benchmark
FROM dx
JOIN definitions AS d ON d.code = dx.icd_code;
