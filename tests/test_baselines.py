"""Baselines: forward + backward on mixed batches, their missing-CXR behaviour, MedFuse init, sizes."""

from __future__ import annotations

import pytest
import torch

from drfuse.errors import UserError
from drfuse.models import build_model
from drfuse.phenotypes import N_PHENOTYPES

B, T, F = 6, 48, 76
HAS_CXR = torch.tensor([True, False, True, False, True, True])
BASELINES = ["transformer", "resnet50", "mmtm", "daft", "medfuse", "medfuse2"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cfg(tiny_cfg) -> dict:
    return {**tiny_cfg["model"], "baseline_backbone": "resnet18"}


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ehr = torch.randn(B, T, F, generator=g)
    lengths = torch.tensor([48, 12, 3, 48, 30, 1])
    ehr[torch.arange(T)[None, :] >= lengths[:, None]] = 0
    images = torch.randn(B, 3, 32, 32, generator=g)
    labels = torch.randint(0, 2, (B, N_PHENOTYPES), generator=g)
    return ehr, lengths, images, labels


@pytest.mark.parametrize("name", BASELINES)
def test_forward_backward_mixed_batch(cfg, name):
    torch.manual_seed(0)
    model = build_model(name, cfg).train()
    ehr, lengths, images, labels = batch()
    has_cxr = HAS_CXR if model.uses_ehr else torch.ones(B, dtype=torch.bool)
    out = model(ehr, lengths, images, has_cxr)
    assert tuple(out["logits"].shape) == (B, N_PHENOTYPES)
    loss, parts = model.loss(out, labels, has_cxr)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0 and "total" in parts
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if model.uses_cxr and model.uses_ehr:  # both encoders are trained
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cxr_encoder.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.ehr_encoder.parameters())


