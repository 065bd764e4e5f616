-- Hourly bins of the cleaned events (feat_events, from variables.sql): one row per stay and
-- hour 0..n_bins-1, one column per channel, the last value in the bin, NULL when unobserved.
-- Unordered: the COPY to hourly.parquet sorts, the dense array is filled by (pos, hour).
--
-- Bin k holds (k, k+1] hours after intime and bin 0 holds [0, 1], so an event at exactly 1 h is
-- in bin 0 and one at 1 h 36 s in bin 1 (integer microseconds: no rounding at the edges).
-- "Last" is the latest charttime; ties at one time are broken by chart before lab, then the
-- higher item id, then the higher value, so the result never depends on the scan order.
-- The channel_columns placeholder below is filled by drfuse.data.features with one
--   max(value) FILTER (WHERE channel_id = <i>) AS "<channel name>"
-- per channel of discretizer_config.json, in its order.
WITH binned AS (
    SELECT e.stay_id,
           greatest(0, (epoch_us(e.charttime) - epoch_us(s.intime) - 1) // 3600000000) AS hour,
           e.channel_id,
           arg_max(e.value, {t: e.charttime, s: e.source_rank, i: e.itemid, v: e.value}) AS value
    FROM feat_events e
    JOIN feat_stays s USING (stay_id)
    GROUP BY ALL
),
grid AS (
    SELECT s.pos, s.stay_id, h.hour
    FROM feat_stays s, range(s.n_bins) h(hour)
)
SELECT g.pos, g.stay_id, g.hour::INTEGER AS hour,
       {channel_columns}
FROM grid g
LEFT JOIN binned b ON b.stay_id = g.stay_id AND b.hour = g.hour
GROUP BY g.pos, g.stay_id, g.hour
