"""DrFuse's loss terms (paper Eq. 1, 4, 9-13), each a small per-sample function, and their total.

Every term returns one value per sample (shape (B,)) so the total can follow Eq. 13: the batch
loss is the mean over *all* samples of the terms that apply to each sample (paired samples carry
every term, samples without CXR only L_pred + l2 L_orth_EHR). Normalisation within a sample follows
the reference code: BCE terms are means over the 25 classes, the JSD is summed over the
representation's dimensions, MSE is a mean over them.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

LOG2 = math.log(2.0)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32 at least (bf16 autocast outputs), float64 kept."""
    return x if x.dtype == torch.float64 else x.float()


def bce_per_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, C) binary cross-entropy from logits."""
    return F.binary_cross_entropy_with_logits(_wide(logits), labels.to(_wide(logits).dtype), reduction="none")


def bce_per_sample(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_pred (Eq. 11) of each sample, as a mean over the classes."""
    return bce_per_class(logits, labels).mean(1)


def jsd_per_sample(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """L_JSD (Eq. 1): per dimension, the Jensen-Shannon divergence of the Bernoulli distributions
    P = sigmoid(h1) and Q = sigmoid(h2) (M = (P + Q) / 2), summed over the dimensions.

    Computed from the logits with logsigmoid, so it stays finite for any logits. (The reference
    keeps only the p log(p/m) half of each Bernoulli KL.) Zero iff h1 == h2.
    """
    h1, h2 = _wide(h1), _wide(h2)
    lp, lq = F.logsigmoid(h1), F.logsigmoid(h2)  # log P, log Q
    lp1, lq1 = F.logsigmoid(-h1), F.logsigmoid(-h2)  # log (1 - P), log (1 - Q)
    lm = torch.logaddexp(lp, lq) - LOG2
    lm1 = torch.logaddexp(lp1, lq1) - LOG2
    kl_pm = lp.exp() * (lp - lm) + lp1.exp() * (lp1 - lm1)
    kl_qm = lq.exp() * (lq - lm) + lq1.exp() * (lq1 - lm1)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0.0).sum(1)


