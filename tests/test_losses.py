"""DrFuse's loss terms and logit pooling against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from drfuse.models import losses
from drfuse.models.drfuse import logit_pool

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_logit_pool_is_logit_of_mean_sigmoid():
    g = torch.Generator().manual_seed(0)
    h1, h2 = (
        torch.randn(64, 16, generator=g, dtype=torch.float64) * 4,
        torch.randn(64, 16, generator=g, dtype=torch.float64) * 4,
    )
    m = (torch.sigmoid(h1) + torch.sigmoid(h2)) / 2
    assert torch.allclose(logit_pool(h1, h2), torch.log(m / (1 - m)), atol=1e-9)
    assert torch.allclose(logit_pool(h1, h2), logit_pool(h2, h1))


def test_logit_pool_finite_at_extremes():
    h1 = torch.tensor([50.0, -50.0, 50.0, -50.0, 0.0])
    h2 = torch.tensor([50.0, -50.0, -50.0, 50.0, 0.0])
    out = logit_pool(h1, h2)
    assert torch.isfinite(out).all()
    # both sure -> stays sure; one sure yes and one sure no -> mean probability 1/2 -> logit 0
    assert torch.allclose(out, torch.tensor([50.0, -50.0, 0.0, 0.0, 0.0]), atol=1e-4)


def test_jsd_zero_for_identical_and_matches_bernoulli_formula():
    h = torch.randn(5, 8, dtype=torch.float64)
    assert torch.allclose(losses.jsd_per_sample(h, h), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    a, b = torch.tensor([[0.0, 2.0]], dtype=torch.float64), torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    p, q = torch.sigmoid(a), torch.sigmoid(b)
    m = (p + q) / 2

    def kl(x, y):
        return x * torch.log(x / y) + (1 - x) * torch.log((1 - x) / (1 - y))

    expected = (0.5 * (kl(p, m) + kl(q, m))).sum(1)
    assert torch.allclose(losses.jsd_per_sample(a, b), expected, atol=1e-12)
    assert (losses.jsd_per_sample(a, b) > 0).all()
    # bounded by log 2 per dimension and finite for saturated logits
    far = losses.jsd_per_sample(torch.full((1, 3), 80.0), torch.full((1, 3), -80.0))
    assert torch.isfinite(far).all() and far.item() <= 3 * math.log(2) + 1e-5


def test_ranking_loss_hand_example():
    # Class 0: alpha = [0.5, 0.3, 0.2] (EHR distinct, shared, CXR distinct), aux losses l = [0.2, 0.1, 0.4].
    #   ordered pairs (i, j): 1[l_i < l_j] * (alpha_j - alpha_i) + eps, clipped at 0, eps = 0:
    #   (0,1): l0 < l1 false -> 0;   (0,2): true -> 0.2 - 0.5 = -0.3 -> 0
    #   (1,0): true -> 0.5 - 0.3 = 0.2;   (1,2): true -> 0.2 - 0.3 = -0.1 -> 0
    #   (2,0), (2,1): false -> 0.      Sum = 0.2
    # Class 1: alpha = [1/3, 1/3, 1/3], l all equal -> every indicator false -> 0.
    # L_attn = (0.2 + 0) / (2 |C|) = 0.2 / 4 = 0.05.
    # With eps = 0.05: class 0: the three false pairs give 0.05 each (0.15), (0,2): -0.25 -> 0,
    #   (1,0): 0.25, (1,2): -0.05 -> 0: 0.4; class 1: six false pairs, 0.05 each: 0.3.
    #   L_attn = 0.7 / 4 = 0.175.
    alpha = torch.tensor([[[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]]])
    aux = torch.tensor([[[0.2, 0.1, 0.4], [0.3, 0.3, 0.3]]])
    assert losses.ranking_per_sample(alpha, aux, 0.0).item() == pytest.approx(0.05, abs=1e-7)
    assert losses.ranking_per_sample(alpha, aux, 0.05).item() == pytest.approx(0.175, abs=1e-7)


def test_ranking_loss_gap_ramp_hand_example():
    # The hand example's class 0 with gap_width 0.2: a pair votes min(1, (l_j - l_i) / 0.2).
    #   (1,0): l0 - l1 = 0.1 -> weight 0.5 -> 0.5 * (0.5 - 0.3) = 0.1
    #   (0,2): gap 0.2 -> weight 1 -> -0.3 -> 0;   (1,2): gap 0.3 -> weight 1 -> -0.1 -> 0
    #   L_attn = 0.1 / (2 |C|) = 0.025. Class 1 ties: no vote.
    alpha = torch.tensor([[[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]]])
    aux = torch.tensor([[[0.2, 0.1, 0.4], [0.3, 0.3, 0.3]]])
    assert losses.ranking_per_sample(alpha, aux, 0.0, gap_width=0.2).item() == pytest.approx(0.025, abs=1e-7)
    # every gap >= the width: the indicator's value; width 0 is the indicator
    assert losses.ranking_per_sample(alpha, aux, 0.05, gap_width=0.1).item() == pytest.approx(0.175, abs=1e-7)
    assert losses.ranking_per_sample(alpha, aux, 0.05, gap_width=0.0).item() == pytest.approx(0.175, abs=1e-7)


def test_gap_ramp_lets_the_positive_of_a_rare_label_decide_the_attention():
    """One rare label, 15 negatives and one positive. The EHR head predicts the prevalence for
    everyone; the CXR head finds the positive but is a little less sure on the negatives. The
    indicator counts 15 narrow EHR wins against one wide CXR win and moves the attention to EHR;
    the ramp weighs the wins by their size and moves it to CXR."""
    labels = torch.zeros(16, 1)
    labels[0] = 1.0
    ehr = torch.full((16, 1), -3.0)  # p 0.047: loss 0.049 on a negative, 3.05 on the positive
    cxr = torch.full((16, 1), -2.5)  # loss 0.079 on a negative (0.03 nats worse)
    cxr[0] = 1.0  # loss 0.31 on the positive (2.7 nats better)
    shared = torch.zeros(16, 1)
    class_losses = torch.stack([losses.bce_per_class(x, labels) for x in (ehr, shared, cxr)], dim=2)

    def attention_gradient(gap_width: float) -> torch.Tensor:
        alpha = torch.full((16, 1, 3), 1 / 3, requires_grad=True)
        losses.ranking_per_sample(alpha, class_losses, 0.01, gap_width).sum().backward()
        return alpha.grad.sum(0)[0]  # d loss / d alpha of (EHR, shared, CXR)

    step = attention_gradient(0.0)
    assert step[0] < step[2]  # gradient descent raises the EHR weight over the CXR weight
    ramp = attention_gradient(1.0)
    assert ramp[2] < ramp[0]  # and with the ramp the CXR weight over the EHR weight


def test_ranking_loss_gradient_only_through_attention():
    alpha = torch.tensor([[[0.2, 0.3, 0.5]]], requires_grad=True)
    aux = torch.tensor([[[0.1, 0.2, 0.3]]], requires_grad=True)
    losses.ranking_per_sample(alpha, aux, 0.0).sum().backward()
    assert aux.grad is None
    # EHR (best loss) must gain weight over the others: its gradient is negative
    assert alpha.grad[0, 0, 0] < 0 and alpha.grad[0, 0, 2] > 0


def _fake_outputs(batch: int, d: int = 8, c: int = 25, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "logits": r(batch, c),
        "ehr_shared": r(batch, d),
        "ehr_distinct": r(batch, d),
        "cxr_shared": r(batch, d),
        "cxr_distinct": r(batch, d),
        "aux_ehr": r(batch, c),
        "aux_shared": r(batch, c),
        "aux_cxr": r(batch, c),
        "attention": torch.softmax(r(batch, c, 3), -1),
    }


SETTINGS = {
    "lambda_jsd": 1.0,
    "lambda_orth": 0.7,
    "lambda_attn": 0.5,
    "margin": 0.0,
    "alignment": "jsd",
    "use_ranking": True,
    "rank_order": "sample",
    "rank_gap": 0.0,
    "rank_negatives": 1.0,
}


def test_total_follows_eq13_mean_over_all_samples():
    out = _fake_outputs(2)
    labels = torch.tensor([[1, 0] * 12 + [1], [0, 1] * 12 + [0]])
    has_cxr = torch.tensor([True, False])
    out["cxr_shared"][1] = float("nan")  # rows without CXR are NaN in the model's outputs
    out["cxr_distinct"][1] = float("nan")
    out["aux_cxr"][1] = float("nan")
    total, parts = losses.drfuse_loss(out, labels, has_cxr, SETTINGS)
    pred = losses.bce_per_sample(out["logits"], labels)
    orth_e = losses.abs_cos_per_sample(out["ehr_shared"], out["ehr_distinct"])
    s = slice(0, 1)
    jsd = losses.jsd_per_sample(out["ehr_shared"][s], out["cxr_shared"][s])
    orth_c = losses.abs_cos_per_sample(out["cxr_shared"][s], out["cxr_distinct"][s])
    cl = torch.stack([losses.bce_per_class(out[k][s], labels[s]) for k in ("aux_ehr", "aux_shared", "aux_cxr")], 2)
    aux = cl.mean(1).sum(1)
    attn = losses.ranking_per_sample(out["attention"][s], cl, 0.0)
    # paired sample: every term; the other: L_pred + l2 L_orth_EHR; divided by the batch size 2
    expected = (pred.sum() + 0.7 * orth_e.sum() + jsd + 0.7 * orth_c + 0.5 * (aux + attn)) / 2
    assert torch.isfinite(total)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert float(parts["jsd"]) == pytest.approx(jsd.item(), rel=1e-6)
    assert parts["paired_share"] == 0.5

    no_rank, _ = losses.drfuse_loss(out, labels, has_cxr, {**SETTINGS, "use_ranking": False})
    assert (total - no_rank).item() == pytest.approx(0.5 * attn.item() / 2, rel=1e-5)
    # `model.rank_gap` reaches the ranking term: the ramp's value, the rest unchanged
    ramp, _ = losses.drfuse_loss(out, labels, has_cxr, {**SETTINGS, "rank_gap": 3.0})
    attn_ramp = losses.ranking_per_sample(out["attention"][s], cl, 0.0, gap_width=3.0)
    assert 0 < attn_ramp.item() < attn.item()
    assert (ramp - no_rank).item() == pytest.approx(0.5 * attn_ramp.item() / 2, rel=1e-5)


def test_batch_without_cxr_is_finite_and_has_zero_jsd():
    out = _fake_outputs(3)
    for k in ("cxr_shared", "cxr_distinct", "aux_cxr"):
        out[k][:] = float("nan")
    labels = torch.zeros(3, 25)
    for k in ("logits", "ehr_shared", "ehr_distinct"):
        out[k].requires_grad_(True)
    total, parts = losses.drfuse_loss(out, labels, torch.zeros(3, dtype=torch.bool), SETTINGS)
    total.backward()
    assert torch.isfinite(total)
    assert float(parts["jsd"]) == 0.0 and float(parts["orth_cxr"]) == 0.0 and float(parts["attn"]) == 0.0
    expected = (
        losses.bce_per_sample(out["logits"], labels)
        + 0.7 * losses.abs_cos_per_sample(out["ehr_shared"], out["ehr_distinct"])
    ).mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.isfinite(out["ehr_shared"].grad).all()


def test_mse_alignment():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert losses.mse_per_sample(a, b).item() == pytest.approx(2.5)  # (1 + 4) / 2


def _one_class_batch():
    """One class, four paired stays (the first positive) and one without CXR; heads EHR (logit 0),
    shared (logit 1), CXR (logit 3 on the positive, 0.2 on the negatives); attention EHR 0.2,
    shared 0.1, CXR 0.7 everywhere. Returns (outputs, labels, has_cxr)."""
    labels = torch.tensor([[1], [0], [0], [0], [0]])
    has_cxr = torch.tensor([True, True, True, True, False])
    out = {
        "logits": torch.zeros(5, 1),
        "ehr_shared": torch.randn(5, 4),
        "ehr_distinct": torch.randn(5, 4),
        "cxr_shared": torch.randn(5, 4),
        "cxr_distinct": torch.randn(5, 4),
        "aux_ehr": torch.zeros(5, 1),
        "aux_shared": torch.ones(5, 1),
        "aux_cxr": torch.tensor([[3.0], [0.2], [0.2], [0.2], [float("nan")]]),
        "attention": torch.tensor([[[0.2, 0.1, 0.7]]]).expand(5, 1, 3),
    }
    return out, labels, has_cxr


def test_rank_order_batch_ranks_the_heads_by_their_mean_loss_over_the_paired_rows():
    """One class, four paired stays (one positive) and one without CXR. Per stay, the EHR head
    (logit 0) beats the CXR head on the three negatives; over the batch the CXR head is better
    (mean BCE 0.61 vs 0.69), the shared head worst. The attention favours CXR > EHR > shared."""
    out, labels, has_cxr = _one_class_batch()
    batch = {**SETTINGS, "rank_order": "batch"}
    _, parts = losses.drfuse_loss(out, labels, has_cxr, batch)
    assert float(parts["attn"]) == 0.0  # every ordering the batch's losses ask for holds
    _, parts = losses.drfuse_loss(out, labels, has_cxr, {**batch, "margin": 0.1})
    # the three pairs in order hold by more than 0.1; the three reverse pairs add max(0, 0.1) each: 0.3 / (2 |C|)
    assert float(parts["attn"]) == pytest.approx(0.15, abs=1e-6)
    _, per_stay = losses.drfuse_loss(out, labels, has_cxr, {**SETTINGS, "rank_order": "sample"})
    # ranked per stay: the negatives put EHR before CXR (a_cxr - a_ehr = 0.5 violated), the positive
    # puts shared before EHR (a_ehr - a_shared = 0.1 violated)
    assert float(per_stay["attn"]) == pytest.approx((0.1 + 3 * 0.5) / 2 / 4, abs=1e-6)


def test_rank_negatives_weighs_the_terms_of_the_classes_a_stay_does_not_have():
    """The stays and heads of the test above, ranked per stay: the positive's violated pair costs 0.1,
    each negative's 0.5. `rank_negatives` scales the negatives' part alone: 0 leaves the positive's."""
    out, labels, has_cxr = _one_class_batch()
    for weight in (1.0, 0.25, 0.0):
        total, parts = losses.drfuse_loss(out, labels, has_cxr, {**SETTINGS, "rank_negatives": weight})
        assert float(parts["attn"]) == pytest.approx((0.1 + weight * 3 * 0.5) / 2 / 4, abs=1e-6)
    # the positive's own order still pulls its attention: shared (its head beats EHR's) up over EHR
    alpha = out["attention"].clone().requires_grad_(True)
    total, _ = losses.drfuse_loss({**out, "attention": alpha}, labels, has_cxr, {**SETTINGS, "rank_negatives": 0.0})
    total.backward()
    assert alpha.grad[0, 0, 1] < 0 < alpha.grad[0, 0, 0] and (alpha.grad[1:] == 0).all()
