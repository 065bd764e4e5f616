"""The built-in MIMIC-shaped generator: real layouts, determinism, id formats, planted structure.

Layouts are checked against the real MIMIC-IV v2.2 demo and the MIMIC-CXR metadata format file
in ../shared; labels are re-derived here from diagnoses_icd with the CCS definitions and AHRQ's
CCS for ICD-10-CM, independently of the generator's own code pools.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from drfuse.errors import UserError
from drfuse.phenotypes import PHENOTYPES, RESOURCES, ccs_definitions
from drfuse.synth import generate
from drfuse.synth.settings import KEYS, from_config_yaml

SETTINGS = from_config_yaml(n_subjects=400, seed=3, image_size=[48, 40])
IV_FILES = [
    "hosp/patients.csv.gz",
    "hosp/admissions.csv.gz",
    "hosp/transfers.csv.gz",
    "hosp/diagnoses_icd.csv.gz",
    "hosp/labevents.csv.gz",
    "hosp/d_labitems.csv.gz",
    "hosp/d_icd_diagnoses.csv.gz",
    "icu/icustays.csv.gz",
    "icu/chartevents.csv.gz",
    "icu/d_items.csv.gz",
]
CXR_META = "mimic-cxr-2.0.0-metadata.csv.gz"
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        return next(csv.reader(fh))


def read(path: Path) -> pl.DataFrame:
    """All columns as strings, empty fields as nulls: what a loader of the real files sees."""
    return pl.read_csv(path, infer_schema=False)


def ts(col: str) -> pl.Expr:
    return pl.col(col).str.strptime(pl.Datetime, "%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "synth"
    generate(out, SETTINGS)
    return out


@pytest.fixture(scope="module")
def tables(synth) -> dict[str, pl.DataFrame]:
    iv = synth / "mimic-iv"
    names = ["patients", "admissions", "transfers", "diagnoses_icd", "labevents"]
    out = {n: read(iv / "hosp" / f"{n}.csv.gz") for n in names}
    out.update({n: read(iv / "icu" / f"{n}.csv.gz") for n in ["icustays", "chartevents"]})
    out["cxr"] = read(synth / "mimic-cxr-jpg" / CXR_META)
    return out


def test_files_and_columns_match_the_real_releases(synth, demo_dir, cxr_samples_dir):
    # the answer key sits beside the MIMIC-shaped trees, never inside them
    assert sorted(p.name for p in synth.iterdir()) == ["answer_key", "mimic-cxr-jpg", "mimic-iv"]
    assert sorted(p.name for p in (synth / "answer_key").iterdir()) == [
        "channels.parquet",
        "label_groups.csv",
        "latent_labels.parquet",
        "mortality.csv",
        "mortality_evidence.parquet",
    ]
    written = sorted(str(p.relative_to(synth)) for p in synth.rglob("*.csv.gz"))
    assert written == sorted([f"mimic-iv/{f}" for f in IV_FILES] + [f"mimic-cxr-jpg/{CXR_META}"])
    for name in IV_FILES:
        assert header(synth / "mimic-iv" / name) == header(demo_dir / name), name
    real_cxr = cxr_samples_dir / "mimic-cxr-format-SYNTHETIC" / "mimic-cxr-2.0.0-metadata.csv"
    assert header(synth / "mimic-cxr-jpg" / CXR_META) == header(real_cxr)
    # The dictionaries are the demo's own files.
    for name in ["hosp/d_labitems.csv.gz", "hosp/d_icd_diagnoses.csv.gz", "icu/d_items.csv.gz"]:
        assert (synth / "mimic-iv" / name).read_bytes() == (demo_dir / name).read_bytes()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    """Also whatever the number of processes drawing the images (b: two)."""
    small = {**SETTINGS, "n_subjects": 30, "image_size": [40, 32]}
    generate(tmp_path / "a", small)
    generate(tmp_path / "b", small, workers=2)
    generate(tmp_path / "c", {**small, "seed": 4})
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert any(f.suffix == ".jpg" for f in files_a)
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    chart = Path("mimic-iv/icu/chartevents.csv.gz")
    assert (tmp_path / "a" / chart).read_bytes() != (tmp_path / "c" / chart).read_bytes()
    # gzip header: no file name (FLG = 0) and mtime 0.
    head = (tmp_path / "a" / chart).read_bytes()[:10]
    assert head[3] == 0 and head[4:8] == b"\0\0\0\0"
    assert not list(tmp_path.glob(".*partial")), "the temporary folder must be renamed away"


def test_id_and_time_formats(tables):
    for name, col, pattern in [
        ("patients", "subject_id", r"^1\d{7}$"),
        ("admissions", "hadm_id", r"^2\d{7}$"),
        ("icustays", "stay_id", r"^3\d{7}$"),
        ("transfers", "transfer_id", r"^3\d{7}$"),
        ("cxr", "study_id", r"^5\d{7}$"),
        ("cxr", "subject_id", r"^1\d{7}$"),
        ("cxr", "dicom_id", r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$"),
        ("cxr", "StudyDate", r"^\d{8}$"),
        ("cxr", "StudyTime", r"^\d{1,6}\.\d{1,3}$"),
    ]:
        assert tables[name][col].str.contains(pattern).all(), (name, col)
    assert tables["patients"]["subject_id"].is_unique().all()
    assert tables["admissions"]["hadm_id"].is_unique().all()
    assert tables["icustays"]["stay_id"].is_unique().all()
    # Each stay_id is the transfer_id of its first ICU transfer, as in MIMIC.
    assert set(tables["icustays"]["stay_id"]) <= set(tables["transfers"]["transfer_id"])
    for name, cols in [
        ("admissions", ["admittime", "dischtime"]),
        ("icustays", ["intime", "outtime"]),
        ("chartevents", ["charttime", "storetime"]),
        ("labevents", ["charttime", "storetime"]),
    ]:
        for col in cols:
            assert tables[name][col].str.contains(TIME.pattern).all(), (name, col)
    assert tables["patients"]["dod"].drop_nulls().str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    stays = tables["icustays"].with_columns(ts("intime"), ts("outtime"))
    los = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 86400
    assert np.allclose(los.to_numpy(), stays["los"].cast(pl.Float64).to_numpy(), atol=1e-9)
    # Study date and time decode to real datetimes (time as a number: leading zeros dropped).
    for date, time in tables["cxr"].select("StudyDate", "StudyTime").iter_rows():
        whole = f"{int(float(time)):06d}"
        datetime.strptime(date + whole, "%Y%m%d%H%M%S")


def test_icd_codes_are_real_and_versioned_by_year(tables, demo_dir):
    dx = tables["diagnoses_icd"]
    real = read(demo_dir / "hosp" / "d_icd_diagnoses.csv.gz").select("icd_code", "icd_version")
    assert dx.join(real, on=["icd_code", "icd_version"], how="anti").height == 0
    assert dx["icd_code"].str.starts_with("0").any(), "ICD-9 codes keep their leading zeros"
    years = tables["admissions"].select("hadm_id", ts("admittime").dt.year().alias("year"))
    versions = dx.join(years, on="hadm_id").with_columns((pl.col("year") >= SETTINGS["icd10_from_year"]).alias("late"))
    assert (versions.filter(pl.col("late"))["icd_version"] == "10").all()
    assert (versions.filter(~pl.col("late"))["icd_version"] == "9").all()
    assert versions["late"].mean() > 0.2 and versions["late"].mean() < 0.8
    # seq_num runs 1..n within each admission.
    seq = dx.group_by("hadm_id").agg(pl.col("seq_num").cast(pl.Int64).sort().alias("s"))
    assert all(list(s) == list(range(1, len(s) + 1)) for s in seq["s"])


def admission_labels(dx: pl.DataFrame) -> pl.DataFrame:
    """Labels per admission from ICD-9 (CCS) and ICD-10 (AHRQ's CCS for ICD-10-CM, by category
    name): the cohort's default rule."""
    group_of = {c: name for name, g in ccs_definitions().items() if name in PHENOTYPES for c in g["codes"]}
    with gzip.open(RESOURCES / "ccs_dx_icd10cm_2019_1.csv.gz", "rt") as fh:
        ahrq = {r["icd10cm_code"]: r["ccs_category_description"] for r in csv.DictReader(fh)}
    rows = []
    for hadm, code, version in dx.select("hadm_id", "icd_code", "icd_version").iter_rows():
        group = group_of.get(code) if version == "9" else ahrq.get(code)
        if group in PHENOTYPES:
            rows.append((hadm, group))
    hit = pl.DataFrame(rows, schema=["hadm_id", "label"], orient="row").unique()
    wide = hit.with_columns(pl.lit(1).alias("v")).pivot(on="label", index="hadm_id", values="v")
    coded = dx.select("hadm_id").unique()
    return coded.join(wide, on="hadm_id", how="left").fill_null(0)


