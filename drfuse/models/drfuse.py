"""DrFuse (Yao et al., AAAI 2024) and its three ablations (paper Table 4).

Follows the paper, and the authors' code where the paper is silent (differences and why:
docs/deviations.md):
- EHR: `EHRTransformer` with two branches (shared, distinct) after one shared first layer.
- CXR: one ResNet stem shared by two trunks (shared, distinct), each ending in Linear(feat -> d).
- One projection MLP, tied between the modalities, on both raw shared vectors.
- Logit pooling of the two shared vectors (Eq. 2-3) in its stable log-sum-exp form; without CXR,
  h_shared = h_EHR_shared.
- Disease-aware masked attention (Eq. 5-8): one Linear(d -> (2 + C) d) over the three tokens
  gives query, value and C per-class keys; the query is the mean over the available tokens; the
  CXR token is masked to -inf when missing. Per-class final heads psi_c (the diagonal of one
  Linear(d -> C), as in the reference); auxiliary heads g1, g2, g3 (`aux_head`: 'mlp', the paper's
  two-layer network, or 'linear', the reference).
Adapted: the CNN runs only on the samples that have a CXR (the reference feeds an all-zero image
through it, polluting BatchNorm statistics), so a missing sample's output does not depend on its
image slot. The losses (losses.py) fix the reference's JSD normalisation and follow Eq. 13.

Outputs of `forward`: `logits`, `probs` (B, C); `attention` (B, C, 3) over [EHR distinct, shared,
CXR distinct]; `token_logits` (B, C, 3), each token's part alpha_cj psi_c . v_j of the logit (the
logit is their sum plus psi_c's bias); `ehr_shared`, `ehr_distinct` (B, d); `cxr_shared`, `cxr_distinct` (B, d, NaN rows
for samples without CXR); `h_shared` (B, d) the pooled shared vector; auxiliary logits
`aux_ehr`, `aux_shared`, `aux_cxr` (B, C; `aux_cxr` NaN rows without CXR).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from drfuse.errors import UserError
from drfuse.models import losses
from drfuse.models.encoders import CNNStem, CNNTrunk, EHRTransformer, build_resnet, cnn, run_on_available
from drfuse.phenotypes import N_PHENOTYPES


def logit_pool(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """logit((sigmoid(h1) + sigmoid(h2)) / 2) elementwise (Eq. 2), finite for any finite input:
    LSE([h1+h2, h1+h2, h1, h2]) - LSE([0, 0, h1, h2])."""
    s = h1 + h2
    zero = torch.zeros_like(h1)
    num = torch.logsumexp(torch.stack([s, s, h1, h2]), dim=0)
    den = torch.logsumexp(torch.stack([zero, zero, h1, h2]), dim=0)
    return num - den


def mean_pool(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """The MSE ablation's pooling: the plain average of the two shared vectors."""
    return (h1 + h2) / 2


def aux_head(kind: str, d: int, n_classes: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_classes))
    if kind == "linear":
        return nn.Linear(d, n_classes)
    raise UserError(f"model.aux_head = {kind!r}; use 'mlp' or 'linear'")


