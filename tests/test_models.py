"""DrFuse: output shapes, the missing-CXR path, masked attention, ablations, weights, parameter count."""

from __future__ import annotations

import pytest
import torch
import torchvision

from drfuse.errors import UserError
from drfuse.models import MODELS, build_model
from drfuse.models.drfuse import logit_pool
from drfuse.models.encoders import build_resnet
from drfuse.phenotypes import N_PHENOTYPES

B, T, F = 6, 48, 76
HAS_CXR = torch.tensor([True, False, True, False, True, True])


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cfg(tiny_cfg) -> dict:
    return dict(tiny_cfg["model"])  # d 32, 2 heads, ff 64, dropout 0, resnet18, 32 px


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ehr = torch.randn(B, T, F, generator=g)
    lengths = torch.tensor([48, 12, 3, 48, 30, 1])
    ehr[torch.arange(T)[None, :] >= lengths[:, None]] = 0  # rows past the stay's length are zero (ehr.npy)
    images = torch.randn(B, 3, 32, 32, generator=g)
    labels = torch.randint(0, 2, (B, N_PHENOTYPES), generator=g)
    return ehr, lengths, images, labels


def drfuse_eval_outputs(cfg):
    """A DrFuse (seed 0) in eval mode and its outputs on `batch()` with HAS_CXR."""
    torch.manual_seed(0)
    model = build_model("drfuse", cfg).eval()
    ehr, lengths, images, _ = batch()
    with torch.no_grad():
        return model, model(ehr, lengths, images, HAS_CXR)


def test_outputs_shapes_and_missing_rows(cfg):
    _, out = drfuse_eval_outputs(cfg)
    d, c = cfg["d_model"], N_PHENOTYPES
    shapes = {
        "logits": (B, c),
        "probs": (B, c),
        "attention": (B, c, 3),
        "ehr_shared": (B, d),
        "ehr_distinct": (B, d),
        "cxr_shared": (B, d),
        "cxr_distinct": (B, d),
        "h_shared": (B, d),
        "aux_ehr": (B, c),
        "aux_shared": (B, c),
        "aux_cxr": (B, c),
    }
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
    for key in ("logits", "probs", "attention", "ehr_shared", "ehr_distinct", "h_shared", "aux_ehr", "aux_shared"):
        assert torch.isfinite(out[key]).all(), key
    for key in ("cxr_shared", "cxr_distinct", "aux_cxr"):  # NaN exactly in the rows without CXR
        assert torch.equal(torch.isnan(out[key]).all(1), ~HAS_CXR), key
        assert torch.isfinite(out[key][HAS_CXR]).all(), key
    assert torch.allclose(out["probs"], torch.sigmoid(out["logits"]))


def test_token_logits_are_the_parts_of_the_fused_logit(cfg):
    """psi_c . z_c with z_c = sum_j alpha_cj v_j (Eq. 8), split by token: alpha_cj (psi_c . v_j)."""
    model, out = drfuse_eval_outputs(cfg)
    with torch.no_grad():
        tokens = torch.stack([out["ehr_distinct"], out["h_shared"], torch.nan_to_num(out["cxr_distinct"])], dim=1)
        v = model.attn_proj(tokens).unflatten(-1, (2 + N_PHENOTYPES, cfg["d_model"]))[:, :, 1]  # (B, 3, d)
    psi = model.final_head.weight  # (C, d)
    for b in (0, int(torch.nonzero(~HAS_CXR)[0])):
        for c in (0, 7, N_PHENOTYPES - 1):
            z = sum(out["attention"][b, c, j] * v[b, j] for j in range(3))
            assert torch.allclose(out["logits"][b, c], psi[c] @ z + model.final_head.bias[c], atol=1e-5)
            for j in range(3):
                assert torch.allclose(
                    out["token_logits"][b, c, j], out["attention"][b, c, j] * (psi[c] @ v[b, j]), atol=1e-5
                )
    assert torch.allclose(out["token_logits"].sum(-1) + model.final_head.bias, out["logits"], atol=1e-6)
    assert (out["token_logits"][~HAS_CXR, :, 2] == 0).all()  # a missing CXR adds nothing


def test_masked_attention_and_shared_pooling(cfg):
    _, out = drfuse_eval_outputs(cfg)
    att = out["attention"]
    assert torch.allclose(att.sum(-1), torch.ones(B, N_PHENOTYPES), atol=1e-6)
    assert (att[~HAS_CXR, :, 2] == 0).all()  # CXR token masked to -inf
    assert (att[HAS_CXR, :, 2] > 0).all()
    paired = HAS_CXR
    assert torch.allclose(
        out["h_shared"][paired], logit_pool(out["ehr_shared"][paired], out["cxr_shared"][paired]), atol=1e-6
    )
    assert torch.equal(out["h_shared"][~paired], out["ehr_shared"][~paired])


