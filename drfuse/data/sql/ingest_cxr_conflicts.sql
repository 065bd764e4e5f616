-- dicom_ids on more than one distinct metadata row (after ingest_cxr_distinct.sql): which time,
-- subject or view such an image has cannot be told, so ingest refuses them.
SELECT dicom_id, count(*) AS n_rows
FROM cxr_metadata
GROUP BY dicom_id
HAVING count(*) > 1
ORDER BY dicom_id;
