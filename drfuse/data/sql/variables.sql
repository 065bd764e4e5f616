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
-- Creates the temp tables `feat_events(stay_id, channel_id, charttime, source_rank, itemid,
-- derived, value)` and `feat_counts(step, n)`; nothing is written to the database.

-- 1. Rows of the 17 variables inside a cohort stay's window. Labs carry no stay_id: they join the
--    stay through hadm_id and fall in its window by charttime. The window is half-open:
--    intime <= charttime < least(intime + hours, outtime).
CREATE OR REPLACE TEMP TABLE feat_window AS
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
WHERE l.charttime >= s.intime AND l.charttime < s.window_end;

-- 2. The value as a number. Categoricals: the charted phrase mapped to its score (real MIMIC
--    charts 'Obeys Commands'), else the number (the demo charts '6'). Text that is neither stays
--    NULL and is counted, never cast with an error.
CREATE OR REPLACE TEMP TABLE feat_parsed AS
SELECT w.stay_id, w.channel_id, w.itemid, w.charttime, w.source_rank,
       CASE WHEN w.categorical
            THEN coalesce(t.score, w.valuenum, TRY_CAST(trim(w.value) AS DOUBLE))
            ELSE coalesce(w.valuenum, TRY_CAST(trim(w.value) AS DOUBLE)) END AS raw,
       -- an item's own rule first (226707 is inches whatever valueuom says), else the unit
       CASE WHEN w.conversion <> 'none' THEN w.conversion ELSE coalesce(u.conversion, 'none') END AS conversion
FROM feat_window w
LEFT JOIN feat_text t ON t.channel_id = w.channel_id AND t.text = lower(trim(w.value))
LEFT JOIN feat_units u ON u.channel_id = w.channel_id AND u.unit = w.unit;

-- 3. One unit per variable, then the ranges of variable_ranges.csv in that unit: outside the
--    outlier range -> dropped, outside the valid range -> clipped to it. A missing bound is no bound.
CREATE OR REPLACE TEMP TABLE feat_converted AS
SELECT p.*,
       CASE p.conversion
            WHEN 'inch_to_cm' THEN p.raw * 2.54
            WHEN 'f_to_c' THEN (p.raw - 32.0) * 5.0 / 9.0
            WHEN 'lbs_to_kg' THEN p.raw * 0.45359237
            -- FiO2 is charted as a percentage (21-100) or as a fraction (0.21-1)
            WHEN 'percent_to_fraction' THEN CASE WHEN p.raw > 1 THEN p.raw / 100.0 ELSE p.raw END
            ELSE p.raw END AS converted
FROM feat_parsed p
WHERE p.raw IS NOT NULL AND isfinite(p.raw);

CREATE OR REPLACE TEMP TABLE feat_events AS
SELECT c.stay_id, c.channel_id, c.charttime, c.source_rank, c.itemid, false AS derived,
       least(greatest(c.converted, coalesce(r.valid_low, c.converted)),
             coalesce(r.valid_high, c.converted)) AS value
FROM feat_converted c
LEFT JOIN feat_ranges r ON r.channel_id = c.channel_id
WHERE c.converted >= coalesce(r.outlier_low, c.converted)
  AND c.converted <= coalesce(r.outlier_high, c.converted);

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
SELECT * FROM (VALUES
    ('in_window', (SELECT count(*) FROM feat_window)),
    ('not_numeric', (SELECT count(*) FROM feat_parsed WHERE raw IS NULL)),
    ('not_finite', (SELECT count(*) FROM feat_parsed WHERE raw IS NOT NULL AND NOT isfinite(raw))),
    ('converted_inch_to_cm', (SELECT count(*) FROM feat_converted WHERE conversion = 'inch_to_cm')),
    ('converted_f_to_c', (SELECT count(*) FROM feat_converted WHERE conversion = 'f_to_c')),
    ('converted_lbs_to_kg', (SELECT count(*) FROM feat_converted WHERE conversion = 'lbs_to_kg')),
    ('converted_percent_to_fraction',
        (SELECT count(*) FROM feat_converted WHERE conversion = 'percent_to_fraction' AND raw > 1)),
    ('outlier_dropped', (SELECT count(*) FROM feat_converted) - (SELECT count(*) FROM feat_events WHERE NOT derived)),
    ('clipped', (SELECT count(*) FROM feat_converted c LEFT JOIN feat_ranges r USING (channel_id)
                 WHERE c.converted >= coalesce(r.outlier_low, c.converted)
                   AND c.converted <= coalesce(r.outlier_high, c.converted)
                   AND (c.converted < r.valid_low OR c.converted > r.valid_high))),
    ('kept', (SELECT count(*) FROM feat_events WHERE NOT derived)),
    ('gcs_total_derived', (SELECT count(*) FROM feat_events WHERE derived)),
    ('same_time_duplicates', (SELECT count(*) - count(DISTINCT (stay_id, channel_id, charttime)) FROM feat_events))
) v(step, n);
