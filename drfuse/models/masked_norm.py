"""BatchNorm whose training statistics come from chosen rows of the batch only.

`MaskedBatchNorm2d` is a drop-in `nn.BatchNorm2d` (same parameters, buffers and `state_dict`
keys, so torchvision ResNet weights load unchanged; build a ResNet with
`torchvision.models.resnet50(norm_layer=MaskedBatchNorm2d)`). Outside a `valid_rows(mask)` block
it *is* `nn.BatchNorm2d` (the parent's forward runs, bit for bit). Inside one, in training mode,
the batch mean and variance, the running statistics and `num_batches_tracked` are computed over
the rows where `mask` is True only; the other rows are normalised with those statistics and
influence nothing. A batch padded with extra rows therefore trains exactly like the unpadded
batch, up to float rounding: that lets a CNN see a fixed number of images per step (static
shapes for CUDA graphs) while BatchNorm sees only the real images. In eval mode BatchNorm works
row by row from the running statistics, so the mask has nothing to do there.

A mask without any True row leaves the running statistics and the counter untouched (the rows'
outputs are then meaningless and must be discarded by the caller).

The active mask is one module-level value, set and restored by `valid_rows` (torch.compile traces
this as part of the graph; single-threaded use).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

_valid_rows: torch.Tensor | None = None


@contextlib.contextmanager
def valid_rows(mask: torch.Tensor):
    """Within the block, MaskedBatchNorm2d layers in training mode take their statistics from the
    rows where `mask` (shape (N,), bool) is True."""
    global _valid_rows
    previous = _valid_rows
    _valid_rows = mask
    try:
        yield
    finally:
        _valid_rows = previous


def masked_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`bn(x)` in training mode with the statistics of the rows `mask` only (float32 arithmetic at
    least, as cuDNN's BatchNorm under bf16 autocast; the result has x's dtype). Updates bn's running
    statistics as nn.BatchNorm2d does."""
    if mask.shape != (x.shape[0],):
        raise ValueError(f"row mask of shape {tuple(mask.shape)} for a batch of {x.shape[0]} rows")
    dtype = torch.promote_types(x.dtype, torch.float32)
    weights = mask.to(dtype).unsqueeze(1)  # (N, 1)
    count = weights.sum() * (x.shape[2] * x.shape[3])  # values per channel
    denom = count.clamp_min(1.0)
    xf = x.to(dtype)
    mean = (xf.sum((2, 3)) * weights).sum(0) / denom
    centred = xf - mean.view(1, -1, 1, 1)
    var = (centred.square().sum((2, 3)) * weights).sum(0) / denom  # biased: used to normalise
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    y = centred * scale.view(1, -1, 1, 1)
    if bn.bias is not None:
        y = y + bn.bias.view(1, -1, 1, 1)
    if bn.track_running_stats:
        with torch.no_grad():
            seen = (count > 0).to(dtype)  # no valid row: no update
            bn.num_batches_tracked.add_(seen.to(bn.num_batches_tracked.dtype))
            if bn.momentum is None:  # cumulative moving average
                factor = seen / bn.num_batches_tracked.clamp_min(1).to(dtype)
            else:
                factor = seen * bn.momentum
            unbiased = var * count / (count - 1.0).clamp_min(1.0)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor)
            bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), factor)
    return y.to(x.dtype)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that, inside `valid_rows(mask)` and in training mode, takes its statistics
    from the masked rows only (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = _valid_rows
        if mask is None or not self.training:
            return super().forward(x)
        return masked_batch_norm(self, x, mask)
