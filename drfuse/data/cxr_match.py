"""Chest X-ray matching: per cohort stay, the latest image of the configured view (`cohort.cxr_view`,
AP as in the authors' code; the paper's text says "(PA)") taken within `cohort.hours` of ICU
admission, from the MIMIC-CXR-JPG metadata loaded by the ingest stage.

Whether the image file exists and decodes is decided later by the images stage. A database
without `cxr_metadata` (ingest run without a MIMIC-CXR root, the MIMIC-IV demo) gives every stay
`has_cxr` false. With metadata and no match at all (the metadata of other patients, another view,
other dates), `no_match_cause` says how far the metadata got, for the cohort stage's error.
"""

from __future__ import annotations

import logging

from drfuse.data.sql_files import read_sql, run_sql, scalar
from drfuse.errors import UserError

log = logging.getLogger(__name__)


def has_table(con, name: str) -> bool:
    return scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [name]) > 0


def check_settings(view: str, hours: float) -> None:
    if not isinstance(view, str) or not view:
        raise UserError(f"config cohort.cxr_view: expected a ViewPosition such as 'AP', got {view!r}")
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours <= 0:
        raise UserError(f"config cohort.hours: expected a positive number of hours, got {hours!r}")


def match_cxr(con, view: str, hours: float) -> int:
    """Create the temporary table `stay_cxr (stay_id, dicom_id, study_id, cxr_time, cxr_path)` for
    the temporary table `cohort`; return the number of stays with a match."""
    check_settings(view, hours)
    if not has_table(con, "cxr_metadata"):
        log.info("no cxr_metadata table in the database: no stay has a chest X-ray")
        run_sql(con, "cxr_metadata_empty.sql")
    run_sql(con, "cxr_match.sql", cxr_view=view, cxr_hours=float(hours))
    return scalar(con, "SELECT count(*) FROM stay_cxr")


def no_match_cause(con, view: str, hours: float) -> str:
    """Why `match_cxr` matched no stay, as a clause for an error: the count of metadata images,
    of the cohort's subjects, of the view; the likely cause of the first that is zero."""
    con.execute("SET VARIABLE cxr_view = ?", [view])
    images, of_subjects, of_view, views = con.execute(read_sql("cxr_match_diagnosis.sql")).fetchall()[0]
    if not images:
        return "the CXR metadata has no rows (data.mimic_cxr_dir: an empty or wrong metadata file?)"
    if not of_subjects:
        return (
            f"none of the CXR metadata's {images:,} images is of a cohort subject (data.mimic_cxr_dir holds the "
            "metadata of other patients: another MIMIC-CXR copy or a subset?)"
        )
    if not of_view:
        return (
            f"{of_subjects:,} images are of cohort subjects, none with ViewPosition {view!r} (cohort.cxr_view; "
            f"their views: {views})"
        )
    return (
        f"{of_view:,} {view} images are of cohort subjects, none taken within {hours:g} h after an ICU admission "
        "(cohort.hours; MIMIC-IV and MIMIC-CXR of other releases, whose dates are shifted differently?)"
    )