@pytest.mark.parametrize("train_mode", [False, True])
def test_missing_cxr_output_independent_of_image_slot(cfg, train_mode):
    torch.manual_seed(0)
    model = build_model("drfuse", {**cfg, "dropout": 0.0}).train(train_mode)
    ehr, lengths, images, _ = batch()
    other = images.clone()
    other[~HAS_CXR] = torch.randn(int((~HAS_CXR).sum()), 3, 32, 32) * 10 + 5  # garbage in the missing slots
    with torch.no_grad():
        a = model(ehr, lengths, images, HAS_CXR)
        b = model(ehr, lengths, other, HAS_CXR)
    for key in ("logits", "attention", "ehr_shared", "h_shared"):
        # every row, paired ones too: in train mode BatchNorm must not have seen the missing images
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_batch_without_cxr_and_backward(cfg):
    torch.manual_seed(0)
    model = build_model("drfuse", cfg).train()
    ehr, lengths, images, labels = batch()
    out = model(ehr, lengths, images, torch.zeros(B, dtype=torch.bool))
    loss, parts = model.loss(out, labels, torch.zeros(B, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and float(parts["jsd"]) == 0.0
    # the CNN was not run: its weights get no gradient at all
    assert model.cxr_stem[0].weight.grad is None
    assert all(torch.isfinite(p.grad).all() for p in model.ehr_encoder.parameters() if p.grad is not None)

    model.zero_grad()
    out = model(ehr, lengths, images, HAS_CXR)
    loss, parts = model.loss(out, labels, HAS_CXR)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert set(parts) >= {"pred", "jsd", "orth_ehr", "orth_cxr", "aux", "attn", "total"}


def test_warmup_loss_trains_only_the_image_branch(cfg):
    # `train.cxr_warmup_epochs`: the stem, the CXR-distinct trunk and g3, and nothing else
    torch.manual_seed(0)
    model = build_model("drfuse", cfg).train()
    _, _, images, labels = batch()
    loss, parts = model.warmup_loss(images, labels.float())
    aux = model.aux_heads[2](model.cxr_trunk_distinct(model.cxr_stem(images)))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(aux, labels.float())
    assert torch.allclose(loss, expected) and torch.allclose(parts["warmup_aux_cxr"], expected)
    loss.backward()
    image_branch = ("cxr_stem.", "cxr_trunk_distinct.", "aux_heads.2.")
    for name, param in model.named_parameters():
        if name.startswith(image_branch):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_ablations(cfg):
    torch.manual_seed(0)
    ehr, lengths, images, labels = batch()
    nd = build_model("drfuse_no_disentangle", {**cfg, "lambda_jsd": 1.0, "lambda_orth": 1.0})
    assert nd.loss_settings["lambda_jsd"] == 0.0 and nd.loss_settings["lambda_orth"] == 0.0
    mse = build_model("drfuse_mse", cfg).eval()
    with torch.no_grad():
        out = mse(ehr, lengths, images, HAS_CXR)
    _, parts = mse.loss(out, labels, HAS_CXR)
    assert "mse" in parts and "jsd" not in parts
    assert torch.allclose(
        out["h_shared"][HAS_CXR], (out["ehr_shared"][HAS_CXR] + out["cxr_shared"][HAS_CXR]) / 2, atol=1e-6
    )
    assert build_model("drfuse_no_rank", cfg).loss_settings["use_ranking"] is False
    assert build_model("drfuse", cfg).loss_settings["use_ranking"] is True


def _transformer_layer_params(d: int, ff: int) -> int:
    return (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 4 * d


def test_parameter_count(cfg):
    d, ff, c = cfg["d_model"], cfg["ff_dim"], N_PHENOTYPES
    resnet = build_resnet("resnet18", "", cfg["cnn_width"])
    stem = sum(p.numel() for p in [*resnet.conv1.parameters(), *resnet.bn1.parameters()])
    trunk = sum(p.numel() for m in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4) for p in m.parameters())
    ehr = (F * d + d) + cfg["max_len"] * d + 3 * _transformer_layer_params(d, ff)
    cxr = stem + 2 * (trunk + 8 * cfg["cnn_width"] * d + d)
    proj = (d * 2 * d + 2 * d) + (2 * d * d + d) + (d * d + d)
    attn = d * (2 + c) * d + (2 + c) * d
    heads = (d * c + c) + 3 * ((d * d + d) + (d * c + c))
    two_layer = build_model("drfuse", {**cfg, "aux_head": "mlp"})
    assert sum(p.numel() for p in two_layer.parameters()) == ehr + cxr + proj + attn + heads
    linear = build_model("drfuse", {**cfg, "aux_head": "linear"})
    assert sum(p.numel() for p in linear.parameters()) == ehr + cxr + proj + attn + 4 * (d * c + c)


def test_pretrained_weights_from_local_file(cfg, tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    model = build_model("drfuse", {**cfg, "cnn_width": 64, "pretrained_weights": str(path)})
    assert torch.equal(model.cxr_stem[0].weight, ref.conv1.weight)
    assert torch.equal(model.cxr_trunk_shared.layers[3][1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(model.cxr_trunk_distinct.layers[0][0].conv1.weight, ref.layer1[0].conv1.weight)
    with pytest.raises(UserError, match="pretrained_weights"):
        build_model("drfuse", {**cfg, "pretrained_weights": str(tmp_path / "missing.pt")})
    with pytest.raises(UserError, match="pretrained_weights"):
        build_model("drfuse", {**cfg, "cnn_width": 64, "backbone": "resnet34", "pretrained_weights": str(path)})
    with pytest.raises(UserError, match="model.cnn_width = 32"):
        build_model("drfuse", {**cfg, "cnn_width": 32, "pretrained_weights": str(path)})


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_cnn_width_scales_every_stage_of_torchvisions_resnet(backbone):
    reference = getattr(torchvision.models, backbone)(weights=None).state_dict()
    assert {k: v.shape for k, v in build_resnet(backbone).state_dict().items()} == {
        k: v.shape for k, v in reference.items()
    }
    torch.manual_seed(0)
    narrow = build_resnet(backbone, "", 16)
    shapes = {k: v.shape for k, v in narrow.state_dict().items()}
    assert shapes.keys() == reference.keys()
    for key, full in ((k, tuple(v.shape)) for k, v in reference.items()):
        if key == "conv1.weight":  # RGB in, channels out
            assert shapes[key] == (full[0] // 4, 3, *full[2:]), key
        elif key == "fc.weight":  # classes out, features in
            assert shapes[key] == (full[0], full[1] // 4), key
        elif key != "fc.bias" and full:  # num_batches_tracked is a scalar
            assert shapes[key] == tuple(n // 4 for n in full[:2]) + full[2:], key
    assert narrow(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    # initialised as torchvision initialises: BatchNorm at (1, 0), convolutions Kaiming-normal on fan-out
    assert all(
        torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
        for m in narrow.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    conv = narrow.layer4[0].conv1.weight
    expected_std = (2 / (conv.shape[0] * conv.shape[2] * conv.shape[3])) ** 0.5
    assert abs(conv.std().item() / expected_std - 1) < 0.05


# each fusion baseline's image branch in the warm-up: its CNN and the head that reads it alone
WARMUP_PARTS = {
    "mmtm": {"cxr_encoder", "cxr_head"},
    "daft": {"cxr_encoder", "warmup_head"},
    "medfuse": {"cxr_encoder", "warmup_head"},
    "medfuse2": {"cxr_encoder", "warmup_head"},
}


@pytest.mark.parametrize("name", sorted(WARMUP_PARTS))
def test_fusion_baselines_warm_up_their_cnn_alone(name, cfg):
    """Our recipe's image warm-up on a baseline (`mmtm_ours`, ...): BCE of its CNN read by an image
    head, every other part untouched; the EHR encoder is what `train.ehr_lr_factor` slows."""
    torch.manual_seed(0)
    model = build_model(name, {**cfg, "baseline_backbone": "resnet18"}).train()
    _, _, images, labels = batch()
    loss, parts = model.warmup_loss(images, labels.float())
    assert torch.isfinite(loss) and torch.allclose(parts["warmup_pred_cxr"], loss.detach())
    loss.backward()
    moved = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == WARMUP_PARTS[name]
    assert model.ehr_encoder_prefix == "ehr_encoder" and hasattr(model, "ehr_encoder")


def test_registry_builds_every_model_with_interface(cfg):
    for name in MODELS:
        model = build_model(name, {**cfg, "baseline_backbone": "resnet18"})
        assert isinstance(model.uses_ehr, bool) and isinstance(model.uses_cxr, bool), name
        assert callable(model.loss)
    with pytest.raises(UserError, match="unknown model"):
        build_model("nope", cfg)
    with pytest.raises(UserError, match="aux_head"):
        build_model("drfuse", {**cfg, "aux_head": "deep"})
