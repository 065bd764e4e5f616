-- Why no cohort stay matched a chest X-ray (cxr_match.sql found none): how far the metadata gets
-- towards a match. Needs the variable cxr_view (SET VARIABLE).
SELECT
    count(*) AS images,
    count(*) FILTER (WHERE of_cohort) AS of_cohort_subjects,
    count(*) FILTER (WHERE of_cohort AND ViewPosition = getvariable('cxr_view')) AS of_view,
    coalesce(string_agg(DISTINCT coalesce(ViewPosition, '(none)'), ', ' ORDER BY coalesce(ViewPosition, '(none)'))
        FILTER (WHERE of_cohort), '') AS views
FROM (
    SELECT ViewPosition, subject_id IN (SELECT subject_id FROM cohort) AS of_cohort
    FROM cxr_metadata
);
