"""Training engine: data selection, CXR drop, augmentation, learning, resume, predictions."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import logging
import multiprocessing as mp
import os
import shutil
import socket
import subprocess

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from sklearn.metrics import average_precision_score

from drfuse import cli
from drfuse import config as config_mod
from drfuse.errors import UserError
from drfuse.images.cache import ImageCache
from drfuse.models import MODELS, build_model, losses
from drfuse.models.encoders import padded_image_batches
from drfuse.phenotypes import PHENOTYPES
from drfuse.train import checkpoint
from drfuse.train.augment import IMAGENET_MEAN, IMAGENET_STD, AugmentSettings, prepare_images
from drfuse.train.data import dataset_for, load_split
from drfuse.train.engine import (
    DeviceData,
    EngineSettings,
    compile_model,
    make_batch,
    param_groups,
    predict_outputs,
    resolve_device,
    run_forward,
    train_step,
)
from drfuse.train.metrics import macro_scores
from drfuse.train.run import predict, train, training_cxr_drop, warm_up


def _cfg(tiny_cfg, **train):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["train"].update(train)
    return cfg


def test_full_and_matched_datasets(tiny_results, tiny_cfg):
    stays = pl.read_parquet(tiny_results / "cohort" / "stays.parquet")
    cache = ImageCache(tiny_results / "images")
    ehr = np.load(tiny_results / "features" / "ehr.npy")
    index = pl.read_parquet(tiny_results / "features" / "index.parquet")
    for split in ("train", "test"):
        part = stays.filter(pl.col("split") == split).sort("stay_id")
        usable = part.filter(pl.col("has_cxr") & pl.col("dicom_id").is_in(cache.dicom_ids))
        full, matched = load_split(tiny_results, split, "full"), load_split(tiny_results, split, "matched")
        assert full.stay_id.tolist() == part["stay_id"].to_list()
        assert matched.stay_id.tolist() == usable["stay_id"].to_list()
        assert 0 < len(matched) < len(full)
        assert full.has_cxr.sum() == len(matched) and matched.has_cxr.all()
        np.testing.assert_array_equal(matched.labels, usable.select(PHENOTYPES).to_numpy())
        # each matched stay carries its own image and its own EHR rows
        rows = cache.rows_for(usable["dicom_id"].to_list())
        np.testing.assert_array_equal(matched.images[matched.image_rows], cache.array[rows])
        ehr_rows = usable.join(index, on="stay_id", how="left", maintain_order="left")
        np.testing.assert_array_equal(matched.ehr, ehr[ehr_rows["row"].to_numpy()])
        np.testing.assert_array_equal(matched.lengths, ehr_rows["length"].to_numpy())
        assert (full.image_rows[~full.has_cxr] == -1).all()
    # a model without EHR only ever sees stays with a CXR
    assert dataset_for(build_model("resnet50", tiny_cfg["model"]), "full") == "matched"


def test_cxr_drop_sends_samples_down_the_missing_path(tiny_results, tiny_cfg):
    data = DeviceData(load_split(tiny_results, "train", "matched"), torch.device("cpu"), with_images=True)
    settings = EngineSettings.from_cfg(tiny_cfg, torch.device("cpu"), cxr_drop=0.3)
    generator = torch.Generator().manual_seed(0)
    idx = torch.arange(20)
    assert data.has_cxr[idx].all()
    ehr, lengths, images, has_cxr, labels, paired = make_batch(data, idx, settings, True, generator, True)
    assert paired.tolist() == has_cxr.nonzero().squeeze(1).tolist()  # the rows with an image, found on the host
    assert int((~has_cxr).sum()) == 6  # 30 % of 20
    # the dropped images are not fed: their slot holds zeros, the others hold real images
    assert images[~has_cxr].abs().sum() == 0 and (images[has_cxr].flatten(1).abs().sum(1) > 0).all()
    dropped = [int((~make_batch(data, idx, settings, True, generator, True)[3]).sum()) for _ in range(5)]
    assert dropped == [6] * 5
    # the model treats them as missing: no CXR representation, no attention on the CXR token
    model = build_model("drfuse", tiny_cfg["model"]).eval()
    with torch.no_grad():
        out = model(ehr, lengths, images, has_cxr)
    assert torch.isnan(out["cxr_shared"][~has_cxr]).all() and not torch.isnan(out["cxr_shared"][has_cxr]).any()
    assert (out["attention"][~has_cxr][..., 2] == 0).all()
    # evaluation never drops
    assert make_batch(data, idx, settings, False, None, True)[3].all()


def test_each_model_family_drops_the_cxr_by_its_own_setting(tiny_cfg):
    """DrFuse's 30 % drop is its own recipe; MedFuse's code (MMTM, DAFT, MedFuse) never drops."""
    train_cfg = {**tiny_cfg["train"], "cxr_drop": 0.3, "baseline_cxr_drop": 0.1}
    models = {name: build_model(name, tiny_cfg["model"]) for name in MODELS}
    drops = {name: training_cxr_drop(model, "matched", train_cfg) for name, model in models.items()}
    family = ("drfuse", "drfuse_no_disentangle", "drfuse_mse", "drfuse_no_rank")
    baselines = ("mmtm", "daft", "medfuse", "medfuse2")
    assert drops == {
        **{m: 0.3 for m in family}, **{m.replace("drfuse", "drfuse_paper"): 0.3 for m in family},  # both recipes
        "transformer": 0.0, "resnet50": 0.0, **{m: 0.1 for m in baselines}, **{f"{m}_ours": 0.1 for m in baselines},
    }  # fmt: skip
    assert training_cxr_drop(models["drfuse"], "full", train_cfg) == 0.0  # never on the full set
    # the registry declares the one drop setting each model reads (so only its runs re-train)
    for name, model in models.items():
        declared = {"cxr_drop", "baseline_cxr_drop"} & set(MODELS[name].train_keys)
        assert declared == ({model.cxr_drop_setting} if hasattr(model, "cxr_drop_setting") else set()), name
    # and the default config keeps the baselines as their code ran
    assert tiny_cfg["train"]["baseline_cxr_drop"] == 0.0 and tiny_cfg["train"]["cxr_drop"] == 0.3


def test_validation_set_selection_metric_and_betas_follow_the_settings(tiny_results, tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, epochs=3, patience=5, val_set="same", select_on="auroc", adam_betas=[0.9, 0.9])
    run = train("transformer", "matched", 0, cfg, tiny_results, tmp_path / "same")
    assert run["val_dataset"] == "matched" and run["n_val"] == len(load_split(tiny_results, "val", "matched"))
    metrics = pl.read_csv(tmp_path / "same" / "metrics.csv")
    assert run["selected_on"] == "val_auroc"
    assert run["best_epoch"] == 1 + int(np.argmax(metrics["val_auroc"].to_numpy()))
    assert run["best_val_score"] == pytest.approx(metrics["val_auroc"].max())
    assert checkpoint.load(tmp_path / "same" / "last.pt")["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.9)
    # the reference's choice: every model stops early on the full validation set
    run = train("transformer", "matched", 0, _cfg(tiny_cfg, epochs=1, val_set="full"), tiny_results, tmp_path / "full")
    assert run["val_dataset"] == "full" and run["n_val"] == len(load_split(tiny_results, "val", "full"))
    # a model without EHR has only the matched validation set
    assert (
        train("resnet50", "matched", 0, _cfg(tiny_cfg, epochs=1, val_set="full"), tiny_results, tmp_path / "cnn")[
            "val_dataset"
        ]
        == "matched"
    )


def test_lr_multipliers_scale_the_named_modules(tiny_results, tiny_cfg, tmp_path, caplog):
    cfg = _cfg(tiny_cfg, epochs=1, lr=1e-3, lr_multipliers={"ehr_encoder": 0.5, "cxr_": 2.0})
    model = build_model("drfuse", cfg["model"])
    groups = param_groups(model, EngineSettings.from_cfg(cfg, torch.device("cpu"), 0.0))
    by_factor = {g["lr_factor"]: g for g in groups}
    assert {f: g["lr"] for f, g in by_factor.items()} == {0.5: 5e-4, 2.0: 2e-3, 1.0: 1e-3}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("ehr_encoder.") for p in by_factor[0.5]["params"])
    assert {names[id(p)].split(".")[0] for p in by_factor[2.0]["params"]} == {
        "cxr_stem",
        "cxr_trunk_shared",
        "cxr_trunk_distinct",
    }
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # a training run: the optimiser keeps the factors, metrics.csv logs train.lr itself
    train("drfuse", "matched", 0, cfg, tiny_results, tmp_path / "run")
    saved = checkpoint.load(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]
    assert sorted(g["lr"] for g in saved) == [5e-4, 1e-3, 2e-3]
    assert pl.read_csv(tmp_path / "run" / "metrics.csv")["lr"].to_list() == [1e-3]
    # the setting applies to every model: a prefix a model lacks is logged, naming its modules
    with caplog.at_level(logging.WARNING):
        groups = param_groups(
            build_model("transformer", cfg["model"]), EngineSettings.from_cfg(cfg, torch.device("cpu"), 0.0)
        )
    assert (
        "no parameter of EHRTransformerClassifier starts with cxr_ (its modules: classifier, ehr_encoder)"
        in caplog.text
    )
    assert {g["lr_factor"] for g in groups} == {0.5, 1.0}


def test_ehr_lr_factor_slows_only_the_drfuse_family_ehr_encoder(tiny_results, tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, epochs=1, lr=1e-3, ehr_lr_factor=0.25)
    settings = EngineSettings.from_cfg(cfg, torch.device("cpu"), 0.0)
    for name in ("drfuse", "drfuse_no_rank"):
        model = build_model(name, cfg["model"])
        groups = {g["lr_factor"]: g for g in param_groups(model, settings)}
        assert {f: g["lr"] for f, g in groups.items()} == {0.25: 2.5e-4, 1.0: 1e-3}
        names = {id(p): n for n, p in model.named_parameters()}
        assert {names[id(p)].split(".")[0] for p in groups[0.25]["params"]} == {"ehr_encoder"}
    # the fusion baselines slow their EHR encoder alike (our recipe's `mmtm_ours`, ...); the
    # uni-modal Transformer has no fusion to balance and keeps train.lr
    assert {g["lr_factor"] for g in param_groups(build_model("transformer", cfg["model"]), settings)} == {1.0}
    for name in ("mmtm", "daft", "medfuse", "medfuse2"):
        model = build_model(name, cfg["model"])
        groups = {g["lr_factor"]: g for g in param_groups(model, settings)}
        names = {id(p): n for n, p in model.named_parameters()}
        assert {names[id(p)].split(".")[0] for p in groups[0.25]["params"]} == {"ehr_encoder"}, name
    # train.lr_multipliers naming the EHR encoder itself wins
    explicit = EngineSettings.from_cfg(_cfg(cfg, lr_multipliers={"ehr_encoder": 0.5}), torch.device("cpu"), 0.0)
    assert {g["lr_factor"] for g in param_groups(build_model("drfuse", cfg["model"]), explicit)} == {0.5, 1.0}
    # a training run's optimiser carries the factor (and resumes with it)
    train("drfuse", "matched", 0, cfg, tiny_results, tmp_path / "run")
    saved = checkpoint.load(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]
    assert sorted(g["lr"] for g in saved) == [2.5e-4, 1e-3]
    with pytest.raises(UserError, match="train.ehr_lr_factor = 0: 0 is less than or equal to the minimum of 0"):
        config_mod.check(_cfg(cfg, ehr_lr_factor=0))  # the schema, the one place settings are checked


def test_image_warmup_trains_the_image_branch_alone_then_selects_among_joint_epochs(tiny_results, tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, epochs=2, patience=5, cxr_warmup_epochs=2)
    run_dir = tmp_path / "run"
    states = {}
    run = train(
        "drfuse",
        "matched",
        0,
        cfg,
        tiny_results,
        run_dir,
        on_epoch_end=lambda epoch: states.update({epoch: checkpoint.load(run_dir / "last.pt")["model"]}),
    )
    metrics = pl.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].to_list() == [1, 2, 3, 4] and run["epochs_run"] == 4
    assert metrics["val_prauc"][:2].is_null().all() and metrics["val_prauc"][2:].is_not_null().all()
    assert (
        metrics["train_loss:warmup_aux_cxr"][:2].is_not_null().all() and metrics["train_loss:pred"][:2].is_null().all()
    )
    assert run["best_epoch"] in (3, 4)  # never a warm-up epoch
    checkpoint.seed_everything(0)
    initial = build_model("drfuse", cfg["model"]).state_dict()  # what train() starts from
    image_branch = ("cxr_stem.", "cxr_trunk_distinct.", "aux_heads.2.")
    for key, value in initial.items():
        moved = not torch.equal(states[2][key], value)
        if key.startswith(image_branch) and value.is_floating_point():  # weights and BatchNorm statistics
            assert moved, key
        elif not key.startswith(image_branch):
            assert not moved, key  # the EHR side, the shared trunk, the fusion: untouched by the warm-up
    assert not torch.equal(states[3]["final_head.weight"], initial["final_head.weight"])
    # models without an image branch to warm up ignore the setting
    assert train("transformer", "matched", 0, cfg, tiny_results, tmp_path / "tf")["epochs_run"] == 2
    # a fusion baseline warms up its CNN the same way: on the stays with an image, no validation
    mmtm = train("mmtm", "full", 0, cfg, tiny_results, tmp_path / "mmtm")
    metrics = pl.read_csv(tmp_path / "mmtm" / "metrics.csv")
    assert mmtm["epochs_run"] == 4 and mmtm["best_epoch"] in (3, 4)
    assert metrics["train_loss:warmup_pred_cxr"][:2].is_not_null().all() and metrics["val_prauc"][:2].is_null().all()


def test_plateau_scheduler_halves_the_lr_and_resumes_with_it(tiny_results, tiny_cfg, tmp_path):
    """MedFuse's ReduceLROnPlateau: 10 epochs without a lower validation loss halve the lr; its state
    is part of the resume point."""
    # an lr too small to lower the loss by the scheduler's threshold (1e-4 relative), large enough
    # for a halving to count (torch ignores lr changes below 1e-8)
    cfg = _cfg(tiny_cfg, lr=1e-7, epochs=13, patience=20, lr_scheduler="plateau")
    train("transformer", "matched", 0, cfg, tiny_results, tmp_path / "whole")
    lrs = pl.read_csv(tmp_path / "whole" / "metrics.csv")["lr"].to_list()
    assert lrs[:11] == [1e-7] * 11 and lrs[11:] == [5e-8] * 2  # epoch 1 sets the best, 2-12 do not beat it

    class Killed(Exception):
        pass

    def kill_after_12(epoch):
        if epoch == 12:
            raise Killed

    with pytest.raises(Killed):
        train("transformer", "matched", 0, cfg, tiny_results, tmp_path / "killed", on_epoch_end=kill_after_12)
    train("transformer", "matched", 0, cfg, tiny_results, tmp_path / "killed")
    assert pl.read_csv(tmp_path / "killed" / "metrics.csv")["lr"].to_list() == lrs


def test_augmentation_on_tensors():
    raw = torch.randint(0, 256, (5, 40, 40), dtype=torch.uint8)
    centre = prepare_images(raw, 32, train=False)
    assert centre.shape == (5, 3, 32, 32) and centre.dtype == torch.float32
    # grayscale copied to 3 channels, ImageNet-normalised
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    np.testing.assert_allclose((centre * std + mean)[:, 0] * 255, raw[:, 4:36, 4:36].float(), atol=1e-3)
    assert torch.allclose(
        centre[:, 1] * IMAGENET_STD[1] + IMAGENET_MEAN[1], centre[:, 2] * IMAGENET_STD[2] + IMAGENET_MEAN[2], atol=1e-6
    )
    g = torch.Generator().manual_seed(0)
    still = AugmentSettings(flip_p=0.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    assert torch.allclose(prepare_images(raw, 32, True, g, still), centre, atol=1e-4)
    flipped = AugmentSettings(flip_p=1.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    assert torch.allclose(prepare_images(raw, 32, True, g, flipped), centre.flip(-1), atol=1e-4)
    # the paper's augmentation moves pixels, reproducibly from the generator's state
    a = prepare_images(raw, 32, True, torch.Generator().manual_seed(1))
    b = prepare_images(raw, 32, True, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a - centre).abs().mean() > 0.1


def test_macro_scores_skip_labels_without_positives():
    y = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]])
    p = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.4], [0.3, 0.5, 0.1], [0.4, 0.2, 0.8]])
    got = macro_scores(y, p)
    want = np.mean([average_precision_score(y[:, c], p[:, c]) for c in (0, 2)])
    assert got["prauc"] == pytest.approx(want) and got["prauc_skipped"] == 1 and got["auroc_skipped"] == 1


def test_cuda_request_without_gpu_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="train.device"):
        resolve_device({"device": "cuda", "num_threads": 0})


def test_training_learns(tiny_results, tiny_cfg, tmp_path):
    """The EHR transformer (fast on a CPU) on the full set: the loss falls, held-out PRAUC beats chance."""
    run_dir = tmp_path / "train" / "transformer" / "full" / "seed0"
    run = train("transformer", "full", 0, _cfg(tiny_cfg, epochs=5, patience=5), tiny_results, run_dir)
    metrics = pl.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].to_list() == [1, 2, 3, 4, 5]
    assert metrics["train_loss"][-1] < metrics["train_loss"][0] - 0.05
    assert {"val_prauc", "val_auroc", "seconds", "train_loss:pred"} <= set(metrics.columns)
    stored = json.loads((run_dir / "run.json").read_text())
    assert stored["best_epoch"] == run["best_epoch"] == 1 + int(np.argmax(metrics["val_prauc"].to_numpy()))
    assert stored["n_parameters"] > 0 and stored["device"] == "cpu" and stored["cxr_drop_applied"] == 0.0
    started, finished = (datetime.datetime.fromisoformat(stored[k]) for k in ("started", "finished"))
    assert started.tzinfo is not None and (finished - started).total_seconds() >= metrics["seconds"].sum() * 0.99

    out = tmp_path / "predict" / "full.parquet"
    written = predict(run_dir, "full", _cfg(tiny_cfg), tiny_results, out)
    assert pl.read_parquet(out).equals(written)
    assert written.columns == ["stay_id", "has_cxr", *[f"y:{x}" for x in PHENOTYPES], *[f"p:{x}" for x in PHENOTYPES]]
    test = load_split(tiny_results, "test", "full")
    assert written["stay_id"].to_list() == test.stay_id.tolist()
    y = written.select(f"y:{x}" for x in PHENOTYPES).to_numpy()
    p = written.select(f"p:{x}" for x in PHENOTYPES).to_numpy()
    np.testing.assert_array_equal(y, test.labels)
    # macro PRAUC on held-out stays above the labels' mean prevalence (what random scores get)
    scores = macro_scores(y, p)
    prevalence = y[:, y.sum(0) > 0].mean()
    assert scores["prauc"] > prevalence + 0.05, (scores, prevalence)
    assert list(np.load(out.with_suffix(".npz")).keys()) == ["stay_id"]  # no representations to save


def test_killed_run_resumes_bit_identical_and_predicts(tiny_results, tiny_cfg, tmp_path):
    """DrFuse on the matched set, dropout on: model RNG, CXR drop, augmentation, data order all in play."""
    cfg = _cfg(tiny_cfg, epochs=2, patience=5)
    cfg["model"].update(dropout=0.2, image_size=36)  # 36 px: ResNet's last feature map stays above 1 x 1
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train("drfuse", "matched", 3, cfg, tiny_results, whole)

    class Killed(Exception):
        pass

    def kill(epoch):
        raise Killed(epoch)

    with pytest.raises(Killed):
        train("drfuse", "matched", 3, cfg, tiny_results, killed, on_epoch_end=kill)
    assert pl.read_csv(killed / "metrics.csv").height == 1 and not (killed / "run.json").exists()
    (killed / "best.pt").unlink()  # Snakemake deletes a failed job's outputs before re-running it
    seen = []
    run = train("drfuse", "matched", 3, cfg, tiny_results, killed, on_epoch_end=seen.append)
    assert seen == [2] and run["cxr_drop_applied"] == 0.3  # only the missing epoch was trained

    for name in ("last.pt", "best.pt"):
        a, b = checkpoint.load(whole / name), checkpoint.load(killed / name)
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
    a, b = checkpoint.load(whole / "last.pt"), checkpoint.load(killed / "last.pt")
    for key in ("torch", "data"):
        assert torch.equal(a["rng"][key], b["rng"][key])
    drop_seconds = lambda f: pl.read_csv(f).drop("seconds")  # noqa: E731
    assert drop_seconds(whole / "metrics.csv").equals(drop_seconds(killed / "metrics.csv"))

    # the matched-trained model predicts the full test set (Table 2), with attention and representations
    out = tmp_path / "predict" / "full.parquet"
    written = predict(killed, "full", cfg, tiny_results, out)
    attn = [f"attn:{label}:{t}" for label in PHENOTYPES for t in ("ehr", "shared", "cxr")]
    assert written.columns == [
        "stay_id",
        "has_cxr",
        *[f"y:{x}" for x in PHENOTYPES],
        *[f"p:{x}" for x in PHENOTYPES],
        *attn,
    ]
    assert pl.read_parquet(out).schema == written.schema
    assert written.schema["y:" + PHENOTYPES[0]] == pl.Int8 and written.schema["p:" + PHENOTYPES[0]] == pl.Float32
    test = load_split(tiny_results, "test", "full")
    assert written["has_cxr"].to_list() == test.has_cxr.tolist()
    a = written.select(attn).to_numpy().reshape(len(written), len(PHENOTYPES), 3)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    assert (a[~test.has_cxr, :, 2] == 0).all() and (a[test.has_cxr, :, 2] > 0).all()
    reps = np.load(out.with_suffix(".npz"))
    assert reps["stay_id"].tolist() == test.stay_id.tolist()
    for key in ("ehr_distinct", "ehr_shared", "cxr_distinct", "cxr_shared"):
        assert reps[key].shape == (len(written), cfg["model"]["d_model"])
    assert np.isnan(reps["cxr_shared"][~test.has_cxr]).all() and not np.isnan(reps["cxr_shared"][test.has_cxr]).any()
    assert not np.isnan(reps["ehr_shared"]).any()
    # a model without EHR is tested on the matched set only
    with pytest.raises(UserError, match="matched"):
        predict_cxr_only_on_full(tiny_results, tiny_cfg, tmp_path)


def test_checkpoints_wait_for_their_interval_then_match_a_run_that_writes_every_epoch(tiny_results, tiny_cfg, tmp_path):
    """train.checkpoint_interval_s: no write before the interval has passed, the best weights wait in
    memory, and after the last epoch best.pt and last.pt equal a run's that wrote after every
    epoch; a run killed before its first write starts again from epoch 1 and ends the same."""
    every = _cfg(tiny_cfg, epochs=4, patience=4, checkpoint_interval_s=0)
    rarely = _cfg(tiny_cfg, epochs=4, patience=4, checkpoint_interval_s=3600)

    def last_epoch_on_disk(run_dir, seen):
        return lambda epoch: seen.append(
            (epoch, checkpoint.load(run_dir / "last.pt")["epoch"] if (run_dir / "last.pt").exists() else None)
        )

    seen_every, seen_rarely = [], []
    train(
        "transformer",
        "full",
        0,
        every,
        tiny_results,
        tmp_path / "every",
        on_epoch_end=last_epoch_on_disk(tmp_path / "every", seen_every),
    )
    run = train(
        "transformer",
        "full",
        0,
        rarely,
        tiny_results,
        tmp_path / "rarely",
        on_epoch_end=last_epoch_on_disk(tmp_path / "rarely", seen_rarely),
    )
    assert seen_every == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert seen_rarely == [(1, None), (2, None), (3, None), (4, 4)]

    def same_files(a, b):
        for name in ("best.pt", "last.pt"):
            x, y = checkpoint.load(a / name), checkpoint.load(b / name)
            assert x["epoch"] == y["epoch"] and x["model"].keys() == y["model"].keys(), name
            assert all(torch.equal(x["model"][key], y["model"][key]) for key in x["model"]), name

    same_files(tmp_path / "every", tmp_path / "rarely")
    assert checkpoint.load(tmp_path / "rarely" / "best.pt")["epoch"] == run["best_epoch"]

    class Killed(Exception):
        pass

    def kill_after_2(epoch):
        if epoch == 2:
            raise Killed

    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        train("transformer", "full", 0, rarely, tiny_results, killed, on_epoch_end=kill_after_2)
    assert not (killed / "last.pt").exists() and not (killed / "best.pt").exists()
    epochs = []
    train("transformer", "full", 0, rarely, tiny_results, killed, on_epoch_end=epochs.append)
    assert epochs == [1, 2, 3, 4]
    same_files(tmp_path / "every", killed)
    with pytest.raises(UserError, match="train.checkpoint_interval_s = -1: -1 is less than the minimum of 0"):
        config_mod.check(_cfg(tiny_cfg, checkpoint_interval_s=-1))


def test_runs_started_after_the_shared_warmup_equal_runs_that_warm_up_themselves(tiny_results, tiny_cfg, tmp_path):
    """`warm_up` once, then DrFuse on the full set and an ablation on the matched set start after it
    (`warm_start`): each ends bit-identical to the same run doing its own warm-up. Dropout on, so
    the random states carried over count too."""
    cfg = _cfg(tiny_cfg, epochs=1, patience=5, cxr_warmup_epochs=2)
    cfg["model"].update(dropout=0.2)
    warm_up(3, cfg, tiny_results, tmp_path / "warmup")
    warmup = tmp_path / "warmup" / "warmup.pt"
    assert checkpoint.load(warmup)["epoch"] == 2 and not (tmp_path / "warmup" / "best.pt").exists()
    for model, train_set in (("drfuse", "full"), ("drfuse_no_rank", "matched")):
        own, shared = tmp_path / f"{model}.{train_set}", tmp_path / f"{model}.{train_set}.shared"
        train(model, train_set, 3, cfg, tiny_results, own)
        epochs = []
        run = train(model, train_set, 3, cfg, tiny_results, shared, on_epoch_end=epochs.append, warm_start=warmup)
        assert epochs == [3] and run["warm_start"] == str(warmup)  # only the joint epoch was trained here
        for name in ("best.pt", "last.pt"):
            a, b = checkpoint.load(own / name), checkpoint.load(shared / name)
            assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"]), (model, name)
        drop_seconds = lambda f: pl.read_csv(f).drop("seconds")  # noqa: E731
        assert drop_seconds(own / "metrics.csv").equals(drop_seconds(shared / "metrics.csv"))
    # another seed's (or settings') warm-up, or a model without one, is refused
    with pytest.raises(UserError, match=r"warm-up of other settings, seed or data than this run.s \(differing: seed\)"):
        train("drfuse", "matched", 4, cfg, tiny_results, tmp_path / "seed4", warm_start=warmup)
    with pytest.raises(UserError, match="transformer has no image warm-up"):
        train("transformer", "matched", 3, cfg, tiny_results, tmp_path / "tf", warm_start=warmup)
    with pytest.raises(UserError, match="train.cxr_warmup_epochs is 0"):
        warm_up(3, _cfg(tiny_cfg, cxr_warmup_epochs=0), tiny_results, tmp_path / "none")


def _drfuse_loss_read_every_step(outputs, labels, has_cxr, settings):
    """DrFuse's loss as the training step computed it before its parts stayed on the device: the
    rows with an image by a boolean mask and their count (device reads), every part read back as a
    Python float after every step."""
    paired = has_cxr.bool()
    batch = labels.shape[0]
    pred = losses.bce_per_sample(outputs["logits"], labels)
    orth_ehr = losses.abs_cos_per_sample(outputs["ehr_shared"], outputs["ehr_distinct"])
    total = pred.sum() + settings["lambda_orth"] * orth_ehr.sum()
    align_fn = losses.jsd_per_sample if settings["alignment"] == "jsd" else losses.mse_per_sample
    align = orth_cxr = aux = attn = pred.new_zeros(())
    n_paired = int(paired.sum())
    if n_paired:
        y = labels[paired]
        align_i = align_fn(outputs["ehr_shared"][paired], outputs["cxr_shared"][paired])
        orth_cxr_i = losses.abs_cos_per_sample(outputs["cxr_shared"][paired], outputs["cxr_distinct"][paired])
        class_losses = torch.stack(
            [losses.bce_per_class(outputs[k][paired], y) for k in ("aux_ehr", "aux_shared", "aux_cxr")], dim=2
        )
        aux_i = class_losses.mean(1).sum(1)
        order_losses = class_losses
        if settings["rank_order"] == "batch":
            order_losses = class_losses.mean(0, keepdim=True).expand_as(class_losses)
        weights = None if settings["rank_negatives"] == 1.0 else y + settings["rank_negatives"] * (1.0 - y)
        attn_i = losses.ranking_per_sample(
            outputs["attention"][paired], order_losses, settings["margin"], settings["rank_gap"], weights
        )
        paired_terms = (
            settings["lambda_jsd"] * align_i
            + settings["lambda_orth"] * orth_cxr_i
            + settings["lambda_attn"] * aux_i
            + (settings["lambda_attn"] * attn_i if settings["use_ranking"] else 0.0)
        )
        total = total + paired_terms.sum()
        align, orth_cxr, aux, attn = align_i.mean(), orth_cxr_i.mean(), aux_i.mean(), attn_i.mean()
    total = total / batch
    names = ("pred", settings["alignment"], "orth_ehr", "orth_cxr", "aux", "attn", "total")
    values = torch.stack([pred.mean(), align, orth_ehr.mean(), orth_cxr, aux, attn, total]).detach()
    parts = dict(zip(names, values.float().cpu().tolist()))
    parts["paired_share"] = n_paired / batch
    return total, parts


@pytest.mark.parametrize("name", ["drfuse", "mmtm"])
def test_loss_parts_left_on_the_device_train_bit_identically_to_reading_them_every_step(
    tiny_results, tiny_cfg, tmp_path, monkeypatch, name
):
    """The training step keeps its loss parts on the device and finds the rows with an image on the
    host (no device sync per step, for CUDA graphs): per-epoch metrics and trained weights equal,
    bit for bit, those of the step that read everything back every step. DrFuse with its image
    warm-up and the CXR drop of the matched set; MMTM for a baseline's parts."""
    cfg = _cfg(tiny_cfg, epochs=2, patience=5, cxr_warmup_epochs=1)
    model_cls = type(build_model(name, cfg["model"]))
    train(name, "matched", 0, cfg, tiny_results, tmp_path / "device")
    if name == "drfuse":
        monkeypatch.setattr(
            model_cls,
            "loss",
            lambda self, outputs, labels, has_cxr, paired_rows=None: _drfuse_loss_read_every_step(
                outputs, labels, has_cxr, self.loss_settings
            ),
        )
    else:
        loss_on_device = model_cls.loss

        def loss_read_every_step(self, *args, **kwargs):
            loss, parts = loss_on_device(self, *args, **kwargs)
            return loss, {key: float(value) for key, value in parts.items()}

        monkeypatch.setattr(model_cls, "loss", loss_read_every_step)
    train(name, "matched", 0, cfg, tiny_results, tmp_path / "host")
    metrics = {run: pl.read_csv(tmp_path / run / "metrics.csv").drop("seconds") for run in ("device", "host")}
    assert metrics["device"].height == 3  # the fusion models' warm-up epoch first
    parts = [c for c in metrics["device"].columns if c.startswith("train_loss:")]
    assert len(parts) >= 4 and all(metrics["device"][c].drop_nulls().len() > 0 for c in parts)
    assert metrics["device"].equals(metrics["host"])
    for file in ("best.pt", "last.pt"):
        a, b = checkpoint.load(tmp_path / "device" / file), checkpoint.load(tmp_path / "host" / file)
        assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"]), file


