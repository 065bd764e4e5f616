-- AHRQ labelling. ICD-9 rows: the CCS definitions (definitions: code, phenotype, benchmark).
-- ICD-10 rows: AHRQ's CCS for ICD-10-CM (ccs_icd10: icd10_code, phenotype, benchmark; one group
-- per code). An ICD-10 code missing from that table falls back to the CMS backward GEM (gem:
-- icd10_code, icd9_code) only when every GEM target of the code lies in one and the same CCS
-- group; a target in no group or in another group leaves the code unmapped.
-- Creates dx_gem (the GEM route of every row whose code AHRQ's table lacks) and
-- dx_group(dx_row, stay_id, phenotype, benchmark, how).

-- The GEM targets of the ICD-10 codes that AHRQ's table lacks. A code that the FY2018 GEM lacks
-- as well, because it was split into longer codes (or is a truncated or header code), takes the
-- targets of the GEM codes that extend it.
CREATE OR REPLACE TEMP TABLE icd10_gem_groups AS
WITH missing AS (
    SELECT DISTINCT icd_code FROM dx
    WHERE icd_version = '10' AND icd_code NOT IN (SELECT icd10_code FROM ccs_icd10)
),
exact AS (
    SELECT m.icd_code, gem.icd9_code
    FROM missing AS m JOIN gem ON gem.icd10_code = m.icd_code
),
-- The proper prefixes of the GEM codes that are missing codes: "GEM codes extending a missing
-- code" as an equality join (a starts_with join compares every pair).
gem_prefix AS (
    SELECT DISTINCT left(gem.icd10_code, n) AS prefix, gem.icd9_code
    FROM gem, range(3, 7) AS lengths(n)
    WHERE length(gem.icd10_code) > n AND left(gem.icd10_code, n) IN (SELECT icd_code FROM missing)
),
descendants AS (
    SELECT m.icd_code, p.icd9_code
    FROM missing AS m JOIN gem_prefix AS p ON p.prefix = m.icd_code
    WHERE m.icd_code NOT IN (SELECT icd_code FROM exact)
),
targets AS (
    SELECT * FROM exact UNION ALL SELECT * FROM descendants
),
groups AS (
    SELECT DISTINCT t.icd_code, t.icd9_code, d.phenotype, d.benchmark
    FROM targets AS t LEFT JOIN definitions AS d ON d.code = t.icd9_code
),
-- one group: every target has a group, and all of them the same one
per_code AS (
    SELECT icd_code, count(*) FILTER (WHERE phenotype IS NULL) = 0 AND count(DISTINCT phenotype) = 1 AS one_group
    FROM groups
    GROUP BY icd_code
)
SELECT DISTINCT g.icd_code, g.phenotype, g.benchmark, c.one_group
FROM groups AS g JOIN per_code AS c USING (icd_code);

CREATE OR REPLACE TEMP TABLE dx_gem AS
SELECT DISTINCT dx.dx_row, dx.stay_id, dx.icd_code, g.phenotype, g.benchmark, g.one_group
FROM dx JOIN icd10_gem_groups AS g ON g.icd_code = dx.icd_code
WHERE dx.icd_version = '10';

CREATE OR REPLACE TEMP TABLE dx_group AS
SELECT dx.dx_row, dx.stay_id, d.phenotype, d.benchmark, 'icd9' AS how
FROM dx JOIN definitions AS d ON d.code = dx.icd_code
WHERE dx.icd_version = '9'
UNION ALL
SELECT dx.dx_row, dx.stay_id, a.phenotype, a.benchmark, 'ahrq' AS how
FROM dx JOIN ccs_icd10 AS a ON a.icd10_code = dx.icd_code
WHERE dx.icd_version = '10'
UNION ALL
SELECT DISTINCT dx_row, stay_id, phenotype, benchmark, 'gem_fallback' AS how
FROM dx_gem
WHERE one_group;
