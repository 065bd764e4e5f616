"""The in-hospital mortality (IHM) task's cohort and label: on the real MIMIC-IV demo against an
independent computation from its CSVs, at the label's bounds on constructed rows, and the
stage's refusal of a cohort no run could train on; the generator's planted death signal."""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_cohort import _pandas_cohort

from drfuse.data.cohort import build_cohort
from drfuse.data.mortality import ATTRITION_FILE, build_mortality_cohort, mortality_cohort
from drfuse.errors import UserError
from drfuse.tasks import MORTALITY_LABEL


@pytest.fixture(scope="module")
def demo_ihm(tmp_path_factory, demo_db, tiny_cfg):
    out = tmp_path_factory.mktemp("ihm")
    build_cohort(demo_db, out, copy.deepcopy(tiny_cfg))
    build_mortality_cohort(demo_db, out / "stays.parquet", out, 48)
    return out


def _pandas_ihm(demo_dir, min_age: int) -> pd.DataFrame:
    """The IHM cohort and label written independently from the demo's CSVs: the MedFuse cohort's
    stays with los x 24 >= 48, died when deathtime, or dod as midnight, lies in [admittime,
    dischtime]."""
    _, cohort = _pandas_cohort(demo_dir, min_age)
    admissions = pd.read_csv(
        demo_dir / "hosp" / "admissions.csv.gz", parse_dates=["admittime", "dischtime", "deathtime"]
    )
    patients = pd.read_csv(demo_dir / "hosp" / "patients.csv.gz", parse_dates=["dod"])
    ihm = (
        cohort[cohort["los"] * 24 >= 48]
        .merge(admissions, on=["subject_id", "hadm_id"])
        .merge(patients[["subject_id", "dod"]], on="subject_id")
    )
    by_deathtime = (ihm["deathtime"] >= ihm["admittime"]) & (ihm["deathtime"] <= ihm["dischtime"])
    by_dod = (ihm["dod"] >= ihm["admittime"]) & (ihm["dod"] <= ihm["dischtime"])
    return ihm.assign(label=(by_deathtime | by_dod).astype(int), by_deathtime=by_deathtime, by_dod=by_dod).sort_values(
        "stay_id"
    )


def test_ihm_cohort_and_every_label_on_the_real_demo_match_the_csvs(demo_ihm, demo_dir, tiny_cfg):
    expected = _pandas_ihm(demo_dir, tiny_cfg["cohort"]["min_age"])
    ours = pq.read_table(demo_ihm / "mortality.parquet")
    assert ours.schema == pa.schema([("stay_id", pa.int64()), (MORTALITY_LABEL, pa.int8())])
    assert ours["stay_id"].to_pylist() == expected["stay_id"].tolist()  # the stay count and the stays, sorted
    assert ours[MORTALITY_LABEL].to_pylist() == expected["label"].tolist()  # every label
    # the demo exercises both sources of the label and the bounds that keep later deaths out
    assert expected["label"].sum() >= 3 and (expected["by_dod"] & ~expected["by_deathtime"]).any()
    assert (expected["dod"].notna() & (expected["label"] == 0)).any()  # deaths after discharge: not in hospital
    stays = pq.read_table(demo_ihm / "stays.parquet")
    attrition = pd.read_csv(demo_ihm / ATTRITION_FILE)
    assert attrition.to_dict("records") == [
        {"step": "phenotyping cohort", "stays_kept": stays.num_rows, "stays_removed": 0},
        {
            "step": "ICU stay of at least 48 h (icustays.los x 24)",
            "stays_kept": ours.num_rows,
            "stays_removed": stays.num_rows - ours.num_rows,
        },
    ]