def test_planted_prevalences_and_cxr_share(tables, shared_dir):
    labels = admission_labels(tables["diagnoses_icd"])
    paper = dict(pl.read_csv(shared_dir / "paper" / "table3.csv").select("label", "prevalence").iter_rows())
    order = sorted(paper)  # the paper's labels are the phenotypes in the same alphabetical order
    assert len(order) == len(PHENOTYPES) == 25
    for short, name in zip(order, PHENOTYPES):
        prevalence = labels[name].mean() if name in labels.columns else 0.0
        assert abs(prevalence - paper[short]) < 0.08, (name, prevalence, paper[short])
    # Correlated phenotypes: sepsis and shock co-occur more than by chance.
    sepsis, shock = labels["Septicemia (except in labor)"], labels["Shock"]
    assert ((sepsis == 1) & (shock == 1)).mean() > 1.5 * sepsis.mean() * shock.mean()

    stays = tables["icustays"].select("stay_id", "subject_id", ts("intime"))
    cxr = (
        tables["cxr"]
        .filter(pl.col("ViewPosition") == "AP")
        .with_columns(
            (pl.col("StudyDate") + pl.col("StudyTime").cast(pl.Float64).cast(pl.Int64).cast(pl.String).str.zfill(6))
            .str.strptime(pl.Datetime, "%Y%m%d%H%M%S")
            .alias("t")
        )
    )
    pairs = stays.join(cxr, on="subject_id").with_columns(
        ((pl.col("t") >= pl.col("intime")) & (pl.col("t") <= pl.col("intime") + timedelta(hours=48))).alias("inside")
    )
    per_stay = pairs.group_by("stay_id").agg(
        pl.col("inside").sum().alias("n_inside"), (~pl.col("inside")).sum().alias("n_out")
    )
    with_cxr = per_stay.filter(pl.col("n_inside") > 0).height / stays.height
    assert 0.12 < with_cxr < 0.26, with_cxr
    assert (per_stay["n_inside"] >= 2).any(), "several AP images in one stay's window"
    assert (per_stay["n_out"] > 0).any(), "AP images outside the 48 h window"
    assert set(tables["cxr"]["ViewPosition"]) == {"AP", "PA", "LATERAL"}