def predict_cxr_only_on_full(tiny_results, tiny_cfg, tmp_path):
    run_dir = tmp_path / "resnet50"
    model = build_model("resnet50", tiny_cfg["model"])
    meta = {"model_name": "resnet50", "model_cfg": tiny_cfg["model"]}
    checkpoint.save_atomic({"model": model.state_dict(), "meta": json.dumps(meta)}, run_dir / "best.pt")
    predict(run_dir, "full", tiny_cfg, tiny_results, tmp_path / "cxr.parquet")


def _double(batch):
    return tuple(t.double() if t.is_floating_point() else t for t in batch)


@pytest.mark.parametrize("name", ["drfuse", "medfuse"])
def test_padded_image_batches_train_like_unpadded_ones(tiny_results, tiny_cfg, name):
    """The CNN fed the whole batch (rows without CXR masked out of BatchNorm) gives the loss,
    gradients, BatchNorm statistics and predictions of the CNN fed only the rows with a CXR."""
    data = DeviceData(load_split(tiny_results, "train", "full"), torch.device("cpu"), with_images=True)
    torch.manual_seed(0)
    cfg = copy.deepcopy(tiny_cfg)
    cfg["model"]["image_size"] = 20  # float64 convolutions are slow on the CPU; 20 px still ends in 1 x 1
    unpadded = build_model(name, cfg["model"]).double().train()
    padded = copy.deepcopy(unpadded)
    settings = EngineSettings.from_cfg(cfg, torch.device("cpu"), cxr_drop=0.0)
    assert not settings.pad_images  # auto: off on the CPU
    idx = torch.arange(16)
    ehr, lengths, images, has_cxr, labels, _ = _double(
        make_batch(data, idx, settings, True, torch.Generator().manual_seed(0), True)
    )
    assert 1 < int(has_cxr.sum()) < 8  # most rows are padding

    results = []
    for model, pad in ((unpadded, False), (padded, True)):
        run = dataclasses.replace(settings, pad_images=pad)
        outputs = run_forward(model, ehr, lengths, images, has_cxr, run)
        loss, _ = model.loss(outputs, labels, has_cxr)
        loss.backward()
        model.eval()
        with torch.no_grad():
            probs = run_forward(model, ehr, lengths, images, has_cxr, run)["probs"]
        results.append((loss, probs))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)
    grads = 0
    for (key, a), (_, b) in zip(unpadded.named_parameters(), padded.named_parameters()):
        if a.grad is None:
            assert b.grad is None or not b.grad.any(), key
            continue
        # relative to the gradient's scale: BatchNorm's backward over a few values cancels terms
        scale = float(a.grad.abs().max())
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-9 * scale, msg=lambda m, key=key: f"{key}: {m}")
        grads += "cxr" in key
    assert grads > 20  # the CNN's weights did receive gradients
    for (key, a), (_, b) in zip(unpadded.named_buffers(), padded.named_buffers()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=lambda m, key=key: f"{key}: {m}")


