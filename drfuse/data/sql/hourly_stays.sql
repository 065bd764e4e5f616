-- The cohort stays in stays.parquet order (pos = row in ehr.npy), each with the end of its
-- window and its number of hourly bins: n_bins = ceil(min(LOS, hours)), at least 1. A stay
-- without outtime is taken to last the whole window.
CREATE OR REPLACE TEMP TABLE feat_stays AS
SELECT (file_row_number)::BIGINT AS pos,
       stay_id::BIGINT AS stay_id, hadm_id::BIGINT AS hadm_id,
       intime::TIMESTAMP AS intime, split::VARCHAR AS split,
       least(intime::TIMESTAMP + to_hours($hours::BIGINT),
             coalesce(outtime::TIMESTAMP, intime::TIMESTAMP + to_hours($hours::BIGINT))) AS window_end,
       greatest(1, least($hours::BIGINT, ceil(
           (epoch_us(coalesce(outtime::TIMESTAMP, intime::TIMESTAMP + to_hours($hours::BIGINT)))
            - epoch_us(intime::TIMESTAMP)) / 3600e6)::BIGINT)) AS n_bins
FROM read_parquet($stays_path, file_row_number = true)