def mse_per_sample(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """The MSE alignment of the ablation (Table 4), mean over dimensions as in the reference."""
    return (_wide(h1) - _wide(h2)).pow(2).mean(1)


def abs_cos_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """l_orth (Eq. 4): |cos(a, b)| per sample."""
    return F.cosine_similarity(_wide(a), _wide(b), dim=1, eps=1e-8).abs()


def ranking_per_sample(
    attention: torch.Tensor,
    class_losses: torch.Tensor,
    margin: float,
    gap_width: float = 0.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_attn (Eq. 10) per sample.

    attention: (B, C, 3) weights alpha_c,i; class_losses: (B, C, 3) the auxiliary losses l_c,i of
    g1, g2, g3 (detached here: they only decide the order). For each class and each ordered pair
    (i, j), i != j: max(0, 1[l_ci < l_cj] (alpha_cj - alpha_ci) + margin), summed and divided by
    2 |C|. Read literally, a pair whose indicator is 0 adds the constant max(0, margin).

    gap_width > 0 replaces the indicator by a ramp, min(1, (l_cj - l_ci) / gap_width) where
    l_ci < l_cj: a pair whose heads' losses nearly tie (the negatives of a rare label, which every
    head predicts near 0) barely votes, one that a head wins by gap_width nats or more votes fully.
    gap_width 0 is the indicator.

    class_weights (B, C), optional: each class's terms of each sample are multiplied by its weight
    (`drfuse_loss` gives the classes a sample does not have `rank_negatives`).
    """
    a = _wide(attention)
    loss = class_losses.detach().to(a.dtype)
    gap = loss.unsqueeze(2) - loss.unsqueeze(3)  # [b, c, i, j] = l_cj - l_ci
    if gap_width > 0:
        better = (gap / gap_width).clamp(0.0, 1.0)
    else:
        better = (gap > 0).to(a.dtype)  # 1[l_ci < l_cj]
    diff = a.unsqueeze(2) - a.unsqueeze(3)  # [b, c, i, j] = alpha_cj - alpha_ci
    off_diag = 1.0 - torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    terms = torch.clamp(better * diff + margin, min=0.0) * off_diag
    if class_weights is not None:
        terms = terms * class_weights.to(a.dtype)[:, :, None, None]
    return terms.sum((1, 2, 3)) / (2 * a.shape[1])


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over the rows where mask is True; 0 (not NaN) when there are none."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def drfuse_loss(
    outputs: dict, labels: torch.Tensor, has_cxr: torch.Tensor, settings: dict, paired_rows: torch.Tensor | None = None
):
    """The total of Eq. 13 and a dict of its parts for logging (0-dim tensors, still on the device,
    and `paired_share`, a float).

    settings: lambda_jsd, lambda_orth, lambda_attn, margin, alignment ('jsd' | 'mse'),
    use_ranking (bool), the ranking loss's order of the heads, rank_order ('sample' | 'batch'), and
    its pair weights, rank_gap (nats; 0 = Eq. 10's indicator; `ranking_per_sample`), and the weight
    of its terms for the classes a sample does not have, rank_negatives (1 = Eq. 10).
    Terms that involve the CXR are computed on the paired rows only (their representations are NaN
    elsewhere) and enter the batch mean with weight 1/B each. `paired_rows`: the indices of those
    rows when the caller knows them without asking the device (the training engine's batches);
    else they are found from `has_cxr`, which waits for the device.
    """
    rows = has_cxr.bool().nonzero().squeeze(1) if paired_rows is None else paired_rows
    n_paired = rows.numel()  # host metadata; the no-CXR batch must skip indexing empty sets

    def paired(key: str) -> torch.Tensor:
        return outputs[key].index_select(0, rows)

    batch = labels.shape[0]
    pred = bce_per_sample(outputs["logits"], labels)
    orth_ehr = abs_cos_per_sample(outputs["ehr_shared"], outputs["ehr_distinct"])
    total = pred.sum() + settings["lambda_orth"] * orth_ehr.sum()

    align_fn = jsd_per_sample if settings["alignment"] == "jsd" else mse_per_sample
    zero = pred.new_zeros(())
    align = orth_cxr = aux = attn = zero
    if n_paired:
        y = labels.index_select(0, rows)
        align_i = align_fn(paired("ehr_shared"), paired("cxr_shared"))
        orth_cxr_i = abs_cos_per_sample(paired("cxr_shared"), paired("cxr_distinct"))
        class_losses = torch.stack(
            [bce_per_class(paired(k), y) for k in ("aux_ehr", "aux_shared", "aux_cxr")], dim=2
        )  # (P, C, 3)
        aux_i = class_losses.mean(1).sum(1)  # Eq. 9: the three heads, each a mean over classes
        # the heads are ordered by each sample's own losses (the reference code) or, with
        # `model.rank_order: batch`, by their mean over the batch's paired samples per class
        order_losses = class_losses
        if settings["rank_order"] == "batch":
            order_losses = class_losses.mean(0, keepdim=True).expand_as(class_losses)
        # a negative's heads all predict near 0, so their order is mostly noise; `rank_negatives` < 1
        # lets the positives, whose heads' losses say which representation shows the disease, count more
        weights = None if settings["rank_negatives"] == 1.0 else y + settings["rank_negatives"] * (1.0 - y)
        attn_i = ranking_per_sample(
            paired("attention"), order_losses, settings["margin"], settings["rank_gap"], weights
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
    values = torch.stack([pred.mean(), align, orth_ehr.mean(), orth_cxr, aux, attn, total]).detach().float()
    parts: dict = dict(zip(names, values.unbind()))
    parts["paired_share"] = n_paired / batch
    return total, parts


def bce_loss(logits: torch.Tensor, labels: torch.Tensor):
    """The baselines' loss: BCE over samples and classes, and its logging dict (0-dim tensors)."""
    loss = bce_per_sample(logits, labels).mean()
    return loss, {"pred": loss.detach(), "total": loss.detach()}