def test_padded_forward_is_one_graph(tiny_cfg):
    """Static shapes: the padded DrFuse forward traces as one graph (what CUDA graphs need); the
    gathered one breaks on the data-dependent number of images."""
    model = build_model("drfuse", tiny_cfg["model"]).train()
    b = 8
    args = (torch.randn(b, 48, 76), torch.full((b,), 48), torch.randn(b, 3, 36, 36), torch.arange(b) % 3 == 0)
    breaks = {}
    for pad in (True, False):
        torch._dynamo.reset()
        with padded_image_batches(pad):
            breaks[pad] = torch._dynamo.explain(model)(*args).graph_break_count
    torch._dynamo.reset()
    assert breaks[True] == 0 and breaks[False] > 0, breaks


@pytest.mark.compiles
@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="torch.compile's default backend (inductor) needs a C++ compiler on the CPU: g++ or $CXX",
)
def test_compiled_padded_drfuse_step_gives_eager_loss_and_gradients(tiny_results, tiny_cfg):
    """`train.compile`: the padded DrFuse training step with its forward and backward compiled by
    the default backend (inductor, as `compile_model` does) traces as one graph and gives eager's
    loss and gradients within float32 rounding. Compiling takes about 2 minutes on 2 cores from a
    cold inductor cache (marker `compiles`)."""
    settings = EngineSettings.from_cfg(
        _cfg(tiny_cfg, compile="default", pad_images=True), torch.device("cpu"), cxr_drop=0.3
    )
    data = DeviceData(load_split(tiny_results, "train", "matched"), torch.device("cpu"), with_images=True)
    batch = make_batch(data, torch.arange(16), settings, True, torch.Generator().manual_seed(0), True)
    assert 0 < batch.paired.numel() < 16  # the CXR drop: rows with and without an image
    torch.manual_seed(0)
    eager = build_model("drfuse", tiny_cfg["model"]).train()
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        results = {}
        for name, model, forward in (
            ("eager", eager, eager),
            ("compiled", compiled, compile_model(compiled, settings)),
        ):
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            loss, parts = train_step(model, forward, optimizer, batch, settings)
            results[name] = (loss.detach(), {key: p.grad for key, p in model.named_parameters()})
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
        assert not torch._dynamo.utils.counters["graph_break"]
    finally:
        torch._dynamo.reset()
    (loss_e, grads_e), (loss_c, grads_c) = results["eager"], results["compiled"]
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=0)
    assert sum(g is not None for g in grads_e.values()) > 50
    for key, grad in grads_e.items():
        if grad is None:
            assert grads_c[key] is None or not grads_c[key].any(), key
            continue
        scale = float(grad.abs().max())  # relative to the gradient's scale: sums of many terms
        torch.testing.assert_close(
            grads_c[key], grad, rtol=0, atol=1e-4 * scale + 1e-12, msg=lambda m, key=key: f"{key}: {m}"
        )