class DrFuse(nn.Module):
    uses_ehr = True
    uses_cxr = True
    # the paper's recipe: drop the CXR of a share of each matched batch (drfuse.train.run)
    cxr_drop_setting = "cxr_drop"
    # learns at `train.ehr_lr_factor` x lr (drfuse.train.engine.lr_factors)
    ehr_encoder_prefix = "ehr_encoder"

    def __init__(self, cfg: dict, alignment: str = "jsd", use_ranking: bool = True, n_outputs: int = N_PHENOTYPES):
        super().__init__()
        d = cfg["d_model"]
        self.n_classes = n_classes = n_outputs  # the task's labels ("diseases"): 25, or 1 for mortality
        self.d = d
        self.pool = logit_pool if alignment == "jsd" else mean_pool
        self.attention_query = cfg["attention_query"]
        self.attention_prior = cfg["attention_prior"]
        self.loss_settings = {
            "lambda_jsd": float(cfg["lambda_jsd"]),
            "lambda_orth": float(cfg["lambda_orth"]),
            "lambda_attn": float(cfg["lambda_attn"]),
            "margin": float(cfg["margin"]),
            "rank_order": cfg["rank_order"],
            "rank_gap": float(cfg["rank_gap"]),
            "rank_negatives": float(cfg["rank_negatives"]),
            "alignment": alignment,
            "use_ranking": use_ranking,
        }
        self.ehr_encoder = EHRTransformer(cfg, n_branches=2)  # branches: shared, distinct
        stem_net = build_resnet(*cnn(cfg))
        self.cxr_stem = CNNStem(stem_net)
        self.cxr_trunk_shared = CNNTrunk(stem_net, d)
        self.cxr_trunk_distinct = CNNTrunk(build_resnet(*cnn(cfg)), d)
        self.shared_proj = nn.Sequential(
            nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d)
        )
        self.attn_proj = nn.Linear(d, (2 + n_classes) * d)
        self.final_head = nn.Linear(d, n_classes)  # row c is psi_c
        self.aux_heads = nn.ModuleList(aux_head(cfg["aux_head"], d, n_classes) for _ in range(3))

    def _cxr(self, images: torch.Tensor):
        x = self.cxr_stem(images)
        return self.shared_proj(self.cxr_trunk_shared(x)), self.cxr_trunk_distinct(x)

    def forward(self, ehr, lengths, images, has_cxr) -> dict:
        has_cxr = has_cxr.bool()
        ehr_shared_raw, ehr_distinct = self.ehr_encoder(ehr, lengths)
        ehr_shared = self.shared_proj(ehr_shared_raw)
        # zero rows where the CXR is missing: finite, and masked out of everything below
        cxr_shared, cxr_distinct = run_on_available(self._cxr, images, has_cxr, (self.d, self.d), ehr_shared)
        paired = has_cxr.unsqueeze(1)
        h_shared = torch.where(paired, self.pool(ehr_shared, cxr_shared), ehr_shared)

        tokens = torch.stack([ehr_distinct, h_shared, cxr_distinct], dim=1)  # (B, 3, d)
        proj = self.attn_proj(tokens).unflatten(-1, (2 + self.n_classes, self.d))  # (B, 3, 2 + C, d)
        q, v, k = proj[:, :, 0], proj[:, :, 1], proj[:, :, 2:]
        available = torch.stack([torch.ones_like(has_cxr), torch.ones_like(has_cxr), has_cxr], dim=1)
        w = available.to(q.dtype).unsqueeze(-1)
        if self.attention_query == "mean":
            query = (q * w).sum(1) / w.sum(1)  # Eq. 5: mean over the available tokens
            scores = torch.einsum("bd,bjcd->bcj", query, k) / math.sqrt(self.d)  # (B, C, 3)
        else:  # "token": each token scored by its own query, so by its own content alone
            scores = torch.einsum("bjd,bjcd->bcj", q, k) / math.sqrt(self.d)
        aux = [self.aux_heads[0](ehr_distinct), self.aux_heads[1](h_shared), self.aux_heads[2](cxr_distinct)]
        if self.attention_prior == "aux":
            # each token's own auxiliary head says how much evidence of class c it holds; its logit
            # (not trained through the attention) is added to the token's score
            scores = scores + torch.stack(aux, dim=-1).detach().to(scores.dtype)
        scores = scores.masked_fill(~available.unsqueeze(1), float("-inf"))
        attention = torch.softmax(scores.float(), dim=-1)
        # psi_c . z_c = sum_j alpha_cj (psi_c . v_j): each token's part of the logit, kept for diagnostics
        token_logits = attention.to(v.dtype) * torch.einsum("bjd,cd->bcj", v, self.final_head.weight)  # (B, C, 3)
        logits = token_logits.sum(-1) + self.final_head.bias

        nan = torch.tensor(float("nan"), device=ehr_shared.device)
        return {
            "logits": logits,
            "probs": torch.sigmoid(logits),
            "attention": attention,
            "token_logits": token_logits,
            "ehr_shared": ehr_shared,
            "ehr_distinct": ehr_distinct,
            "cxr_shared": torch.where(paired, cxr_shared, nan),
            "cxr_distinct": torch.where(paired, cxr_distinct, nan),
            "h_shared": h_shared,
            "aux_ehr": aux[0],
            "aux_shared": aux[1],
            "aux_cxr": torch.where(paired, aux[2], nan),
        }

    def loss(self, outputs: dict, labels: torch.Tensor, has_cxr: torch.Tensor, paired_rows: torch.Tensor | None = None):
        return losses.drfuse_loss(outputs, labels, has_cxr, self.loss_settings, paired_rows)

    def warmup_loss(self, images: torch.Tensor, labels: torch.Tensor):
        """The image branch alone (`train.cxr_warmup_epochs`): the stem, the CXR-distinct trunk and
        its auxiliary head g3, BCE over a batch whose rows all have an image."""
        logits = self.aux_heads[2](self.cxr_trunk_distinct(self.cxr_stem(images)))
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        return loss, {"warmup_aux_cxr": loss.detach()}


def build_drfuse(cfg: dict, n_outputs: int = N_PHENOTYPES) -> DrFuse:
    return DrFuse(cfg, n_outputs=n_outputs)


def build_drfuse_no_disentangle(cfg: dict, n_outputs: int = N_PHENOTYPES) -> DrFuse:
    """Ablation 'w/o disentangled': no JSD alignment, no orthogonality (l1 = l2 = 0)."""
    return DrFuse({**cfg, "lambda_jsd": 0.0, "lambda_orth": 0.0}, n_outputs=n_outputs)


def build_drfuse_mse(cfg: dict, n_outputs: int = N_PHENOTYPES) -> DrFuse:
    """Ablation 'MSE alignment': MSE instead of JSD, average instead of logit pooling."""
    return DrFuse(cfg, alignment="mse", n_outputs=n_outputs)


def build_drfuse_no_rank(cfg: dict, n_outputs: int = N_PHENOTYPES) -> DrFuse:
    """Ablation 'w/o attn. ranking': no L_attn; l3 weighs L_aux only."""
    return DrFuse(cfg, use_ranking=False, n_outputs=n_outputs)
