-- ICD-9 rows map directly; ICD-10 rows through the CMS backward GEM (ICD-10 -> ICD-9), every
-- target of a code counting (combination entries included). MIMIC-IV also holds ICD-10 codes that
-- were split into longer codes before FY2018 (E780 -> E7800, E7801): a code absent from the GEM
-- takes the targets of the GEM codes that extend it. dx_target: rows with an ICD-9 code (and how
-- they got it); dx_group: rows in a CCS group (definitions: code, phenotype, benchmark).
CREATE OR REPLACE TEMP TABLE dx_target AS
WITH icd10 AS (
    SELECT DISTINCT icd_code FROM dx WHERE icd_version = '10'
),
exact AS (
    SELECT icd10.icd_code, gem.icd9_code, 'exact' AS how
    FROM icd10 JOIN gem ON gem.icd10_code = icd10.icd_code
),
-- Every proper prefix of every GEM code, so that "GEM codes extending a missing code" is an
-- equality join (a starts_with join compares every pair: minutes on MIMIC's ~70 k distinct codes).
gem_prefix AS (
    SELECT DISTINCT left(gem.icd10_code, n) AS prefix, gem.icd9_code
    FROM gem, range(3, 7) AS lengths(n)
    WHERE length(gem.icd10_code) > n
),
descendants AS (
    SELECT icd10.icd_code, p.icd9_code, 'descendants' AS how
    FROM icd10 JOIN gem_prefix AS p ON p.prefix = icd10.icd_code
    WHERE icd10.icd_code NOT IN (SELECT icd_code FROM exact)
),
code_map AS (
    SELECT DISTINCT * FROM (SELECT * FROM exact UNION ALL SELECT * FROM descendants)
)
SELECT dx_row, stay_id, icd_code AS icd9_code, 'icd9' AS how FROM dx WHERE icd_version = '9'
UNION ALL
SELECT dx.dx_row, dx.stay_id, m.icd9_code, m.how
FROM dx JOIN code_map AS m ON m.icd_code = dx.icd_code
WHERE dx.icd_version = '10';

CREATE OR REPLACE TEMP TABLE dx_group AS
SELECT DISTINCT t.dx_row, t.stay_id, d.phenotype, d.benchmark
FROM dx_target AS t
JOIN definitions AS d ON d.code = t.icd9_code;
