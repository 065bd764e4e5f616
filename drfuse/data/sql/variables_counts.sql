-- Where the rows of the event tables go before cleaning: unknown item ids, rows of no cohort stay
-- (or without a stay/admission id), rows outside the stay's window (or without a charttime).
-- One pass over each table; same joins and window as variables.sql step 1.
SELECT 'chartevents' AS source,
       count(*) AS n_rows,
       count(*) FILTER (WHERE i.itemid IS NULL) AS unknown_item,
       count(*) FILTER (WHERE i.itemid IS NOT NULL AND s.stay_id IS NULL) AS not_in_cohort,
       count(*) FILTER (WHERE s.stay_id IS NOT NULL
                        AND NOT coalesce(c.charttime >= s.intime AND c.charttime < s.window_end, false))
           AS outside_window
FROM chartevents c
LEFT JOIN feat_items i ON i.itemid = c.itemid AND i.source = 'chart'
LEFT JOIN feat_stays s ON s.stay_id = c.stay_id AND i.itemid IS NOT NULL
UNION ALL
-- A lab row joins every cohort stay of its admission (one by the cohort rules); counted per row.
SELECT 'labevents',
       count(*),
       count(*) FILTER (WHERE i.itemid IS NULL),
       count(*) FILTER (WHERE i.itemid IS NOT NULL AND s.stay_id IS NULL),
       count(*) FILTER (WHERE s.stay_id IS NOT NULL
                        AND NOT coalesce(l.charttime >= s.intime AND l.charttime < s.window_end, false))
FROM labevents l
LEFT JOIN feat_items i ON i.itemid = l.itemid AND i.source = 'lab'
LEFT JOIN feat_stays s ON s.hadm_id = l.hadm_id AND i.itemid IS NOT NULL