def _case(rows: list[dict]) -> tuple[duckdb.DuckDBPyConnection, pa.Table]:
    """An in-memory database of one stay per row (its admission, its patient) and the cohort."""
    con = duckdb.connect()
    frame = pd.DataFrame(rows).assign(
        subject_id=lambda f: 10 + f.index, hadm_id=lambda f: 20 + f.index, stay_id=lambda f: 30 + f.index
    )
    for column in ("admittime", "dischtime", "deathtime", "dod"):
        frame[column] = pd.to_datetime(frame[column])
    con.register("f", frame)
    con.execute("CREATE TABLE icustays AS SELECT subject_id, hadm_id, stay_id, los FROM f")
    con.execute("CREATE TABLE admissions AS SELECT subject_id, hadm_id, admittime, dischtime, deathtime FROM f")
    con.execute("CREATE TABLE patients AS SELECT subject_id, CAST(dod AS DATE) AS dod FROM f")
    return con, pa.table({"stay_id": frame["stay_id"].to_numpy(np.int64)})


def test_the_label_bounds_are_inclusive_and_dod_counts_as_midnight():
    adm = {"admittime": "2150-03-01 10:00", "dischtime": "2150-03-05 15:00", "deathtime": None, "dod": None}
    cases = [  # (row, kept, label)
        ({**adm, "los": 2.0}, True, 0),  # exactly 48 h: kept; alive
        ({**adm, "los": 47.99 / 24}, False, None),  # short of 48 h
        ({**adm, "los": None}, False, None),  # no outtime, no los
        ({**adm, "los": 3.0, "deathtime": "2150-03-05 15:00"}, True, 1),  # died at discharge: the bound is in
        ({**adm, "los": 3.0, "deathtime": "2150-03-05 15:01"}, True, 0),  # after the admission
        ({**adm, "los": 3.0, "dod": "2150-03-05"}, True, 1),  # date of discharge: midnight is inside
        ({**adm, "los": 3.0, "dod": "2150-03-01"}, True, 0),  # admission day: its midnight is before admittime
        ({**adm, "los": 3.0, "admittime": "2150-03-01 00:00", "dod": "2150-03-01"}, True, 1),  # admitted at midnight
        ({**adm, "los": 3.0, "dod": "2150-09-01"}, True, 0),  # a death after discharge (MIMIC-IV v2.0+)
    ]
    con, stays = _case([row for row, _, _ in cases])
    table = mortality_cohort(con, stays, 48)
    got = dict(zip(table["stay_id"].to_pylist(), table[MORTALITY_LABEL].to_pylist()))
    expected = {30 + i: label for i, (_, kept, label) in enumerate(cases) if kept}
    assert got == expected


def test_a_split_without_a_stay_fails_the_stage_writing_nothing(tmp_path, demo_db, demo_ihm):
    with pytest.raises(
        UserError, match=r"split.* of the in-hospital mortality cohort \(stays of at least 8760 h\) hold no stay"
    ) as err:
        build_mortality_cohort(demo_db, demo_ihm / "stays.parquet", tmp_path / "out", 24 * 365)
    assert "train 0 stays" in str(err.value) and "leave mortality out of experiments.tasks" in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_planted_deaths_follow_the_evidence_with_the_keys_split(tiny_results):
    """The built-in data's deaths (synth.mortality_signal on by default): drawn from the stay's
    latent blood pressure, SpO2 and respiratory rate and from a sign on its matched image, only at a
    subject's last admission; the cohort's label is the death the generator drew."""
    from drfuse.synth.answer_key import read_mortality

    key_dir = tiny_results / "synth" / "answer_key"
    key = read_mortality(key_dir / "mortality.csv")
    assert key["group"] == "both" and 0.5 < key["ehr_share"] < 1.0  # mostly the time series, with an image part
    evidence = pl.read_parquet(key_dir / "mortality_evidence.parquet")
    admissions = pl.read_csv(tiny_results / "synth" / "mimic-iv" / "hosp" / "admissions.csv.gz", infer_schema=False)
    died = admissions.filter(pl.col("hospital_expire_flag") == "1")
    assert (
        died.height and (died["discharge_location"] == "DIED").all() and (died["deathtime"] == died["dischtime"]).all()
    )
    last = (
        admissions.with_columns(pl.col("admittime").str.to_datetime())
        .group_by("subject_id")
        .agg(pl.col("hadm_id").sort_by("admittime").last())
    )
    assert set(died["hadm_id"]) <= set(last["hadm_id"])
    high = evidence["ehr_z"] > evidence["ehr_z"].quantile(0.75)
    assert evidence.filter(high)[MORTALITY_LABEL].mean() > 3 * evidence.filter(~high)[MORTALITY_LABEL].mean()
    # the IHM cohort's labels are the generator's deaths
    cohort = pl.read_parquet(tiny_results / "cohort" / "stays.parquet")
    ihm = pl.read_parquet(tiny_results / "cohort" / "mortality.parquet").join(evidence, on="stay_id", suffix="_key")
    assert ihm.height and ihm.height < cohort.height
    assert (ihm[MORTALITY_LABEL] == ihm[f"{MORTALITY_LABEL}_key"]).all()


