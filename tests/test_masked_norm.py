"""Masked BatchNorm: plain BatchNorm2d without a mask; with one, the padded batch trains like the
unpadded one (outputs, gradients, running statistics)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from drfuse.models.encoders import build_resnet
from drfuse.models.masked_norm import MaskedBatchNorm2d, valid_rows


def test_resnets_keep_torchvision_keys_and_weights(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pt")
    net = build_resnet("resnet18", str(tmp_path / "resnet18.pt"))
    assert list(net.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 20 and all(isinstance(m, MaskedBatchNorm2d) for m in norms)


def test_without_a_mask_it_is_batchnorm2d():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 5)
    plain, masked = nn.BatchNorm2d(4), MaskedBatchNorm2d(4)
    for _ in range(2):
        assert torch.equal(plain(x), masked(x))
    for key, value in plain.state_dict().items():
        assert torch.equal(masked.state_dict()[key], value)
    plain.eval(), masked.eval()
    with valid_rows(torch.tensor([True, False] * 3)):  # eval mode: running statistics, row by row
        assert torch.equal(plain(x), masked(x))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_padded_rows_change_nothing(momentum):
    """Two training steps on 8 rows of which 5 are real equal two steps of BatchNorm2d on the 5."""
    torch.manual_seed(0)
    mask = torch.tensor([True, False, True, True, False, True, False, True])
    plain = nn.BatchNorm2d(3, momentum=momentum).double()
    masked = MaskedBatchNorm2d(3, momentum=momentum).double()
    with torch.no_grad():
        for bn in (plain, masked):
            bn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    for step in range(2):
        x = (torch.randn(8, 3, 4, 4, dtype=torch.float64) * (step + 1) + step).requires_grad_()
        x_real = x.detach()[mask].clone().requires_grad_()
        target = torch.randn(5, 3, 4, 4, dtype=torch.float64)
        y_plain = plain(x_real)
        with valid_rows(mask):
            y_masked = masked(x)
        torch.testing.assert_close(y_masked[mask], y_plain, rtol=1e-12, atol=1e-12)
        ((y_plain - target) ** 2).sum().backward()
        ((y_masked[mask] - target) ** 2).sum().backward()  # the caller drops the padded rows
        torch.testing.assert_close(x.grad[mask], x_real.grad, rtol=1e-10, atol=1e-12)
        assert (x.grad[~mask] == 0).all()
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(masked, name).grad, getattr(plain, name).grad, rtol=1e-10, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(masked, name), getattr(plain, name), rtol=1e-12, atol=1e-12)


def test_a_mask_without_rows_leaves_the_statistics_alone():
    masked = MaskedBatchNorm2d(3)
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    with valid_rows(torch.zeros(4, dtype=torch.bool)):
        assert torch.isfinite(masked(torch.randn(4, 3, 2, 2))).all()
        with pytest.raises(ValueError, match="row mask"):
            masked(torch.randn(5, 3, 2, 2))
    for key, value in masked.state_dict().items():
        assert torch.equal(value, before[key]), key
