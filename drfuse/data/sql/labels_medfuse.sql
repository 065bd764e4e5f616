-- MedFuse's labelling: the code string, whatever its version, is looked up in
-- icd_9_10_definitions_2.yaml (definitions: code, phenotype, benchmark; CCS ICD-9 codes plus one
-- appended forward-GEM ICD-10 target per ICD-9 code). Creates
-- dx_group(dx_row, stay_id, phenotype, benchmark, how).
CREATE OR REPLACE TEMP TABLE dx_group AS
SELECT DISTINCT dx.dx_row, dx.stay_id, d.phenotype, d.benchmark, 'definitions' AS how
FROM dx
JOIN definitions AS d ON d.code = dx.icd_code;