@pytest.mark.parametrize("name", ["mmtm", "daft"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_missing_cxr_is_an_all_zero_image(cfg, name, train_mode):
    torch.manual_seed(0)
    model = build_model(name, cfg).train(train_mode)
    ehr, lengths, images, _ = batch()
    zeroed = images.clone()
    zeroed[~HAS_CXR] = 0
    with torch.no_grad():
        missing = model(ehr, lengths, images, HAS_CXR)["logits"]
        zero_image = model(ehr, lengths, zeroed, torch.ones(B, dtype=torch.bool))["logits"]
        real_image = model(ehr, lengths, images, torch.ones(B, dtype=torch.bool))["logits"]
    assert torch.allclose(missing, zero_image, atol=1e-6)
    assert not torch.allclose(missing[~HAS_CXR], real_image[~HAS_CXR], atol=1e-6)  # the image does matter


@pytest.mark.parametrize("name", ["medfuse", "medfuse2"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_medfuse_missing_cxr_independent_of_image_slot(cfg, name, train_mode):
    torch.manual_seed(0)
    model = build_model(name, {**cfg, "dropout": 0.0}).train(train_mode)
    ehr, lengths, images, _ = batch()
    other = images.clone()
    other[~HAS_CXR] = torch.randn(int((~HAS_CXR).sum()), 3, 32, 32) * 10
    with torch.no_grad():
        a = model(ehr, lengths, images, HAS_CXR)["logits"]
        b = model(ehr, lengths, other, HAS_CXR)["logits"]
        paired_view = model(ehr, lengths, images, torch.ones(B, dtype=torch.bool))["logits"]
    assert torch.allclose(a, b, atol=1e-6)
    # a sequence of length 1 differs from [EHR, CXR]
    assert not torch.allclose(a[~HAS_CXR], paired_view[~HAS_CXR], atol=1e-6)


def test_unimodal_models(cfg):
    torch.manual_seed(0)
    ehr, lengths, images, _ = batch()
    transformer = build_model("transformer", cfg).eval()
    assert transformer.uses_ehr and not transformer.uses_cxr
    with torch.no_grad():
        a = transformer(ehr, lengths, images, HAS_CXR)["logits"]
        b = transformer(ehr, lengths, images * 0 + 3, ~HAS_CXR)["logits"]
        # padding beyond the length does not matter
        padded = ehr.clone()
        padded[1, 12:] = 7.0
        c = transformer(padded, lengths, images, HAS_CXR)["logits"]
    assert torch.allclose(a, b) and torch.allclose(a, c, atol=1e-5)
    cnn = build_model("resnet50", cfg)
    assert cnn.uses_cxr and not cnn.uses_ehr
    with pytest.raises(ValueError, match="usable CXR"):
        cnn(ehr, lengths, images, HAS_CXR)


def test_medfuse2_init_from_unimodal_checkpoints(cfg, tmp_path):
    torch.manual_seed(0)
    transformer = build_model("transformer", cfg)
    cnn = build_model("resnet50", cfg)
    torch.save({"model": transformer.state_dict(), "epoch": 3}, tmp_path / "ehr.pt")
    torch.save(cnn.state_dict(), tmp_path / "cxr.pt")
    fused = build_model(
        "medfuse2", {**cfg, "medfuse_init_ehr": str(tmp_path / "ehr.pt"), "medfuse_init_cxr": str(tmp_path / "cxr.pt")}
    )
    for key, value in fused.ehr_encoder.state_dict().items():
        assert torch.equal(value, transformer.ehr_encoder.state_dict()[key]), key
    for key, value in fused.cxr_encoder.state_dict().items():
        assert torch.equal(value, cnn.cxr_encoder.state_dict()[key]), key
    # an LSTM MedFuse cannot start from the Transformer's weights: say which setting is wrong
    with pytest.raises(UserError, match="medfuse_init_ehr"):
        build_model("medfuse", {**cfg, "medfuse_init_ehr": str(tmp_path / "ehr.pt")})
    with pytest.raises(UserError, match="medfuse_init_cxr"):
        build_model("medfuse", {**cfg, "medfuse_init_cxr": str(tmp_path / "nowhere.pt")})


def test_parameter_counts(cfg):
    d, c = cfg["d_model"], N_PHENOTYPES
    feat = 8 * cfg["cnn_width"]  # resnet18's pooled feature (512 at torchvision's width 64)
    cnn = build_model("resnet50", cfg)
    backbone = sum(p.numel() for p in cnn.cxr_encoder.parameters()) - (feat * d + d)
    assert sum(p.numel() for p in cnn.parameters()) == backbone + (feat * d + d) + (d * c + c)

    def lstm(i, h):
        return 4 * (i * h + h * h + 2 * h)

    medfuse = build_model("medfuse", cfg)
    ehr_lstm = lstm(F, d) + lstm(d, d)
    fusion = (feat * d + d) + lstm(d, feat) + (feat * c + c)
    warmup_head = feat * c + c  # reads the CNN alone in our recipe's image warm-up
    assert sum(p.numel() for p in medfuse.parameters()) == ehr_lstm + backbone + fusion + warmup_head
    mmtm = build_model("mmtm", cfg)  # one MMTM block after layer4 (feat channels), ratio 4
    width = int(2 * (feat + d) / 4)
    block = ((feat + d) * width + width) + (width * feat + feat) + (width * d + d)
    heads = (d * c + c) + (feat * c + c) + (d * feat + feat) + (2 * feat * c + c)
    assert sum(p.numel() for p in mmtm.parameters()) == ehr_lstm + backbone + block + heads
    daft = build_model("daft", cfg)  # one DAFT block after layer3: no layer4
    stage3 = 4 * cfg["cnn_width"]
    layer4 = sum(p.numel() for p in cnn.cxr_encoder.trunk.layers[3].parameters())
    bottleneck = int((16 + stage3) / 7)
    assert sum(p.numel() for p in daft.parameters()) == (
        ehr_lstm + backbone - layer4 + (stage3 + d) * bottleneck + bottleneck * 2 * d + (d * c + c) + (stage3 * c + c)
    )


def test_fusion_blocks_sit_where_medfuses_phenotyping_scripts_put_them(cfg):
    """MedFuse's scripts: MMTM `--layer_after 4`, DAFT `--layer_after 3` (config.yaml's defaults)."""
    assert cfg["mmtm_stages"] == [4] and cfg["daft_stages"] == [3]
    assert sorted(build_model("mmtm", cfg).blocks) == ["4"]
    daft = build_model("daft", cfg)
    assert sorted(daft.blocks) == ["3"] and len(daft.cxr_encoder.trunk.layers) == 3


def test_fusion_stage_settings(cfg):
    mmtm = build_model("mmtm", {**cfg, "mmtm_stages": [0, 2, 4]})
    assert sorted(mmtm.blocks) == ["0", "2", "4"]
    daft = build_model("daft", {**cfg, "daft_stages": [2]})
    assert len(daft.cxr_encoder.trunk.layers) == 2  # later CNN stages would not reach the output
    ehr, lengths, images, _ = batch()
    assert daft(ehr, lengths, images, HAS_CXR)["logits"].shape == (B, N_PHENOTYPES)
    with pytest.raises(UserError, match="mmtm_stages"):
        build_model("mmtm", {**cfg, "mmtm_stages": [5]})
    with pytest.raises(UserError, match="lstm_layers"):
        build_model("daft", {**cfg, "lstm_layers": 1})
