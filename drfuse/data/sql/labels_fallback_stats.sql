-- What the GEM fallback of labels_ahrq.sql did (dx_gem, dx_group, stay_labels): rows, stays and
-- codes it labelled, stay labels that are positive only through it, and rows left unmapped
-- because their GEM targets lie in several groups (or in none); per benchmark label, the rows it
-- labelled and the unmapped rows that had the label among their candidate groups.
CREATE OR REPLACE TEMP TABLE fallback_only AS
SELECT stay_id, phenotype
FROM dx_group
WHERE benchmark
GROUP BY stay_id, phenotype
HAVING bool_and(how = 'gem_fallback');

CREATE OR REPLACE TEMP TABLE fallback_stats AS
SELECT
    count(DISTINCT dx_row) FILTER (WHERE one_group) AS rows,
    count(DISTINCT stay_id) FILTER (WHERE one_group) AS stays,
    count(DISTINCT icd_code) FILTER (WHERE one_group) AS codes,
    (SELECT count(*) FROM fallback_only) AS stay_labels_only_through_fallback,
    count(DISTINCT dx_row) FILTER (WHERE NOT one_group) AS rows_unmapped_mixed_targets,
    count(DISTINCT stay_id) FILTER (WHERE NOT one_group) AS stays_with_unmapped_mixed_targets,
    count(DISTINCT icd_code) FILTER (WHERE NOT one_group) AS codes_unmapped_mixed_targets
FROM dx_gem;

CREATE OR REPLACE TEMP TABLE fallback_per_label AS
SELECT g.phenotype,
       count(DISTINCT g.dx_row) FILTER (WHERE g.one_group) AS rows,
       (SELECT count(*) FROM fallback_only AS f WHERE f.phenotype = g.phenotype) AS stay_labels_only_through_fallback,
       count(DISTINCT g.dx_row) FILTER (WHERE NOT g.one_group) AS rows_unmapped_mixed_targets
FROM dx_gem AS g
WHERE g.benchmark
GROUP BY g.phenotype;