def test_predictions_never_use_autocast(tiny_results, tiny_cfg, tmp_path, monkeypatch):
    """On CUDA with train.amp the training step runs under bf16 autocast; validation and test
    predictions do not (bf16 logits tie). Checked with the CUDA code path forced on the CPU."""
    entered = []

    def spy(device_type, dtype=None, **kwargs):
        entered.append((device_type, dtype))
        return contextlib.nullcontext()

    monkeypatch.setattr(torch, "autocast", spy)
    monkeypatch.setattr(EngineSettings, "cuda", property(lambda self: True))
    cfg = _cfg(tiny_cfg, amp=True)
    settings = EngineSettings.from_cfg(cfg, torch.device("cpu"), cxr_drop=0.0)
    model = build_model("drfuse", cfg["model"])
    data = DeviceData(load_split(tiny_results, "val", "full"), torch.device("cpu"), with_images=True)
    optimizer = torch.optim.Adam(model.parameters())
    batch = make_batch(data, torch.arange(16), settings, True, torch.Generator().manual_seed(0), True)
    model.train()
    train_step(model, model, optimizer, batch, settings)
    assert entered == [("cuda", torch.bfloat16)]  # the training step does use it

    entered.clear()
    probs = predict_outputs(model, model, data, settings)["prob"]
    assert probs.dtype == np.float32 and probs.shape == (data.n, len(PHENOTYPES))
    meta = {"model_name": "drfuse", "model_cfg": cfg["model"]}
    checkpoint.save_atomic({"model": model.state_dict(), "meta": json.dumps(meta)}, tmp_path / "run" / "best.pt")
    predict(tmp_path / "run", "full", cfg, tiny_results, tmp_path / "full.parquet")
    assert entered == []