def test_realistic_mess(tables):
    stays = tables["icustays"].with_columns(ts("intime"), ts("outtime"))
    assert (stays["first_careunit"] != stays["last_careunit"]).any()
    assert stays.group_by("hadm_id").len()["len"].max() >= 2
    short = ((stays["outtime"] - stays["intime"]).dt.total_seconds() < 48 * 3600).mean()
    assert 0.2 < short < 0.8
    assert (tables["patients"]["anchor_age"].cast(pl.Int64) < 18).any()
    no_dx = tables["admissions"].join(tables["diagnoses_icd"], on="hadm_id", how="anti")
    assert 0 < no_dx.height < 0.1 * tables["admissions"].height
    chart = tables["chartevents"]
    assert chart.is_duplicated().any()
    hr = chart.filter(pl.col("itemid") == "220045")["valuenum"].cast(pl.Float64)
    assert hr.is_in([0.0, 1000.0]).any()
    # Temperatures charted in the wrong unit: Celsius-sized numbers under the Fahrenheit item.
    temp_f = chart.filter(pl.col("itemid") == "223761")["valuenum"].cast(pl.Float64)
    assert (temp_f < 45).any() and (temp_f > 90).mean() > 0.95


def test_items_units_and_text_values(tables):
    chart = tables["chartevents"]
    info = json.loads((RESOURCES / "channel_info.json").read_text())
    units = dict(chart.group_by("itemid").agg(pl.col("valueuom").unique()).iter_rows())
    expected = {
        "223761": ["°F"],
        "223762": ["°C"],
        "226707": ["Inch"],
        "226730": ["cm"],
        "224639": ["kg"],
        "226512": ["kg"],
        "226531": [None],
        "220045": ["bpm"],
        "220277": ["%"],
        "223835": [None],
        "220739": [None],
        "223951": [None],
    }
    for item, unit in expected.items():
        assert units[item] == unit, item
    for item, channel in [
        ("220739", "Glascow coma scale eye opening"),
        ("223900", "Glascow coma scale verbal response"),
        ("223901", "Glascow coma scale motor response"),
    ]:
        rows = chart.filter(pl.col("itemid") == item).select("value", "valuenum").unique()
        mapping = info[channel]["values"]
        for text, score in rows.iter_rows():
            assert text in mapping, (item, text)
            # channel_info scores eye 'None' as 0 (MIMIC-III); MIMIC-IV charts it with valuenum 1.
            assert float(score) == (1 if text == "None" else mapping[text]), (item, text, score)
    refill = chart.filter(pl.col("itemid").is_in(["223951", "224308"]))
    assert set(refill["value"]) == {"Normal <3 Seconds", "Abnormal >3 Seconds"}
    assert refill["valuenum"].is_null().all()
    fio2 = chart.filter(pl.col("itemid") == "223835")["valuenum"].cast(pl.Float64)
    assert fio2.max() <= 100 and (fio2 >= 21).mean() > 0.9 and (fio2 < 1).any()
    heights = (
        chart.filter(pl.col("itemid").is_in(["226707", "226730"]))
        .group_by("itemid")
        .agg(pl.col("valuenum").cast(pl.Float64).median())
    )
    median = dict(heights.iter_rows())
    assert 60 < median["226707"] < 72 and 155 < median["226730"] < 185
    labs = tables["labevents"]
    assert {"50931", "50820", "50817", "50809"} <= set(labs["itemid"])
    assert labs["labevent_id"].cast(pl.Int64).is_unique().all()
    assert (labs.filter(pl.col("itemid") == "50820")["valueuom"] == "units").all()


