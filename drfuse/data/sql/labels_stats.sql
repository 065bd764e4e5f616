-- Stay labels (a stay is positive for a benchmark group when any diagnosis row of its admission
-- falls in it) and the counts reported in label_mapping.json. A row is unmapped when it is in no
-- CCS group (dx_group, from labels_<source>.sql).
CREATE OR REPLACE TEMP TABLE stay_labels AS
SELECT DISTINCT stay_id, phenotype FROM dx_group WHERE benchmark;

CREATE OR REPLACE TEMP TABLE label_stats AS
WITH mapped AS (
    SELECT DISTINCT dx_row FROM dx_group
),
benchmark AS (
    SELECT DISTINCT dx_row FROM dx_group WHERE benchmark
)
SELECT
    count(*) AS diagnosis_rows,
    count(*) FILTER (WHERE icd_version = '9') AS icd9_rows,
    count(*) FILTER (WHERE icd_version = '10') AS icd10_rows,
    count(*) FILTER (WHERE icd_version NOT IN ('9', '10')) AS other_version_rows,
    count(*) FILTER (WHERE dx_row NOT IN (SELECT dx_row FROM mapped)) AS rows_unmapped,
    count(*) FILTER (WHERE icd_version = '9' AND dx_row NOT IN (SELECT dx_row FROM mapped)) AS icd9_rows_unmapped,
    count(*) FILTER (WHERE icd_version = '10' AND dx_row NOT IN (SELECT dx_row FROM mapped)) AS icd10_rows_unmapped,
    count(*) FILTER (WHERE icd_version = '9' AND dx_row NOT IN (SELECT dx_row FROM benchmark))
        AS icd9_rows_in_no_benchmark_group,
    count(*) FILTER (WHERE icd_version = '10' AND dx_row NOT IN (SELECT dx_row FROM benchmark))
        AS icd10_rows_in_no_benchmark_group
FROM dx;
