"""Training engine: data selection, CXR drop, augmentation, learning, resume, predictions."""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import average_precision_score

from drfuse.errors import UserError
from drfuse.images.cache import ImageCache
from drfuse.models import build_model
from drfuse.phenotypes import PHENOTYPES
from drfuse.train import checkpoint
from drfuse.train.augment import IMAGENET_MEAN, IMAGENET_STD, AugmentSettings, prepare_images
from drfuse.train.data import dataset_for, load_split
from drfuse.train.engine import DeviceData, EngineSettings, make_batch, resolve_device
from drfuse.train.metrics import macro_scores
from drfuse.train.run import predict, train


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
    ehr, lengths, images, has_cxr, labels = make_batch(data, idx, settings, True, generator, True)
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


def test_augmentation_on_tensors():
    raw = torch.randint(0, 256, (5, 40, 40), dtype=torch.uint8)
    centre = prepare_images(raw, 32, train=False)
    assert centre.shape == (5, 3, 32, 32) and centre.dtype == torch.float32
    # grayscale copied to 3 channels, ImageNet-normalised
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    np.testing.assert_allclose((centre * std + mean)[:, 0] * 255, raw[:, 4:36, 4:36].float(), atol=1e-3)
    assert torch.allclose(centre[:, 1] * IMAGENET_STD[1] + IMAGENET_MEAN[1], centre[:, 2] * IMAGENET_STD[2] + IMAGENET_MEAN[2], atol=1e-6)
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
        resolve_device({"device": "cuda"})


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
    assert written.columns == ["stay_id", "has_cxr", *[f"y:{x}" for x in PHENOTYPES], *[f"p:{x}" for x in PHENOTYPES], *attn]
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


def predict_cxr_only_on_full(tiny_results, tiny_cfg, tmp_path):
    run_dir = tmp_path / "resnet50"
    model = build_model("resnet50", tiny_cfg["model"])
    meta = {"model_name": "resnet50", "model_cfg": tiny_cfg["model"]}
    checkpoint.save_atomic({"model": model.state_dict(), "meta": json.dumps(meta)}, run_dir / "best.pt")
    predict(run_dir, "full", tiny_cfg, tiny_results, tmp_path / "cxr.parquet")
