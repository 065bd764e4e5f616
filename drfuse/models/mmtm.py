"""MMTM baseline (Joze et al., CVPR 2020), as implemented in MedFuse's repository.

Follows MedFuse's `FusionMMTM`: a 2-layer LSTM EHR encoder and a ResNet (ResNet-34 by default,
`model.baseline_backbone`); between LSTM layer 1 and layer 2, MMTM blocks act after the chosen CNN
stages (`model.mmtm_stages`, default [4]: MedFuse's phenotyping script runs `--layer_after 4`):
squeeze both modalities (global average pool of the feature map, mean of the EHR sequence), one
joint Linear + ReLU (width 2 (C_img + d) / `model.mmtm_ratio`, default 4), then excite both with
sigmoid gates. Three heads:
EHR-only, CXR-only and joint (Linear on [projected EHR feature, CXR feature]). A missing CXR is an
all-zero image (as in the paper's baselines).
Adapted: MedFuse trains the three heads with three alternating optimisers; here one loss sums the
three heads' BCE. The final prediction is the late average of the EHR and CXR probabilities (MMTM's
own fusion of its two streams; MedFuse reports it as 'late'); the joint head's logits are kept as
`logits_joint`. The EHR squeeze averages over the valid time steps only (MedFuse includes padding).
"""

from __future__ import annotations

import torch
from torch import nn

from drfuse.models import losses
from drfuse.models.drfuse import logit_pool
from drfuse.models.encoders import (
    EHRLSTM,
    CNNEncoder,
    baseline_cnn,
    fusion_stages,
    lstm_layers,
    masked_mean,
    stage_channels,
    valid_mask,
    zero_missing_images,
)
from drfuse.phenotypes import N_PHENOTYPES


class MMTMBlock(nn.Module):
    def __init__(self, img_channels: int, ehr_dim: int, ratio: float):
        super().__init__()
        width = int(2 * (img_channels + ehr_dim) / ratio)
        self.squeeze = nn.Linear(img_channels + ehr_dim, width)
        self.excite_img = nn.Linear(width, img_channels)
        self.excite_ehr = nn.Linear(width, ehr_dim)

    def forward(self, fmap: torch.Tensor, seq: torch.Tensor, valid: torch.Tensor):
        z = torch.cat([fmap.mean((2, 3)), masked_mean(seq, valid)], dim=1)
        e = torch.relu(self.squeeze(z))
        gate_img = torch.sigmoid(self.excite_img(e))[:, :, None, None]
        gate_ehr = torch.sigmoid(self.excite_ehr(e))[:, None, :]
        return fmap * gate_img.to(fmap.dtype), seq * gate_ehr.to(seq.dtype)


class MMTM(nn.Module):
    uses_ehr = True
    uses_cxr = True
    # MedFuse's code never drops an image while training (drfuse.train.run.training_cxr_drop)
    cxr_drop_setting = "baseline_cxr_drop"
    # learns at `train.ehr_lr_factor` x lr (drfuse.train.engine.lr_factors)
    ehr_encoder_prefix = "ehr_encoder"

    def __init__(self, cfg: dict, n_outputs: int = N_PHENOTYPES):
        super().__init__()
        d = cfg["d_model"]
        self.ehr_encoder = EHRLSTM(cfg, layers=lstm_layers(cfg, minimum=2))
        self.cxr_encoder = CNNEncoder(*baseline_cnn(cfg))
        channels = stage_channels(self.cxr_encoder)
        self.blocks = nn.ModuleDict(
            {str(s): MMTMBlock(channels[s], d, float(cfg["mmtm_ratio"])) for s in fusion_stages(cfg, "mmtm_stages")}
        )
        feat = self.cxr_encoder.out_dim
        self.ehr_head = nn.Linear(d, n_outputs)
        self.cxr_head = nn.Linear(feat, n_outputs)
        self.projection = nn.Linear(d, feat)
        self.joint_head = nn.Linear(2 * feat, n_outputs)

    def forward(self, ehr, lengths, images, has_cxr) -> dict:
        images = zero_missing_images(images, has_cxr)
        valid = valid_mask(lengths, ehr.shape[1])
        seq, _ = self.ehr_encoder.run_layer(0, ehr, lengths)
        x = self.cxr_encoder.stem(images)
        stages = [None, *self.cxr_encoder.trunk.layers]
        for s, layer in enumerate(stages):
            if layer is not None:
                x = layer(x)
            if str(s) in self.blocks:
                x, seq = self.blocks[str(s)](x, seq, valid)
        cxr_feat = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        for i in range(1, len(self.ehr_encoder.layers)):
            seq, h = self.ehr_encoder.run_layer(i, seq, lengths)
        ehr_feat = self.ehr_encoder.dropout(h)
        ehr_logits = self.ehr_head(ehr_feat)
        cxr_logits = self.cxr_head(cxr_feat)
        joint_logits = self.joint_head(torch.cat([self.projection(ehr_feat), cxr_feat], dim=1))
        logits = logit_pool(ehr_logits.float(), cxr_logits.float())  # logit of the mean probability
        return {
            "logits": logits,
            "probs": torch.sigmoid(logits),
            "logits_ehr": ehr_logits,
            "logits_cxr": cxr_logits,
            "logits_joint": joint_logits,
        }

    def warmup_loss(self, images: torch.Tensor, labels: torch.Tensor):
        """The image branch alone (`train.cxr_warmup_epochs`): the CNN without the MMTM blocks, read
        by its CXR head, BCE over a batch whose rows all have an image."""
        x = self.cxr_encoder.stem(images)
        for layer in self.cxr_encoder.trunk.layers:
            x = layer(x)
        logits = self.cxr_head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        return loss, {"warmup_pred_cxr": loss.detach()}

    def loss(self, outputs: dict, labels, has_cxr=None, paired_rows=None):
        parts = {k: losses.bce_per_sample(outputs[f"logits_{k}"], labels).mean() for k in ("ehr", "cxr", "joint")}
        total = parts["ehr"] + parts["cxr"] + parts["joint"]
        values = torch.stack([*parts.values(), total]).detach()  # read once per epoch (engine.train_epoch)
        return total, dict(zip(["pred_ehr", "pred_cxr", "pred_joint", "total"], values.unbind()))


def build_mmtm(cfg: dict, n_outputs: int = N_PHENOTYPES) -> MMTM:
    return MMTM(cfg, n_outputs)