def test_phenotypes_show_in_the_ehr(tables):
    labels = admission_labels(tables["diagnoses_icd"])
    chart = tables["chartevents"].join(labels, on="hadm_id")

    def mean_by(item: str, label: str) -> tuple[float, float]:
        rows = chart.filter(pl.col("itemid") == item).with_columns(pl.col("valuenum").cast(pl.Float64))
        pos = rows.filter(pl.col(label) == 1)["valuenum"].median()
        neg = rows.filter(pl.col(label) == 0)["valuenum"].median()
        return pos, neg

    pos, neg = mean_by("220045", "Septicemia (except in labor)")
    assert pos > neg + 8
    pos, neg = mean_by("220277", "Respiratory failure; insufficiency; arrest (adult)")
    assert pos < neg - 2
    pos, neg = mean_by("225664", "Diabetes mellitus with complications")
    assert pos > neg + 50
    pos, neg = mean_by("223901", "Acute cerebrovascular disease")
    assert pos < neg


def test_images_exist_and_show_their_signs(synth, tables):
    cxr, root = tables["cxr"], synth / "mimic-cxr-jpg"
    labels = admission_labels(tables["diagnoses_icd"])
    stays = tables["icustays"].select("subject_id", "hadm_id")
    brightest = []
    for dicom, subject, study, rows, cols in cxr.select(
        "dicom_id", "subject_id", "study_id", "Rows", "Columns"
    ).iter_rows():
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L" and im.size == (int(cols), int(rows))
            pixels = np.asarray(im, dtype=np.float32)
        # The pacemaker sits in the upper chest on the image's right.
        h, w = pixels.shape
        brightest.append((subject, pixels[int(0.1 * h) : int(0.32 * h), int(0.6 * w) : int(0.9 * w)].max()))
    n_jpg = sum(1 for _ in root.rglob("*.jpg"))
    assert n_jpg == cxr.height
    # Subjects with a conduction disorder (pacemaker sign) have brighter upper-right spots.
    conduction = stays.join(labels, on="hadm_id").group_by("subject_id").agg(pl.col("Conduction disorders").max())
    spots = pl.DataFrame(brightest, schema=["subject_id", "spot"], orient="row").join(conduction, on="subject_id")
    pos = spots.filter(pl.col("Conduction disorders") == 1)["spot"].mean()
    neg = spots.filter(pl.col("Conduction disorders") == 0)["spot"].mean()
    assert pos > neg + 20, (pos, neg)


