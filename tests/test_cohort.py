"""Cohort rules, the stays.parquet contract, splits and CXR matching on the real MIMIC-IV demo.

Expected cohort counts are computed here with pandas straight from the demo CSVs."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from drfuse.data.cohort import STAYS_SCHEMA, build_cohort
from drfuse.data.ingest import ingest
from drfuse.data.labels import RESOURCES
from drfuse.data.splits import split_subjects, split_subjects_medfuse
from drfuse.errors import UserError
from drfuse.phenotypes import PHENOTYPES

PAPER_TABLE3 = Path(__file__).resolve().parents[1] / "drfuse" / "evaluate" / "paper" / "table3.csv"


def _pandas_cohort(demo_dir: Path, min_age: int) -> tuple[list[int], pd.DataFrame]:
    """The MedFuse rules written independently in pandas: (stays kept after each step, cohort)."""
    hosp, icu = demo_dir / "hosp", demo_dir / "icu"
    stays = pd.read_csv(icu / "icustays.csv.gz", parse_dates=["intime", "outtime"])
    admissions = pd.read_csv(hosp / "admissions.csv.gz", usecols=["subject_id", "hadm_id"])
    patients = pd.read_csv(hosp / "patients.csv.gz", usecols=["subject_id", "anchor_age"])
    diagnoses = pd.read_csv(hosp / "diagnoses_icd.csv.gz", usecols=["hadm_id"])
    kept = [len(stays)]
    stays = stays[stays.outtime.isna() | (stays.outtime > stays.intime)]
    kept.append(len(stays))
    stays = stays[stays.first_careunit == stays.last_careunit]
    kept.append(len(stays))
    stays = stays.merge(admissions, on=["subject_id", "hadm_id"]).merge(patients, on="subject_id")
    kept.append(len(stays))
    per_admission = stays.groupby("hadm_id").stay_id.transform("size")
    stays = stays[per_admission == 1]
    kept.append(len(stays))
    stays = stays[stays.anchor_age >= min_age]
    kept.append(len(stays))
    stays = stays[stays.hadm_id.isin(diagnoses.hadm_id)]
    kept.append(len(stays))
    return kept, stays


@pytest.fixture(scope="module")
def cfg(tiny_cfg) -> dict:
    return copy.deepcopy(tiny_cfg)


@pytest.fixture(scope="module")
def demo_cohort(tmp_path_factory, demo_db, cfg) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    build_cohort(demo_db, out, cfg)
    return out


def test_attrition_matches_pandas(demo_cohort, demo_dir, cfg):
    expected, stays = _pandas_cohort(demo_dir, cfg["cohort"]["min_age"])
    attrition = pd.read_csv(demo_cohort / "attrition.csv")
    assert list(attrition.columns) == ["step", "stays_kept", "stays_removed"]
    assert attrition.stays_kept.tolist() == expected == [140, 140, 129, 129, 112, 112, 112]
    assert attrition.stays_removed.tolist() == [0] + [a - b for a, b in zip(expected, expected[1:])]
    cohort = pd.read_parquet(demo_cohort / "stays.parquet")
    assert sorted(cohort.stay_id) == sorted(stays.stay_id)
    assert dict(zip(cohort.stay_id, cohort.age)) == dict(zip(stays.stay_id, stays.anchor_age))


def test_min_age_step(tmp_path, demo_db, demo_dir, cfg):
    cfg = copy.deepcopy(cfg)
    cfg["cohort"]["min_age"] = 65
    build_cohort(demo_db, tmp_path, cfg)
    expected, stays = _pandas_cohort(demo_dir, 65)
    attrition = pd.read_csv(tmp_path / "attrition.csv")
    assert attrition.stays_kept.tolist() == expected
    assert attrition.stays_removed.iloc[5] > 0  # the step removes someone on the demo
    assert sorted(pd.read_parquet(tmp_path / "stays.parquet").stay_id) == sorted(stays.stay_id)


def test_stays_without_diagnoses_are_excluded(tmp_path, demo_db, cfg):
    db = tmp_path / "copy.duckdb"
    shutil.copy(demo_db, db)
    with duckdb.connect(str(db)) as con:
        hadm_id, stay_id = con.execute(
            "SELECT hadm_id, stay_id FROM icustays WHERE first_careunit = last_careunit ORDER BY stay_id LIMIT 1"
        ).fetchall()[0]
        con.execute("DELETE FROM diagnoses_icd WHERE hadm_id = ?", [hadm_id])
    build_cohort(db, tmp_path / "out", cfg)
    attrition = pd.read_csv(tmp_path / "out" / "attrition.csv")
    assert attrition.iloc[-1].tolist() == ["with diagnosis rows", 111, 1]
    assert stay_id not in set(pd.read_parquet(tmp_path / "out" / "stays.parquet").stay_id)


def test_outtime_before_intime_is_a_counted_step(tmp_path, demo_db, cfg):
    """The probe: a stay whose outtime precedes its intime was kept with a negative los_hours."""
    db = tmp_path / "copy.duckdb"
    shutil.copy(demo_db, db)
    with duckdb.connect(str(db)) as con:
        (stay_id,) = con.execute(
            "SELECT stay_id FROM icustays WHERE first_careunit = last_careunit ORDER BY stay_id LIMIT 1"
        ).fetchone()
        con.execute("UPDATE icustays SET intime = outtime, outtime = intime WHERE stay_id = ?", [stay_id])
    build_cohort(db, tmp_path / "out", cfg)
    attrition = pd.read_csv(tmp_path / "out" / "attrition.csv")
    assert attrition.iloc[1].tolist() == ["outtime after intime", 139, 1]
    stays = pd.read_parquet(tmp_path / "out" / "stays.parquet")
    assert stay_id not in set(stays.stay_id) and len(stays) == 111
    assert (stays.los_hours > 0).all()


def test_stays_contract(demo_cohort):
    table = pq.read_table(demo_cohort / "stays.parquet")
    assert table.schema.names == STAYS_SCHEMA.names
    assert table.schema.names[13:] == list(PHENOTYPES)
    assert table.schema.equals(STAYS_SCHEMA)
    df = table.to_pandas()
    assert df.stay_id.is_monotonic_increasing and df.stay_id.is_unique
    assert np.allclose(df.los_hours, (df.outtime - df.intime).dt.total_seconds() / 3600)
    assert set(df.split) == {"train", "val", "test"}
    # the real demo has no CXR metadata: no stay has a CXR
    assert not df.has_cxr.any() and df.dicom_id.isna().all() and df.cxr_path.isna().all()
    labels = df[list(PHENOTYPES)].to_numpy()
    assert set(np.unique(labels)) == {0, 1}
    assert not [p.name for p in demo_cohort.iterdir() if p.name.startswith(".")]  # no temporary left


def test_splits_by_subject(demo_cohort):
    df = pd.read_parquet(demo_cohort / "stays.parquet")
    assert (df.groupby("subject_id").split.nunique() == 1).all()
    per_split = df.drop_duplicates("subject_id").split.value_counts()
    n = per_split.sum()
    assert per_split.to_dict() == {
        "train": round(0.7 * n),
        "val": round(0.1 * n),
        "test": n - round(0.7 * n) - round(0.1 * n),
    }


def test_split_determinism(tmp_path, demo_db, demo_cohort, cfg):
    subjects = np.arange(1000, 1500)
    a = dict(zip(*split_subjects(subjects, [0.7, 0.1, 0.2], seed=3)))
    shuffled = np.random.default_rng(1).permutation(np.repeat(subjects, 2))  # order and repeats don't matter
    assert dict(zip(*split_subjects(shuffled, [0.7, 0.1, 0.2], seed=3))) == a
    assert dict(zip(*split_subjects(subjects, [0.7, 0.1, 0.2], seed=4))) != a
    assert sum(v == "train" for v in a.values()) == 350
    build_cohort(demo_db, tmp_path, cfg)
    assert pq.read_table(tmp_path / "stays.parquet").equals(pq.read_table(demo_cohort / "stays.parquet"))


def test_medfuse_split(tmp_path, demo_db, demo_cohort, cfg):
    """MedFuse's lists, read here independently: flagged subjects in test / val, everyone else in
    train; the listed subjects the cohort lacks are counted in split.json."""
    medfuse = copy.deepcopy(cfg)
    medfuse["split"]["method"] = "medfuse"
    build_cohort(demo_db, tmp_path, medfuse)
    stays = pd.read_parquet(tmp_path / "stays.parquet")
    lists = {
        split: pd.read_csv(RESOURCES / f"{split}set_iv.csv", header=None, names=["subject_id", "flag"])
        for split in ("test", "val")
    }
    flagged = {split: set(df.subject_id[df.flag == 1]) for split, df in lists.items()}
    expected = stays.subject_id.map(
        lambda s: "test" if s in flagged["test"] else "val" if s in flagged["val"] else "train"
    )
    assert (stays.split == expected).all()
    subjects = set(stays.subject_id)
    assert stays.drop_duplicates("subject_id").split.value_counts().to_dict() == {"train": 64, "test": 18, "val": 9}
    report = json.loads((tmp_path / "split.json").read_text())
    assert report["method"] == "medfuse"
    assert report["listed_subjects"] == {"test": 9409, "val": 3730}
    assert report["listed_subjects_missing_from_cohort"] == {
        "test": len(flagged["test"] - subjects),
        "val": len(flagged["val"] - subjects),
    }
    listed = set(lists["test"].subject_id) | set(lists["val"].subject_id)
    assert report["cohort_subjects_in_neither_list"] == len(subjects - listed) == 0  # all 91 are v1.0 subjects
    assert report["stays"] == stays.split.value_counts().to_dict()
    # the same cohort and labels as the random split; only the split differs
    random = pd.read_parquet(demo_cohort / "stays.parquet")
    pd.testing.assert_frame_equal(stays.drop(columns="split"), random.drop(columns="split"))
    assert json.loads((demo_cohort / "split.json").read_text())["method"] == "random"


def test_medfuse_split_of_unlisted_subjects():
    """Subjects that MedFuse's v1.0 lists do not know (newer MIMIC-IV versions) go to train."""
    test = pd.read_csv(RESOURCES / "testset_iv.csv", header=None, names=["subject_id", "flag"])
    val = pd.read_csv(RESOURCES / "valset_iv.csv", header=None, names=["subject_id", "flag"])
    in_test, in_val = int(test.subject_id[test.flag == 1].iloc[0]), int(val.subject_id[val.flag == 1].iloc[0])
    listed_train = int(val.subject_id[val.flag == 0].iloc[0])
    unlisted = [int(s) for s in range(19_990_000, 19_990_050) if s not in set(test.subject_id)][:2]
    subjects, names, report = split_subjects_medfuse([unlisted[1], in_test, in_val, listed_train, unlisted[0], in_test])
    assert dict(zip(subjects.tolist(), names.tolist())) == {
        in_test: "test",
        in_val: "val",
        listed_train: "train",
        unlisted[0]: "train",
        unlisted[1]: "train",
    }
    assert report["cohort_subjects_in_neither_list"] == 2
    assert report["listed_subjects_missing_from_cohort"] == {"test": 9408, "val": 3729}


