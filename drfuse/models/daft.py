"""DAFT baseline (Poelsterl et al., MICCAI 2021), as implemented in MedFuse's repository.

Follows MedFuse's `FusionDAFT`: a 2-layer LSTM EHR encoder and a ResNet (ResNet-34 by default,
`model.baseline_backbone`). After the chosen CNN stages (`model.daft_stages`, default [3]: MedFuse's
phenotyping script runs `--layer_after 3`) a DAFT block concatenates the pooled CXR feature map and
the mean EHR state, passes it through a bias-free bottleneck (width int((16 + C_img) / 7), ReLU) and decodes a scale
and a shift (linear activation) that transform the EHR sequence between LSTM layers 1 and 2. The
prediction comes from the EHR stream (dropout + Linear). A missing CXR is an all-zero image.
Adapted: the EHR mean runs over the valid time steps only (MedFuse includes the padding); the CNN
runs only up to the last DAFT stage (later stages would not influence the output).
"""

from __future__ import annotations

import torch
from torch import nn

from drfuse.models import losses
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


class DAFTBlock(nn.Module):
    def __init__(self, img_channels: int, ehr_dim: int):
        super().__init__()
        bottleneck = int((4 * 4 + img_channels) / 7.0)  # MedFuse's choice of width
        self.aux = nn.Sequential(
            nn.Linear(img_channels + ehr_dim, bottleneck, bias=False),
            nn.ReLU(),
            nn.Linear(bottleneck, 2 * ehr_dim, bias=False),
        )

    def forward(self, fmap: torch.Tensor, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        z = torch.cat([fmap.mean((2, 3)), masked_mean(seq, valid)], dim=1)
        scale, shift = self.aux(z).unsqueeze(1).chunk(2, dim=-1)
        return seq * scale.to(seq.dtype) + shift.to(seq.dtype)


class DAFT(nn.Module):
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
        stages = fusion_stages(cfg, "daft_stages")
        self.cxr_encoder = CNNEncoder(*baseline_cnn(cfg))
        channels = stage_channels(self.cxr_encoder)
        # stages after the last DAFT block would not reach the output: drop them
        self.cxr_encoder.trunk.layers = self.cxr_encoder.trunk.layers[: stages[-1]]
        self.blocks = nn.ModuleDict({str(s): DAFTBlock(channels[s], d) for s in stages})
        self.classifier = nn.Linear(d, n_outputs)
        # reads the pooled CNN alone during the image warm-up only (built last: the other
        # parameters' initial values do not depend on it)
        self.warmup_head = nn.Linear(channels[stages[-1]], n_outputs)

    def forward(self, ehr, lengths, images, has_cxr) -> dict:
        images = zero_missing_images(images, has_cxr)
        valid = valid_mask(lengths, ehr.shape[1])
        seq, _ = self.ehr_encoder.run_layer(0, ehr, lengths)
        x = self.cxr_encoder.stem(images)
        for s, layer in enumerate([None, *self.cxr_encoder.trunk.layers]):
            if layer is not None:
                x = layer(x)
            if str(s) in self.blocks:
                seq = self.blocks[str(s)](x, seq, valid)
        for i in range(1, len(self.ehr_encoder.layers)):
            seq, h = self.ehr_encoder.run_layer(i, seq, lengths)
        logits = self.classifier(self.ehr_encoder.dropout(h))
        return {"logits": logits, "probs": torch.sigmoid(logits)}

    def warmup_loss(self, images: torch.Tensor, labels: torch.Tensor):
        """The image branch alone (`train.cxr_warmup_epochs`): the CNN up to the last DAFT stage,
        pooled, read by `warmup_head`; BCE over a batch whose rows all have an image."""
        logits = self.warmup_head(self.cxr_encoder(images))
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        return loss, {"warmup_pred_cxr": loss.detach()}

    def loss(self, outputs: dict, labels, has_cxr=None, paired_rows=None):
        return losses.bce_loss(outputs["logits"], labels)


def build_daft(cfg: dict, n_outputs: int = N_PHENOTYPES) -> DAFT:
    return DAFT(cfg, n_outputs)