def test_compiled_runs_see_one_batch_shape(tiny_results, tiny_cfg, tmp_path, monkeypatch):
    """With train.compile every forward gets batch_size rows: a trailing partial training batch
    is skipped, the last evaluation batch padded and cut back. (torch.compile itself is replaced
    by a recorder: compiling on 2 CPU cores takes minutes; benchmarks/gpu_check.py compiles.)"""
    modes, shapes = [], []

    def recording_compile(model, mode=None, **kwargs):
        modes.append(mode)

        def forward(ehr, lengths, images, has_cxr):
            shapes.append((model.training, ehr.shape[0]))
            return model(ehr, lengths, images, has_cxr)

        return forward

    monkeypatch.setattr(torch, "compile", recording_compile)
    cfg = _cfg(tiny_cfg, compile="reduce-overhead", epochs=1, batch_size=16)
    train_n, val_n = len(load_split(tiny_results, "train", "full")), len(load_split(tiny_results, "val", "full"))
    assert train_n % 16 and val_n % 16 and val_n > 16  # both end in a partial batch
    run = train("transformer", "full", 0, cfg, tiny_results, tmp_path / "run")
    assert modes == ["reduce-overhead"]
    assert {b for training, b in shapes} == {16}
    assert sum(training for training, _ in shapes) == train_n // 16
    assert sum(not training for training, _ in shapes) == -(-val_n // 16)
    assert run["epochs_run"] == 1 and np.isfinite(run["best_val_score"])
    with pytest.raises(UserError, match="train.compile = 'max-speed': allowed values are"):
        config_mod.check(_cfg(tiny_cfg, compile="max-speed"))


def _train_until_released(results, cfg, out_dir, started, release):
    """Child process: a real `train` that holds its folder until told to finish."""

    def hold(epoch):
        started.set()
        release.wait(120)

    train("transformer", "full", 0, cfg, results, out_dir, on_epoch_end=hold)


def _cli(cfg: dict, tmp_path, *args) -> tuple[int, list[str]]:
    """`drfuse --config <cfg> args...` in this process: (exit code, error lines logged)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    handler = _ListHandler()
    logging.getLogger("drfuse").addHandler(handler)
    try:
        code = cli.main(["--config", str(config), *[str(a) for a in args]])
    finally:
        logging.getLogger("drfuse").removeHandler(handler)
    return code, [r.getMessage() for r in handler.records if r.levelno >= logging.ERROR]


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_second_train_into_the_same_folder_fails_naming_the_first(tiny_results, tiny_cfg, tmp_path):
    """Issue-14 probe: two `drfuse train` into one --out used to both succeed, one silently
    replacing the other's files."""
    cfg = _cfg(tiny_cfg, epochs=2)
    out = tmp_path / "run"
    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_train_until_released, args=(tiny_results, cfg, out, started, release))
    first.start()
    try:
        assert started.wait(120), "the first training did not start"
        code, errors = _cli(
            cfg,
            tmp_path,
            "train",
            "--model",
            "transformer",
            "--train-set",
            "full",
            "--results",
            tiny_results,
            "--out",
            out,
        )
        assert code == 1 and len(errors) == 1 and "\n" not in errors[0]
        assert str(out) in errors[0] and f"pid {first.pid} on host {socket.gethostname()}, started " in errors[0]
    finally:
        release.set()
        first.join(120)
    assert first.exitcode == 0 and json.loads((out / "run.json").read_text())["epochs_run"] == 2
    # the lock went with its holder: training into the folder works again (and resumes: nothing to do)
    assert train("transformer", "full", 0, cfg, tiny_results, out)["epochs_run"] == 2