def test_label_modes_written_by_the_cohort_stage(tmp_path, demo_db, cfg):
    """tables/label_modes.csv: each label's prevalence under both label sources equals the one
    of a cohort built with that source; the paper's Table 3 prevalence beside them."""
    built = {}
    for source in ("ahrq", "medfuse"):
        one = copy.deepcopy(cfg)
        one["cohort"]["labels"] = source
        build_cohort(demo_db, tmp_path / source, one, tables_dir=tmp_path / source / "tables")
        built[source] = pd.read_parquet(tmp_path / source / "stays.parquet")[list(PHENOTYPES)].mean()
    modes = pd.read_csv(tmp_path / "ahrq" / "tables" / "label_modes.csv")
    assert modes.label.tolist() == list(PHENOTYPES)
    for source in ("ahrq", "medfuse"):
        assert np.allclose(modes[f"prevalence_{source}"], built[source].to_numpy(), atol=1e-6)
        assert (modes[f"positives_{source}"] == (built[source] * 112).round().astype(int).to_numpy()).all()
    assert np.allclose(modes.difference_ahrq_minus_medfuse, modes.prevalence_ahrq - modes.prevalence_medfuse, atol=1e-6)
    paper = pd.read_csv(PAPER_TABLE3)
    assert modes.prevalence_paper.tolist() == paper.prevalence.tolist()  # the same alphabetical order
    other = pd.read_csv(tmp_path / "medfuse" / "tables" / "label_modes.csv")
    pd.testing.assert_frame_equal(modes, other)  # the choice changes stays.parquet, not this table
    md = (tmp_path / "ahrq" / "tables" / "label_modes.md").read_text()
    assert "| Essential hypertension |" in md and "This run's labels: ahrq" in md
    assert (tmp_path / "ahrq" / "tables" / "label_modes.tex").exists()


