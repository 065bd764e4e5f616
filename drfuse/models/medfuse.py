"""MedFuse (Hayat et al., MLHC 2022) and MedFuse-II (the DrFuse paper's variant).

Follows MedFuse's `forward_lstm_fused`: an EHR feature and a CXR feature projected to the EHR
width form a sequence [EHR, CXR] that a fusion LSTM (hidden size = the CNN's feature width, as in
MedFuse) reads; a sample without CXR is a sequence of length 1 (pack_padded_sequence); its last
hidden state goes to Linear(-> the task's labels: 25, or 1 for mortality). Loss: BCE.
- `medfuse`: MedFuse's encoders: 2-layer LSTM (`model.lstm_layers`, hidden d) and ResNet-34
  (`model.baseline_backbone`, default resnet34).
- `medfuse2`: DrFuse's Transformer EHR encoder (one branch) and the `model.backbone` CNN (ResNet50
  at the paper's settings).
MedFuse initialises its encoders from uni-modal pre-training; here that is optional:
`model.medfuse_init_ehr` / `model.medfuse_init_cxr` name checkpoints whose `ehr_encoder.*` /
`cxr_encoder.*` weights are loaded (e.g. the `transformer` / `resnet50` runs' best.pt for
`medfuse2`; extra keys such as the uni-modal CNN's Linear(feat -> d) are ignored).
Adapted: the CNN runs only on the samples with a CXR (MedFuse feeds every image and zeroes the
missing ones' features), so a missing sample's output never depends on its image slot.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from drfuse.errors import UserError
from drfuse.models import losses
from drfuse.models.encoders import (
    EHRLSTM,
    CNNEncoder,
    EHRTransformer,
    baseline_cnn,
    cnn,
    lstm_layers,
    run_on_available,
)
from drfuse.phenotypes import N_PHENOTYPES

STATE_KEYS = ("model", "state_dict", "model_state_dict", "model_state")


def load_encoder(module: nn.Module, prefix: str, path: str, setting: str) -> None:
    """Load `prefix.*` weights of the checkpoint at `path` into `module`; every weight the module
    has must be present with the same shape, extra ones are ignored."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"model.{setting}: no such checkpoint {file}")
    obj = torch.load(file, map_location="cpu", weights_only=True)
    for key in STATE_KEYS:  # a training checkpoint wraps the state_dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k[len(prefix) + 1 :]: v for k, v in obj.items() if k.startswith(prefix + ".")}
    own = module.state_dict()
    bad = [k for k, v in own.items() if k not in state or state[k].shape != v.shape]
    if bad:
        raise UserError(
            f"model.{setting}: {file} has no matching {prefix}.* weights for this model "
            f"({len(bad)} of {len(own)} missing or of another shape, e.g. {bad[0]})"
        )
    module.load_state_dict({k: state[k] for k in own})


class MedFuse(nn.Module):
    uses_ehr = True
    uses_cxr = True
    # MedFuse's code never drops an image while training (drfuse.train.run.training_cxr_drop)
    cxr_drop_setting = "baseline_cxr_drop"
    # learns at `train.ehr_lr_factor` x lr (drfuse.train.engine.lr_factors)
    ehr_encoder_prefix = "ehr_encoder"

    def __init__(self, cfg: dict, ehr_encoder: nn.Module, cxr_encoder: CNNEncoder, n_outputs: int = N_PHENOTYPES):
        super().__init__()
        d = cfg["d_model"]
        self.ehr_encoder = ehr_encoder
        self.cxr_encoder = cxr_encoder
        feat = cxr_encoder.out_dim
        self.projection = nn.Linear(feat, d)
        self.fusion = nn.LSTM(d, feat, batch_first=True)
        self.classifier = nn.Linear(feat, n_outputs)
        # reads the CXR feature alone during the image warm-up only (MedFuse's uni-modal
        # pre-training has such a head); built last, so the other parameters' initial values do not
        # depend on it
        self.warmup_head = nn.Linear(feat, n_outputs)
        if cfg["medfuse_init_ehr"]:
            load_encoder(self.ehr_encoder, "ehr_encoder", cfg["medfuse_init_ehr"], "medfuse_init_ehr")
        if cfg["medfuse_init_cxr"]:
            load_encoder(self.cxr_encoder, "cxr_encoder", cfg["medfuse_init_cxr"], "medfuse_init_cxr")

    def forward(self, ehr, lengths, images, has_cxr) -> dict:
        has_cxr = has_cxr.bool()
        ehr_feat = self.ehr_encoder(ehr, lengths)
        if isinstance(ehr_feat, tuple):  # the Transformer encoder returns one vector per branch
            ehr_feat = ehr_feat[0]
        (cxr_feat,) = run_on_available(self.cxr_encoder, images, has_cxr, (self.cxr_encoder.out_dim,), ehr_feat)
        tokens = torch.stack([ehr_feat, self.projection(cxr_feat).to(ehr_feat.dtype)], dim=1)
        steps = 1 + has_cxr.long()  # [EHR] or [EHR, CXR]
        packed = nn.utils.rnn.pack_padded_sequence(tokens, steps.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.fusion(packed)
        logits = self.classifier(h[-1])
        return {"logits": logits, "probs": torch.sigmoid(logits)}

    def warmup_loss(self, images: torch.Tensor, labels: torch.Tensor):
        """The image branch alone (`train.cxr_warmup_epochs`): the CNN read by `warmup_head`, BCE over
        a batch whose rows all have an image."""
        logits = self.warmup_head(self.cxr_encoder(images))
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        return loss, {"warmup_pred_cxr": loss.detach()}

    def loss(self, outputs: dict, labels, has_cxr=None, paired_rows=None):
        return losses.bce_loss(outputs["logits"], labels)


def build_medfuse(cfg: dict, n_outputs: int = N_PHENOTYPES) -> MedFuse:
    return MedFuse(cfg, EHRLSTM(cfg, layers=lstm_layers(cfg)), CNNEncoder(*baseline_cnn(cfg)), n_outputs)


def build_medfuse2(cfg: dict, n_outputs: int = N_PHENOTYPES) -> MedFuse:
    return MedFuse(cfg, EHRTransformer(cfg, n_branches=1), CNNEncoder(*cnn(cfg)), n_outputs)