# ---------------------------------------------------------------- the task in the models and the engine


def test_every_model_has_one_output_per_label_of_its_task(tiny_cfg, torch_one_thread):
    """Each registry model built for mortality predicts one label, trains on it (loss and its
    image warm-up), and DrFuse's disease-wise attention has the one disease."""
    import torch

    from drfuse.models import MODELS, build_model

    g = torch.Generator().manual_seed(0)
    b, size = 4, tiny_cfg["model"]["image_size"]
    ehr, lengths = torch.randn(b, 48, 76, generator=g), torch.tensor([48, 10, 3, 48])
    images, has_cxr = torch.randn(b, 3, size, size, generator=g), torch.tensor([True, False, True, True])
    labels = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    for name in MODELS:
        model = build_model(name, tiny_cfg["model"], n_outputs=1).train()
        rows = has_cxr if model.uses_ehr else torch.ones(b, dtype=torch.bool)
        out = model(ehr, lengths, images, rows)
        assert out["logits"].shape == (b, 1), name
        loss, _ = model.loss(out, labels, rows)
        assert loss.ndim == 0 and torch.isfinite(loss), name
        if hasattr(model, "warmup_loss"):
            assert torch.isfinite(model.warmup_loss(images[rows], labels[rows])[0]), name
        if "attention" in out:
            assert out["attention"].shape == (b, 1, 3) and torch.allclose(out["attention"].sum(-1), torch.ones(b, 1))
            assert torch.isnan(out["attention"][1, 0, 2]) or out["attention"][1, 0, 2] == 0  # no image: no CXR weight
    assert build_model("drfuse", tiny_cfg["model"]).final_head.out_features == 25  # phenotyping's, by default


def _cfg(tiny_cfg, **train):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["train"].update(train)
    return cfg


def test_mortality_splits_are_the_ihm_cohort_with_its_label(tiny_results):
    from drfuse.train.data import load_split

    stays = pl.read_parquet(tiny_results / "cohort" / "stays.parquet")
    ihm = pl.read_parquet(tiny_results / "cohort" / "mortality.parquet").join(stays, on="stay_id")
    for split in ("train", "val", "test"):
        full = load_split(tiny_results, split, "full", "mortality")
        part = ihm.filter(pl.col("split") == split).sort("stay_id")
        assert full.stay_id.tolist() == part["stay_id"].to_list() and full.labels.shape == (part.height, 1)
        np.testing.assert_array_equal(full.labels[:, 0], part[MORTALITY_LABEL].to_numpy())
        phenotyping = load_split(tiny_results, split, "full")
        rows = np.searchsorted(phenotyping.stay_id, full.stay_id)  # the same inputs as the stay's phenotyping row
        np.testing.assert_array_equal(full.ehr, phenotyping.ehr[rows])
        np.testing.assert_array_equal(full.has_cxr, phenotyping.has_cxr[rows])
        matched = load_split(tiny_results, split, "matched", "mortality")
        assert set(matched.stay_id) == set(full.stay_id[full.has_cxr]) and len(matched)