@pytest.mark.parametrize(
    "bad",
    [
        {"n_subjects": 0},
        {"n_subjects": 5_000_001},
        {"image_size": [64]},
        {"image_size": [64, 8193]},
        {"first_year": 1999},
        {"icd10_from_year": 2701},
        {"images": "no"},
        {"cxr_share": 0},
        {"cxr_share": 0.9},
        {"year_span": 201},
        {"jpeg_quality": 9},
        {"gzip_level": 10},
        {"chunk_stays": 0},
        {"modal_inconsistency": ["Shock", "Shock"]},
        {"mortality_signal": 1},
    ],
)
def test_the_schema_refuses_a_bad_setting_naming_it(bad):
    """The generator's settings are checked once, by the schema, as the workflow and CLI check them."""
    (key,) = bad
    with pytest.raises(UserError, match=re.escape(f"synth.{key}")):
        from_config_yaml(**bad)


def test_the_generator_takes_a_whole_section_and_names_what_is_missing(tmp_path):
    """config.yaml's synth section holds every setting (the schema requires each at the top level);
    a section without one fails before anything is written, naming it."""
    from drfuse import config as config_mod

    assert set(from_config_yaml()) == set(KEYS) == set(config_mod.schema()["properties"]["synth"]["required"])
    with pytest.raises(UserError, match=r"synth\.cxr_share missing"):
        generate(tmp_path / "x", {key: value for key, value in SETTINGS.items() if key != "cxr_share"})
    assert not (tmp_path / "x").exists()


def test_every_label_effect_is_declared_with_the_items_that_show_it(tables):
    """The answer key trusts VARIABLE_ITEMS and SIGNALS: every item of the generated data that the
    features stage reads must be declared there, and every declared item must be generated."""
    from drfuse.data.items import item_to_variable
    from drfuse.synth.events import SIGNALS, VARIABLE_ITEMS

    declared = {i for items in VARIABLE_ITEMS.values() for i in items} | {
        i for *_, items in SIGNALS.values() for i in items
    }
    generated = {int(i) for name in ("chartevents", "labevents") for i in tables[name]["itemid"].unique()}
    read_by_features = {i for i in generated if i in item_to_variable()}
    # height is charted but no label moves it; everything else the model reads must be declared
    assert read_by_features - declared == {226707, 226730}
    assert declared <= generated, declared - generated


def test_answer_key_groups_follow_the_generators_tables(synth, monkeypatch):
    from drfuse.synth import answer_key, cxr, events

    key = pl.read_csv(synth / "answer_key" / "label_groups.csv")
    assert key["label"].to_list() == list(PHENOTYPES)
    assert key.equals(answer_key.label_groups())
    assert answer_key.read_label_groups(synth / "answer_key" / "label_groups.csv") == dict(
        key.select("label", "group").iter_rows()
    )
    group = dict(key.select("label", "group").iter_rows())
    signs = {PHENOTYPES[k] for k, *_ in cxr.SIGN_MODEL.values()}
    assert {lab for lab, g in group.items() if g in ("cxr", "both")} == signs
    assert group["Conduction disorders"] == "cxr"  # pacemaker only
    assert group["Pneumonia (except that caused by tuberculosis or sexually transmitted disease)"] == "both"
    # creatinine is generated (CKD, renal failure) but is none of the 17 channels; renal failure
    # also lowers the pH, a channel
    assert group["Chronic kidney disease"] == "none"
    assert group["Acute and unspecified renal failure"] == "ehr"
    assert "pH" in key.filter(pl.col("label") == "Acute and unspecified renal failure")["ehr_channels"][0]

    # a changed generator changes the key: a new sign for shock, creatinine charted under a channel
    monkeypatch.setitem(cxr.SIGN_MODEL, "line", (PHENOTYPES.index("Shock"), 0.5, 0.1))
    monkeypatch.setitem(events.VARIABLE_ITEMS, "creat", (50912, 220621))
    changed = dict(answer_key.label_groups().select("label", "group").iter_rows())
    assert changed["Shock"] == "both" and changed["Chronic kidney disease"] == "ehr"
    assert sum(changed[lab] != group[lab] for lab in PHENOTYPES) == 2