def test_corrupt_checkpoints_are_one_line_errors(tiny_results, tiny_cfg, tmp_path):
    """Issue-14 probe: a truncated or overwritten last.pt / best.pt used to end in a 25-line
    UnpicklingError advising weights_only=False."""
    cfg = _cfg(tiny_cfg, epochs=1)
    run_dir = tmp_path / "run"
    train("transformer", "full", 0, cfg, tiny_results, run_dir)
    train_args = ("train", "--model", "transformer", "--train-set", "full", "--results", tiny_results, "--out", run_dir)
    predict_args = (
        "predict",
        "--run",
        run_dir,
        "--test-set",
        "full",
        "--results",
        tiny_results,
        "--out-dir",
        tmp_path / "p",
    )
    for name, args, remedy in (
        ("last.pt", train_args, "delete it to train this run from epoch 1"),
        ("best.pt", predict_args, f"delete the run folder {run_dir} and train it again"),
    ):
        path = run_dir / name
        whole = path.read_bytes()
        for damaged in (whole[: len(whole) // 2], os.urandom(4096)):  # truncated; overwritten
            path.write_bytes(damaged)
            code, errors = _cli(cfg, tmp_path, *args)
            assert code == 1 and len(errors) == 1 and "\n" not in errors[0], errors
            assert errors[0].startswith(f"{path} is truncated or corrupt") and errors[0].endswith(remedy)
            assert "weights_only" not in errors[0]
        path.write_bytes(whole)
    assert _cli(cfg, tmp_path, *predict_args)[0] == 0


def test_stale_temp_files_are_removed_at_the_next_start(tiny_results, tiny_cfg, tmp_path):
    """Issue-14 probe: a save killed mid-write left its temporary file (as large as the
    checkpoint) for good. Only files of processes that are gone are removed."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead_pid = subprocess.Popen(["true"])  # its pid is free once it has exited
    dead_pid.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        killed_save = run_dir / f".last.pt.{dead_pid.pid}.0123abcd.tmp.pt"  # as drfuse.atomic names it
        killed_save.write_bytes(os.urandom(100_000))  # what a kill during torch.save leaves
        in_progress = run_dir / f".best.pt.{alive.pid}.4567cdef.tmp.pt"
        in_progress.write_bytes(b"being written")
        other = run_dir / "notes.tmp"
        other.write_text("not ours")
        train("transformer", "full", 0, _cfg(tiny_cfg, epochs=1), tiny_results, run_dir)
        assert not killed_save.exists()
        assert in_progress.exists() and other.exists()
    finally:
        alive.kill()
        alive.wait()
    assert sorted(p.name for p in run_dir.glob(".*.tmp*")) == [in_progress.name]


def test_train_with_predict_dir_writes_what_predict_writes(tiny_results, tiny_cfg, tmp_path):
    """The workflow's training job predicts its test sets in the same process (one torch import
    per run): the files must be those `drfuse predict` writes from the same best.pt."""
    cfg = _cfg(tiny_cfg, epochs=2)
    run_dir, together, alone = tmp_path / "run", tmp_path / "together", tmp_path / "alone"
    code, errors = _cli(
        cfg,
        tmp_path,
        "train",
        "--model",
        "drfuse",
        "--train-set",
        "matched",
        "--results",
        tiny_results,
        "--out",
        run_dir,
        "--predict-dir",
        together,
        "--test-set",
        "full",
        "matched",
    )
    assert code == 0, errors
    code, errors = _cli(
        cfg,
        tmp_path,
        "predict",
        "--run",
        run_dir,
        "--test-set",
        "full",
        "matched",
        "--results",
        tiny_results,
        "--out-dir",
        alone,
    )
    assert code == 0, errors
    for test_set in ("full", "matched"):
        frame = pl.read_parquet(together / f"{test_set}.parquet")
        assert frame.height > 0 and frame.equals(pl.read_parquet(alone / f"{test_set}.parquet"))
        with np.load(together / f"{test_set}.npz") as a, np.load(alone / f"{test_set}.npz") as b:
            assert set(a.files) == set(b.files) and "ehr_distinct" in a.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "args,message",
    [
        (("--model", "transformer", "--test-set", "full"), "--predict-dir and --test-set go together"),
        (("--model", "resnet50", "--predict-dir", "p", "--test-set", "full", "matched"), "resnet50 uses no EHR"),
    ],
)
def test_train_refuses_a_bad_prediction_request_before_training(tiny_results, tiny_cfg, tmp_path, args, message):
    run_dir = tmp_path / "run"
    code, errors = _cli(
        _cfg(tiny_cfg, epochs=1),
        tmp_path,
        "train",
        "--train-set",
        "matched",
        "--results",
        tiny_results,
        "--out",
        run_dir,
        *args,
    )
    assert code == 1 and len(errors) == 1 and message in errors[0]
    assert not run_dir.exists()  # nothing trained


def test_a_run_from_before_a_model_setting_existed_predicts_as_the_paper_built_it(tiny_results, tiny_cfg, tmp_path):
    """best.pt files written before model.cnn_width, rank_order, rank_gap, rank_negatives,
    attention_query and attention_prior existed record none of them: predict builds such a run as it was built then
    (drfuse.train.run.OLD_RUN_MODEL_SETTINGS), the model of the paper's values."""
    from drfuse.train.run import OLD_RUN_MODEL_SETTINGS

    paper = {
        **tiny_cfg["model"],
        "cnn_width": 64,
        "rank_order": "sample",
        "rank_gap": 0.0,
        "rank_negatives": 1.0,
        "attention_query": "mean",
        "attention_prior": "none",
    }
    assert {k: paper[k] for k in OLD_RUN_MODEL_SETTINGS} == OLD_RUN_MODEL_SETTINGS
    torch.manual_seed(0)
    model = build_model("drfuse", paper)
    old = {k: v for k, v in paper.items() if k not in OLD_RUN_MODEL_SETTINGS}
    frames = []
    for name, model_cfg in (("new", paper), ("old", old)):
        meta = {"model_name": "drfuse", "model_cfg": model_cfg}
        checkpoint.save_atomic({"model": model.state_dict(), "meta": json.dumps(meta)}, tmp_path / name / "best.pt")
        frames.append(predict(tmp_path / name, "matched", tiny_cfg, tiny_results, tmp_path / f"{name}.parquet"))
    assert frames[0].equals(frames[1])


def test_predict_refuses_a_results_folder_of_other_data_naming_both(tiny_results, tiny_cfg, tmp_path):
    """Issue-26 probe: `drfuse predict` with a run trained in results folder A, given folder B with
    another split.seed, exited 0 with 26 of the 43 "test" stays from the run's training split."""
    import shutil

    cfg = _cfg(tiny_cfg, epochs=1)
    run_dir = tmp_path / "run"
    run = train("transformer", "full", 0, cfg, tiny_results, run_dir)
    recorded = run["data_fingerprint"]
    assert set(recorded) == {"split", "cohort", "features", "images"}
    assert json.loads(checkpoint.load(run_dir / "best.pt")["meta"])["data_fingerprint"] == recorded

    other = tmp_path / "other results"  # a copy: other paths and mtimes, the same content
    for stage in ("cohort", "features", "images"):
        shutil.copytree(tiny_results / stage, other / stage)
    predict(run_dir, "full", cfg, other, tmp_path / "same.parquet")  # the same data: accepted

    stays_path = other / "cohort" / "stays.parquet"
    stays = pl.read_parquet(stays_path)
    reshuffled = np.random.default_rng(1).permutation(stays["split"].to_numpy())  # another split.seed
    stays.with_columns(split=pl.Series(reshuffled)).write_parquet(stays_path)
    with pytest.raises(UserError) as err:
        predict(run_dir, "full", cfg, other, tmp_path / "moved.parquet")
    assert str(err.value) == (
        f"{run_dir} was trained on other data than results folder {other} holds (split differs; it was trained on "
        f"{tiny_results}): predict with the results folder it was trained on, or train it again"
    )
    stays.write_parquet(stays_path)
    ehr = np.load(other / "features" / "ehr.npy")
    np.save(other / "features" / "ehr.npy", ehr * 1.01)  # features rebuilt (another normalisation)
    code, errors = _cli(
        cfg,
        tmp_path,
        "predict",
        "--run",
        run_dir,
        "--test-set",
        "full",
        "--results",
        other,
        "--out-dir",
        tmp_path / "p",
    )
    assert code == 1 and len(errors) == 1 and "(features differs;" in errors[0] and str(other) in errors[0]
    assert not (tmp_path / "p" / "full.parquet").exists() and not (tmp_path / "moved.parquet").exists()


def test_an_unwritable_predict_dir_is_refused_before_training(tiny_results, tiny_cfg, tmp_path):
    """Issue-26 probe: an unwritable --predict-dir was found after training finished."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    run_dir = tmp_path / "run"
    code, errors = _cli(
        _cfg(tiny_cfg, epochs=1),
        tmp_path,
        "train",
        "--model",
        "transformer",
        "--train-set",
        "full",
        "--results",
        tiny_results,
        "--out",
        run_dir,
        "--predict-dir",
        blocker / "p",
        "--test-set",
        "full",
    )
    assert code == 1 and errors == [
        f"--predict-dir {blocker / 'p'}: cannot write there (Not a directory); choose a folder you can write"
    ]
    assert not run_dir.exists()  # nothing trained
