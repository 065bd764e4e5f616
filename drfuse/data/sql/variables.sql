-- The 17 variables: every chart and lab event of a cohort stay inside its first hours, parsed,
-- converted to one unit per variable, outlier-filtered and clipped.
--
-- Reads the MIMIC tables `chartevents`, `labevents` and the reference tables that
-- drfuse.data.variables registers first:
--   feat_stays(pos, stay_id, hadm_id, intime, window_end, n_bins)  cohort stays, window_end =
--       least(intime + hours, outtime)
--   feat_items(itemid, source, channel_id, categorical, conversion)  item id -> channel
--   feat_units(channel_id, unit, conversion)   conversions keyed on valueuom (lower case)
--   feat_text(channel_id, text, score)         categorical text (lower case) -> score
--   feat_ranges(channel_id, outlier_low, valid_low, valid_high, outlier_high)
--   feat_gcs(part, channel_id)                 the GCS channels: eye, verbal, motor, total
-- Creates the temp tables `feat_checked` (every row in a window, with each step's result),
-- `feat_events(stay_id, channel_id, charttime, source_rank, itemid, derived, value)` and
-- `feat_counts(step, n)`; nothing is written to the database.

-- 1-3 run as one pipeline into feat_checked (one row per row in a window, with what each step
--    made of it), so the 3.7 M-row intermediate results are not each materialised and the counts
--    of step 5 come from one scan.
-- 1. Rows of the 17 variables inside a cohort stay's window. Labs carry no stay_id: they join the
--    stay through hadm_id and fall in its window by charttime. The window is half-open:
--    intime <= charttime < least(intime + hours, outtime).
CREATE OR REPLACE TEMP TABLE feat_checked AS
WITH feat_window AS (
    SELECT s.stay_id, i.channel_id, i.categorical, i.conversion, c.itemid, c.charttime,
           1 AS source_rank, c.value, c.valuenum, lower(trim(c.valueuom)) AS unit
    FROM chartevents c
    JOIN feat_items i ON i.itemid = c.itemid AND i.source = 'chart'
    JOIN feat_stays s ON s.stay_id = c.stay_id
    WHERE c.charttime >= s.intime AND c.charttime < s.window_end
    UNION ALL
    SELECT s.stay_id, i.channel_id, i.categorical, i.conversion, l.itemid, l.charttime,
           0 AS source_rank, l.value, l.valuenum, lower(trim(l.valueuom)) AS unit
    FROM labevents l
    JOIN feat_items i ON i.itemid = l.itemid AND i.source = 'lab'
    JOIN feat_stays s ON s.hadm_id = l.hadm_id
    WHERE l.charttime >= s.intime AND l.charttime < s.window_end
),
-- 2. The value as a number. Categoricals: the charted phrase mapped to its score (real MIMIC
--    charts 'Obeys Commands'), else the number (the demo charts '6'). Text that is neither stays
--    NULL and is counted, never cast with an error.
feat_parsed AS (
    SELECT w.stay_id, w.channel_id, w.itemid, w.charttime, w.source_rank,
           CASE WHEN w.categorical
                THEN coalesce(t.score, w.valuenum, TRY_CAST(trim(w.value) AS DOUBLE))
                ELSE coalesce(w.valuenum, TRY_CAST(trim(w.value) AS DOUBLE)) END AS raw,
           -- an item's own rule first (226707 is inches whatever valueuom says), else the unit
           CASE WHEN w.conversion <> 'none' THEN w.conversion ELSE coalesce(u.conversion, 'none') END AS conversion
    FROM feat_window w
    LEFT JOIN feat_text t ON t.channel_id = w.channel_id AND t.text = lower(trim(w.value))
    LEFT JOIN feat_units u ON u.channel_id = w.channel_id AND u.unit = w.unit
),
-- 3. One unit per variable (only finite numbers go on), then the ranges of variable_ranges.csv in
--    that unit: outside the outlier range -> dropped, outside the valid range -> clipped to it. A
--    missing bound is no bound.
feat_converted AS (
    SELECT p.*,
           p.raw IS NOT NULL AND isfinite(p.raw) AS finite,
           CASE WHEN NOT finite THEN NULL
                WHEN p.conversion = 'inch_to_cm' THEN p.raw * 2.54
                WHEN p.conversion = 'f_to_c' THEN (p.raw - 32.0) * 5.0 / 9.0
                WHEN p.conversion = 'lbs_to_kg' THEN p.raw * 0.45359237
                -- FiO2 is charted as a percentage (21-100) or as a fraction (0.21-1)
                WHEN p.conversion = 'percent_to_fraction' THEN CASE WHEN p.raw > 1 THEN p.raw / 100.0 ELSE p.raw END
                ELSE p.raw END AS converted
    FROM feat_parsed p
)
SELECT c.*,
       coalesce(c.converted >= coalesce(r.outlier_low, c.converted)
                AND c.converted <= coalesce(r.outlier_high, c.converted), false) AS kept,
       coalesce(c.converted < r.valid_low OR c.converted > r.valid_high, false) AS out_of_valid,
       least(greatest(c.converted, coalesce(r.valid_low, c.converted)),
             coalesce(r.valid_high, c.converted)) AS value
FROM feat_converted c
LEFT JOIN feat_ranges r ON r.channel_id = c.channel_id;

CREATE OR REPLACE TEMP TABLE feat_events AS
SELECT stay_id, channel_id, charttime, source_rank, itemid, false AS derived, value
FROM feat_checked
WHERE kept;

-- 4. GCS total = eye + verbal + motor when all three are charted at the same time (no MetaVision
--    item charts the total). Several rows of one component at one time: the same deterministic
--    pick as the hourly "last value" (chart before lab, then the higher item id, then value).
INSERT INTO feat_events
WITH comp AS (
    SELECT stay_id, charttime, channel_id,
           arg_max(value, {s: source_rank, i: itemid, v: value}) AS value
    FROM feat_events
    WHERE channel_id IN (SELECT channel_id FROM feat_gcs WHERE part <> 'total')
    GROUP BY ALL
)
SELECT c.stay_id, (SELECT channel_id FROM feat_gcs WHERE part = 'total'), c.charttime, 1, 0, true,
       sum(c.value)
FROM comp c
GROUP BY c.stay_id, c.charttime
HAVING count(*) = 3;

-- 5. What happened to every row, for the log and counts.json.
CREATE OR REPLACE TEMP TABLE feat_counts AS
WITH checked AS (
    SELECT count(*) AS in_window,
           count(*) FILTER (WHERE raw IS NULL) AS not_numeric,
           count(*) FILTER (WHERE raw IS NOT NULL AND NOT finite) AS not_finite,
           count(*) FILTER (WHERE finite AND conversion = 'inch_to_cm') AS inch_to_cm,
           count(*) FILTER (WHERE finite AND conversion = 'f_to_c') AS f_to_c,
           count(*) FILTER (WHERE finite AND conversion = 'lbs_to_kg') AS lbs_to_kg,
           count(*) FILTER (WHERE finite AND conversion = 'percent_to_fraction' AND raw > 1) AS percent_to_fraction,
           count(*) FILTER (WHERE finite AND NOT kept) AS outlier_dropped,
           count(*) FILTER (WHERE kept AND out_of_valid) AS clipped,
           count(*) FILTER (WHERE kept) AS kept
    FROM feat_checked
),
events AS (
    SELECT count(*) FILTER (WHERE derived) AS derived,
           count(*) - count(DISTINCT (stay_id, channel_id, charttime)) AS duplicates
    FROM feat_events
),
-- stays left without any value (every hour imputed): counted, and named in a warning
stays AS (
    SELECT count(*) AS without_events
    FROM feat_stays
    WHERE stay_id NOT IN (SELECT stay_id FROM feat_events)
)
SELECT v.* FROM checked, events, stays, LATERAL (VALUES
    ('in_window', checked.in_window),
    ('not_numeric', checked.not_numeric),
    ('not_finite', checked.not_finite),
    ('converted_inch_to_cm', checked.inch_to_cm),
    ('converted_f_to_c', checked.f_to_c),
    ('converted_lbs_to_kg', checked.lbs_to_kg),
    ('converted_percent_to_fraction', checked.percent_to_fraction),
    ('outlier_dropped', checked.outlier_dropped),
    ('clipped', checked.clipped),
    ('kept', checked.kept),
    ('gcs_total_derived', events.derived),
    ('same_time_duplicates', events.duplicates),
    ('stays_without_events', stays.without_events)
) v(step, n);