def test_latent_labels_are_the_coded_labels_keyed_by_mimic_ids(synth, tables):
    latent = pl.read_parquet(synth / "answer_key" / "latent_labels.parquet")
    stays = tables["icustays"].select(pl.col("subject_id", "hadm_id", "stay_id").cast(pl.Int64))
    assert latent.columns == ["subject_id", "hadm_id", "stay_id", *PHENOTYPES]
    assert latent.select("subject_id", "hadm_id", "stay_id").equals(stays.sort("stay_id"))
    assert all(latent[lab].dtype == pl.Int8 for lab in PHENOTYPES)
    # the ICD codes carry the latent labels of the admissions that were coded
    coded = admission_labels(tables["diagnoses_icd"]).with_columns(pl.col("hadm_id").cast(pl.Int64))
    joined = latent.join(coded, on="hadm_id", suffix="_icd")
    assert joined.height > 0.9 * latent.height
    for lab in PHENOTYPES:
        icd = joined[f"{lab}_icd"] if f"{lab}_icd" in joined.columns else pl.Series([0] * joined.height)
        agreement = (joined[lab].cast(pl.Int64) == icd.cast(pl.Int64)).mean()
        assert agreement > 0.97, (lab, agreement)


@pytest.mark.parametrize(
    "text, message",
    [
        ("label,group\nShock,ehr\n", "missing"),
        ("label,kind\n", "missing column"),
        (
            "".join(
                ["label,group\n"] + [f'"{lab}",{"eeg" if k == 0 else "none"}\n' for k, lab in enumerate(PHENOTYPES)]
            ),
            "group must be one of",
        ),
    ],
)
def test_a_bad_answer_key_names_the_file(tmp_path, text, message):
    from drfuse.synth.answer_key import read_label_groups

    path = tmp_path / "label_groups.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        read_label_groups(path)
    assert str(path) in str(err.value)
    with pytest.raises(UserError, match="not found"):
        read_label_groups(tmp_path / "absent.csv")


PNEUMONIA = "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)"


def test_modal_inconsistency_shows_each_positive_in_one_modality(tmp_path, monkeypatch):
    """`synth.modal_inconsistency`: each positive of the chosen labels shows its signal in the image
    or in the series, drawn per admission and written to the answer key; everything else of the
    data is as without it."""
    from drfuse.synth import answer_key, channels, cxr

    chosen = channels.eligible_labels()
    assert chosen == [
        "Chronic obstructive pulmonary disease and bronchiectasis",
        "Congestive heart failure; nonhypertensive",
        PNEUMONIA,
    ]  # the generator's `both` labels
    drawn = {}  # the labels each run's images are drawn from

    def capture(name):
        def write_images(root, meta, labels, *args, **kwargs):
            drawn[name] = labels

        return write_images

    # deaths drawn from the stays' evidence (synth.mortality_signal) would follow what each modality shows
    settings = {**SETTINGS, "n_subjects": 1500, "seed": 11, "mortality_signal": False}
    for name, labels in (("plain", []), ("mixed", chosen)):
        monkeypatch.setattr(cxr, "write_images", capture(name))
        generate(tmp_path / name, {**settings, "modal_inconsistency": labels})
    plain, mixed = tmp_path / "plain", tmp_path / "mixed"

    key = answer_key.read_label_groups(mixed / "answer_key" / "label_groups.csv")
    assert [lab for lab, g in key.items() if g == "inconsistent"] == chosen
    assert answer_key.read_label_groups(plain / "answer_key" / "label_groups.csv")[PNEUMONIA] == "both"
    assert (
        answer_key.read_channels(plain / "answer_key" / "label_groups.csv", {lab: "both" for lab in PHENOTYPES}).height
        == 0
    )

    latent = pl.read_parquet(mixed / "answer_key" / "latent_labels.parquet")
    channel = answer_key.read_channels(mixed / "answer_key" / "label_groups.csv", key)
    assert channel.height == latent.height * len(chosen)
    for label in chosen:
        joined = channel.filter(pl.col("label") == label).join(latent.select("stay_id", label), on="stay_id")
        positive = joined.filter(pl.col(label) == 1)
        assert set(joined.filter(pl.col(label) == 0)["channel"]) == {"none"}
        assert set(positive["channel"]) == {"ehr", "cxr"}
        share = (positive["channel"] == "cxr").mean()
        assert abs(share - 0.5) < 4 * (0.25 / positive.height) ** 0.5, (label, share)

    # the images are drawn from the labels of image-channel positives only; the series' label
    # effects follow the series-channel positives (pneumonia raises the temperature by 0.5 C)
    meta = read(mixed / "mimic-cxr-jpg" / CXR_META)
    assert meta.equals(read(plain / "mimic-cxr-jpg" / CXR_META))  # the same studies, ids and times
    k = PHENOTYPES.index(PNEUMONIA)
    assert drawn["mixed"][:, k].sum() < drawn["plain"][:, k].sum() and (drawn["mixed"] <= drawn["plain"]).all()
    temp = (
        read(mixed / "mimic-iv" / "icu" / "chartevents.csv.gz")
        .filter(pl.col("itemid") == "223762")
        .group_by("stay_id")
        .agg(pl.col("valuenum").cast(pl.Float64).median())
        .with_columns(pl.col("stay_id").cast(pl.Int64))
    )
    pneumonia = channel.filter(pl.col("label") == PNEUMONIA).join(temp, on="stay_id")
    by_channel = dict(pneumonia.group_by("channel").agg(pl.col("valuenum").mean()).iter_rows())
    assert by_channel["ehr"] > by_channel["cxr"] + 0.3 and abs(by_channel["cxr"] - by_channel["none"]) < 0.25, (
        by_channel
    )
    for name in ("hosp/patients.csv.gz", "hosp/admissions.csv.gz", "hosp/diagnoses_icd.csv.gz", "icu/icustays.csv.gz"):
        assert (mixed / "mimic-iv" / name).read_bytes() == (plain / "mimic-iv" / name).read_bytes(), name

    with pytest.raises(
        UserError, match="synth.modal_inconsistency: 'Shock' has no planted signal in both modalities; allowed: Chronic"
    ):
        generate(tmp_path / "bad", {**settings, "modal_inconsistency": ["Shock"]})


