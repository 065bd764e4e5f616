-- Stand-in when the database has no MIMIC-CXR metadata (e.g. the MIMIC-IV demo): no stay has a CXR.
CREATE OR REPLACE TEMP TABLE cxr_metadata (
    dicom_id VARCHAR, subject_id BIGINT, study_id BIGINT, ViewPosition VARCHAR, study_datetime TIMESTAMP
);
