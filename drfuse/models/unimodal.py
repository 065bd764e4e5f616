"""Uni-modal baselines (paper Tables 2-3): DrFuse's encoders alone, each with a linear classifier.

- `transformer`: DrFuse's EHR encoder with one branch (embedding + learnable positional encoding,
  the first layer, one more layer, masked mean pooling: two Transformer layers in all) and
  Linear(d -> the task's labels: 25, or 1 for mortality). Ignores the images.
- `resnet50`: DrFuse's CXR encoder with one trunk (stem + layer1..4 + pool + Linear(feat -> d); the
  backbone is `model.backbone`, ResNet50 at the paper's settings) and Linear(d -> labels). Accepts the
  EHR arguments and ignores them; it is trained and tested on stays with a usable CXR only, so a
  batch with a missing CXR is an error.
Both follow the paper's description ("DrFuse's encoders"); the loss is BCE over classes.
Their encoders are named `ehr_encoder` / `cxr_encoder`, so MedFuse can start from their checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from drfuse.models import losses
from drfuse.models.encoders import CNNEncoder, EHRTransformer, cnn
from drfuse.phenotypes import N_PHENOTYPES


class EHRTransformerClassifier(nn.Module):
    uses_ehr = True
    uses_cxr = False

    def __init__(self, cfg: dict, n_outputs: int = N_PHENOTYPES):
        super().__init__()
        self.ehr_encoder = EHRTransformer(cfg, n_branches=1)
        self.classifier = nn.Linear(cfg["d_model"], n_outputs)

    def forward(self, ehr, lengths, images=None, has_cxr=None) -> dict:
        (h,) = self.ehr_encoder(ehr, lengths)
        logits = self.classifier(h)
        return {"logits": logits, "probs": torch.sigmoid(logits), "features": h}

    def loss(self, outputs: dict, labels, has_cxr=None, paired_rows=None):
        return losses.bce_loss(outputs["logits"], labels)


class CXRClassifier(nn.Module):
    uses_ehr = False
    uses_cxr = True

    def __init__(self, cfg: dict, n_outputs: int = N_PHENOTYPES):
        super().__init__()
        self.cxr_encoder = CNNEncoder(*cnn(cfg), out_dim=cfg["d_model"])
        self.classifier = nn.Linear(cfg["d_model"], n_outputs)

    def forward(self, ehr, lengths, images, has_cxr=None) -> dict:
        if has_cxr is not None and not bool(has_cxr.all()):
            raise ValueError("the uni-modal CXR model needs a usable CXR for every sample of the batch")
        h = self.cxr_encoder(images)
        logits = self.classifier(h)
        return {"logits": logits, "probs": torch.sigmoid(logits), "features": h}

    def loss(self, outputs: dict, labels, has_cxr=None, paired_rows=None):
        return losses.bce_loss(outputs["logits"], labels)


def build_transformer(cfg: dict, n_outputs: int = N_PHENOTYPES) -> EHRTransformerClassifier:
    return EHRTransformerClassifier(cfg, n_outputs)


def build_resnet(cfg: dict, n_outputs: int = N_PHENOTYPES) -> CXRClassifier:
    return CXRClassifier(cfg, n_outputs)