def test_the_mortality_signal_changes_who_dies_and_nothing_the_phenotyping_task_reads(tmp_path):
    """`synth.mortality_signal` redraws who dies from evidence the data already show (its own random
    stream): every file but the death columns of admissions and patients is byte-identical with it
    on or off, and off it is the population's own acuity-driven draw."""
    from drfuse.synth.answer_key import read_mortality

    small = {**SETTINGS, "n_subjects": 300, "image_size": [40, 32]}
    generate(tmp_path / "on", small)
    generate(tmp_path / "off", {**small, "mortality_signal": False})
    on, off = tmp_path / "on", tmp_path / "off"
    deaths = {
        "hosp/admissions.csv.gz": ("deathtime", "discharge_location", "hospital_expire_flag"),
        "hosp/patients.csv.gz": ("dod",),
    }
    files = sorted(p.relative_to(on) for p in on.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(off) for p in off.rglob("*") if p.is_file())
    for rel in files:
        name = rel.relative_to("mimic-iv").as_posix() if rel.parts[0] == "mimic-iv" else None
        if name in deaths:
            a, b = read(on / rel), read(off / rel)
            assert a.drop(deaths[name]).equals(b.drop(deaths[name])), rel
            assert not a.select(deaths[name]).equals(b.select(deaths[name])), rel
        elif rel.parts[0] != "answer_key" or not rel.name.startswith("mortality"):
            assert (on / rel).read_bytes() == (off / rel).read_bytes(), rel
    assert read_mortality(on / "answer_key" / "mortality.csv")["group"] == "both"
    unplanted = read_mortality(off / "answer_key" / "mortality.csv")
    assert unplanted["group"] == "none" and np.isnan(unplanted["ehr_share"])
    # dod: the date of the in-hospital death, else of a death after discharge, never before the last discharge
    admissions, patients = (
        read(on / "mimic-iv" / "hosp" / "admissions.csv.gz"),
        read(on / "mimic-iv" / "hosp" / "patients.csv.gz"),
    )
    last = admissions.with_columns(ts("dischtime")).sort("dischtime").group_by("subject_id").last()
    joined = patients.join(last, on="subject_id")
    died = joined.filter(pl.col("hospital_expire_flag") == "1")
    assert died.height and (died["dod"] == died["deathtime"].str.slice(0, 10)).all()
    later = joined.filter(pl.col("dod").is_not_null() & (pl.col("hospital_expire_flag") == "0"))
    assert (later["dod"].str.to_date() > later["dischtime"].dt.date()).all()