def test_bad_configuration(tmp_path, demo_db, cfg):
    for section, key, value, name in [
        ("cohort", "labels", "icd11", "cohort.labels"),
        ("cohort", "labels", "gem", "cohort.labels"),
        ("split", "method", "stratified", "split.method"),
        ("split", "fractions", [0.5, 0.5, 0.5], "split.fractions"),
        ("cohort", "hours", -1, "cohort.hours"),
    ]:
        bad = copy.deepcopy(cfg)
        bad[section][key] = value
        with pytest.raises(UserError, match=name.replace(".", r"\.")):
            build_cohort(demo_db, tmp_path, bad)
    with pytest.raises(UserError, match="not found"):
        build_cohort(tmp_path / "missing.duckdb", tmp_path, cfg)
    assert not list(tmp_path.iterdir())


# ---- CXR matching on hand-made metadata placed around real demo stays ----


def _study_time(t: pd.Timestamp) -> str:
    # MIMIC-CXR stores StudyTime as a number: leading zeros are lost (00:45:06 -> "4506.000")
    return f"{int(t.strftime('%H%M%S'))}.{t.microsecond // 1000:03d}"


@pytest.fixture(scope="module")
def cxr_case(tmp_path_factory, demo_dir, cfg):
    _, stays = _pandas_cohort(demo_dir, 18)
    single = stays.groupby("subject_id").filter(lambda g: len(g) == 1)
    all_stays = pd.read_csv(demo_dir / "icu" / "icustays.csv.gz")
    single = single[single.subject_id.isin(all_stays.subject_id.value_counts().loc[lambda c: c == 1].index)]
    a, b, c, d = (single.sort_values("stay_id").iloc[k] for k in range(4))
    t = {s.stay_id: pd.Timestamp(s.intime) for s in (a, b, c, d)}
    h48 = timedelta(hours=48)
    rows = [  # dicom_id, subject, study, view, time
        ("a-1", a.subject_id, 51, "AP", t[a.stay_id]),
        ("a-2", a.subject_id, 52, "AP", t[a.stay_id] + h48),  # last moment of the window: chosen
        ("a-3", a.subject_id, 53, "AP", t[a.stay_id] + h48 + timedelta(seconds=1)),
        ("a-4", a.subject_id, 54, "PA", t[a.stay_id] + timedelta(hours=24)),
        ("b-0", b.subject_id, 60, "AP", t[b.stay_id] + timedelta(hours=2)),
        ("b-1", b.subject_id, 61, "AP", t[b.stay_id] + timedelta(hours=5)),
        ("b-2", b.subject_id, 61, "AP", t[b.stay_id] + timedelta(hours=5)),  # same time: larger id wins
        ("c-0", c.subject_id, 70, "AP", t[c.stay_id] - timedelta(seconds=1)),
        ("c-1", c.subject_id, 71, "AP", t[c.stay_id]),  # exactly at intime: inside
        ("d-1", d.subject_id, 80, "AP", t[d.stay_id] + h48 + timedelta(seconds=1)),
        ("d-2", d.subject_id, 81, "PA", t[d.stay_id] + timedelta(hours=1)),
        ("x-1", 19999999, 90, "AP", pd.Timestamp("2180-01-01 00:45:06.968")),  # nobody's stay
    ]
    cxr = tmp_path_factory.mktemp("cxr")
    meta = pd.DataFrame(
        {
            "dicom_id": [r[0] for r in rows],
            "subject_id": [r[1] for r in rows],
            "study_id": [50_000_000 + r[2] for r in rows],
            "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)",
            "ViewPosition": [r[3] for r in rows],
            "Rows": 3056,
            "Columns": 2544,
            "StudyDate": [r[4].strftime("%Y%m%d") for r in rows],
            "StudyTime": [_study_time(r[4]) for r in rows],
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PORTABLE AP)",
            "ViewCodeSequence_CodeMeaning": "antero-posterior",
            "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        }
    )
    with gzip.open(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as fh:
        meta.to_csv(fh, index=False)
    out = tmp_path_factory.mktemp("cxr_run")
    ingest(demo_dir, cxr, out / "db.duckdb", out / "manifest.json")
    build_cohort(out / "db.duckdb", out / "cohort", cfg)
    result = pd.read_parquet(out / "cohort" / "stays.parquet").set_index("stay_id")
    return out, result, (a, b, c, d)


def test_cxr_metadata_times(cxr_case):
    out, _, _ = cxr_case
    with duckdb.connect(str(out / "db.duckdb"), read_only=True) as con:
        (when,) = con.execute("SELECT study_datetime FROM cxr_metadata WHERE dicom_id = 'x-1'").fetchall()[0]
        assert con.execute("SELECT count(*) FROM cxr_metadata").fetchall() == [(12,)]
    assert pd.Timestamp(when) == pd.Timestamp("2180-01-01 00:45:06.968")


def test_cxr_matching(cxr_case):
    _, result, (a, b, c, d) = cxr_case
    assert result.has_cxr.sum() == 3
    assert result.loc[a.stay_id, "dicom_id"] == "a-2"
    assert result.loc[a.stay_id, "cxr_time"] == pd.Timestamp(a.intime) + timedelta(hours=48)
    sid = str(a.subject_id)
    assert result.loc[a.stay_id, "cxr_path"] == f"files/p{sid[:2]}/p{sid}/s50000052/a-2.jpg"
    assert result.loc[a.stay_id, "study_id"] == 50_000_052
    assert result.loc[b.stay_id, "dicom_id"] == "b-2"
    assert result.loc[c.stay_id, "dicom_id"] == "c-1"
    assert result.loc[c.stay_id, "cxr_time"] == pd.Timestamp(c.intime)
    assert not result.loc[d.stay_id, "has_cxr"] and pd.isna(result.loc[d.stay_id, "cxr_path"])


def test_cxr_view_setting(tmp_path, cxr_case, cfg):
    out, _, (a, b, c, d) = cxr_case
    pa_cfg = copy.deepcopy(cfg)
    pa_cfg["cohort"]["cxr_view"] = "PA"
    build_cohort(out / "db.duckdb", tmp_path, pa_cfg)
    result = pd.read_parquet(tmp_path / "stays.parquet").set_index("stay_id")
    assert result.loc[result.has_cxr, "dicom_id"].to_dict() == {a.stay_id: "a-4", d.stay_id: "d-2"}


# ---- issue 26: a cohort no run could train on fails at once, naming the count and the cause ----


@pytest.fixture(scope="module")
def subset_cohort(tmp_path_factory, demo_subset_dir, cfg) -> pd.DataFrame:
    """The vendored demo subset's cohort (no CXR metadata: nothing to match, no error)."""
    out = tmp_path_factory.mktemp("subset")
    ingest(demo_subset_dir, None, out / "db.duckdb", out / "manifest.json")
    build_cohort(out / "db.duckdb", out / "cohort", cfg)
    return pd.read_parquet(out / "cohort" / "stays.parquet")


def _ingest_with_cxr(root: Path, demo_subset_dir: Path, rows: list[tuple]) -> Path:
    """The vendored demo subset ingested with CXR metadata of (dicom_id, subject, view, time) rows."""
    cxr = root / "cxr"
    cxr.mkdir(parents=True)
    with gzip.open(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as fh:
        fh.write("dicom_id,subject_id,study_id,ViewPosition,StudyDate,StudyTime\n")
        for k, (dicom_id, subject, view, t) in enumerate(rows):
            fh.write(f"{dicom_id},{subject},{50_000_000 + k},{view},{t:%Y%m%d},{_study_time(t)}\n")
    ingest(demo_subset_dir, cxr, root / "db.duckdb", root / "manifest.json")
    return root / "db.duckdb"


@pytest.mark.parametrize(
    "case,cause",
    [
        (
            "other_subjects",
            "none of the CXR metadata's {n} images is of a cohort subject (data.mimic_cxr_dir holds the "
            "metadata of other patients: another MIMIC-CXR copy or a subset?)",
        ),
        (
            "other_view",
            "{n} images are of cohort subjects, none with ViewPosition 'AP' (cohort.cxr_view; their views: "
            "LATERAL, PA)",
        ),
        (
            "other_dates",
            "{n} AP images are of cohort subjects, none taken within 48 h after an ICU admission "
            "(cohort.hours; MIMIC-IV and MIMIC-CXR of other releases, whose dates are shifted differently?)",
        ),
    ],
)
def test_no_cxr_match_at_all_fails_the_cohort_naming_the_cause(
    tmp_path, demo_subset_dir, subset_cohort, cfg, case, cause
):
    """Issue-26 probe: a cohort with 0 CXR matches (a wrong mimic_cxr_dir, metadata of other
    subjects) logged INFO lines; every training run then failed late."""
    rows = []
    for k, stay in enumerate(subset_cohort.itertuples()):
        subject = 19_000_000 + k if case == "other_subjects" else stay.subject_id
        view = ("PA", "LATERAL")[k % 2] if case == "other_view" else "AP"
        shift = timedelta(days=400) if case == "other_dates" else timedelta(hours=2)
        rows.append((f"d{k}", subject, view, pd.Timestamp(stay.intime) + shift))
    db = _ingest_with_cxr(tmp_path, demo_subset_dir, rows)
    with pytest.raises(UserError) as err:
        build_cohort(db, tmp_path / "cohort", cfg)
    n = len(subset_cohort)
    assert str(err.value) == (
        f"{db}: 0 of the cohort's {n} stays has a chest X-ray (view AP) taken within 48 h of ICU admission: "
        + cause.format(n=n)
    )
    assert not (tmp_path / "cohort").exists()
    # the same metadata shifted into the window matches: the check is about the data, not the code
    if case == "other_dates":
        ok = _ingest_with_cxr(
            tmp_path / "ok", demo_subset_dir, [(d, s, v, t - timedelta(days=400)) for d, s, v, t in rows]
        )
        build_cohort(ok, tmp_path / "ok" / "cohort", cfg)
        assert pd.read_parquet(tmp_path / "ok" / "cohort" / "stays.parquet").has_cxr.all()


def test_an_empty_split_fails_the_cohort_naming_the_counts(tmp_path, demo_subset_dir, cfg):
    """The same for an empty train, val or test split of the full dataset: 7 subjects split 98:1:1."""
    out = tmp_path / "db"
    out.mkdir()
    ingest(demo_subset_dir, None, out / "db.duckdb", out / "manifest.json")
    few = copy.deepcopy(cfg)
    few["split"]["fractions"] = [0.98, 0.01, 0.01]
    with pytest.raises(UserError) as err:
        build_cohort(out / "db.duckdb", tmp_path / "cohort", few)
    assert str(err.value).startswith("cohort: the val and test splits are empty (train ")
    assert str(err.value).endswith("split.method random): more subjects, or larger split.fractions for them")
    assert not (tmp_path / "cohort").exists()
