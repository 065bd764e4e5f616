-- MIMIC-CXR-JPG metadata without its identical duplicate rows (a file concatenated twice, a
-- download appended to): each image once. Rows that differ but share a dicom_id are left for
-- ingest_cxr_conflicts.sql to report.
CREATE OR REPLACE TABLE cxr_metadata AS
SELECT DISTINCT * FROM cxr_metadata;