def test_a_mortality_run_trains_predicts_and_records_its_task(tiny_results, tiny_cfg, tmp_path):
    """`drfuse train --task mortality` with --predict-dir: one label's predictions of the IHM test
    stays, the task in run.json and best.pt, the mortality cohort in the data fingerprint; `drfuse
    predict` re-predicts the same from best.pt and refuses a folder whose IHM labels differ."""
    import json
    import shutil

    from drfuse import cli
    from drfuse.train import checkpoint
    from drfuse.train.data import load_split
    from drfuse.train.run import predict

    cfg = _cfg(tiny_cfg, epochs=3, patience=3)
    config = tmp_path / "config.yaml"
    config.write_text(__import__("yaml").safe_dump(cfg))
    run_dir, out = tmp_path / "run", tmp_path / "predict"
    code = cli.main(
        [
            "--config",
            str(config),
            "train",
            "--task",
            "mortality",
            "--model",
            "transformer",
            "--train-set",
            "full",
            "--results",
            str(tiny_results),
            "--out",
            str(run_dir),
            "--predict-dir",
            str(out),
            "--test-set",
            "full",
            "matched",
        ]
    )
    assert code == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["task"] == "mortality" and set(run["data_fingerprint"]) == {
        "split",
        "cohort",
        "features",
        "images",
        "mortality",
    }
    assert json.loads(checkpoint.load(run_dir / "best.pt")["meta"])["task"] == "mortality"
    losses = pl.read_csv(run_dir / "metrics.csv")["train_loss"]
    assert losses[-1] < losses[0]
    for test_set in ("full", "matched"):
        frame = pl.read_parquet(out / f"{test_set}.parquet")
        assert frame.columns == ["stay_id", "has_cxr", f"y:{MORTALITY_LABEL}", f"p:{MORTALITY_LABEL}"]
        test = load_split(tiny_results, "test", test_set, "mortality")
        assert frame["stay_id"].to_list() == test.stay_id.tolist()
        np.testing.assert_array_equal(frame[f"y:{MORTALITY_LABEL}"].to_numpy(), test.labels[:, 0])
        again = predict(run_dir, test_set, cfg, tiny_results, tmp_path / "again" / f"{test_set}.parquet")
        assert again.equals(frame)

    other = tmp_path / "other"
    for stage in ("cohort", "features", "images"):
        shutil.copytree(tiny_results / stage, other / stage)
    ihm = pl.read_parquet(other / "cohort" / "mortality.parquet")
    ihm.with_columns(pl.lit(0, pl.Int8).alias(MORTALITY_LABEL)).write_parquet(other / "cohort" / "mortality.parquet")
    with pytest.raises(UserError, match=r"trained on other data than results folder .* \(mortality differs;"):
        predict(run_dir, "full", cfg, other, tmp_path / "moved.parquet")


def test_drfuse_warms_up_on_its_task_and_refuses_the_other_tasks_warmup(tiny_results, tiny_cfg, tmp_path):
    import torch

    from drfuse.train import checkpoint
    from drfuse.train.run import train, warm_up

    cfg = _cfg(tiny_cfg, epochs=1, patience=5, cxr_warmup_epochs=1)
    warm_up(2, cfg, tiny_results, tmp_path / "warmup", task="mortality")
    warm_up(2, cfg, tiny_results, tmp_path / "warmup-phenotyping")
    warmup = tmp_path / "warmup" / "warmup.pt"
    own, shared = tmp_path / "own", tmp_path / "shared"
    train("drfuse", "matched", 2, cfg, tiny_results, own, task="mortality")
    train("drfuse", "matched", 2, cfg, tiny_results, shared, warm_start=warmup, task="mortality")
    a, b = checkpoint.load(own / "best.pt"), checkpoint.load(shared / "best.pt")
    assert a["model"]["final_head.weight"].shape == (1, tiny_cfg["model"]["d_model"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with pytest.raises(
        UserError, match=r"warm-up of other settings, seed or data than this run.s \(differing: data, task\)"
    ):
        train(
            "drfuse",
            "matched",
            2,
            cfg,
            tiny_results,
            tmp_path / "crossed",
            warm_start=tmp_path / "warmup-phenotyping" / "warmup.pt",
            task="mortality",
        )
