-- MIMIC-CXR-JPG metadata plus study_datetime = StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff).
-- StudyTime was stored as a number, so leading zeros can be missing (4506.968 is 00:45:06.968):
-- pad the integer part to six digits, then add the fractional seconds.
CREATE TABLE cxr_metadata AS
SELECT
    *,
    try_strptime(
        StudyDate || lpad(split_part(StudyTime, '.', 1), 6, '0'), '%Y%m%d%H%M%S'
    ) + to_microseconds(
        round(coalesce(try_cast('0.' || nullif(split_part(StudyTime, '.', 2), '') AS DOUBLE), 0) * 1e6)::BIGINT
    ) AS study_datetime
FROM {source};
