"""Encoders shared by DrFuse and the baselines.

- `EHRTransformer`: DrFuse's EHR encoder (Linear(76 -> d) + learnable positional encoding, one
  Transformer layer shared by every branch, then one 1-layer Transformer branch per output, masked
  mean pooling over the valid time steps).
- `EHRLSTM`: MedFuse's EHR encoder (stacked single-layer LSTMs over the packed sequence, the last
  hidden state of the top layer, dropout on that feature).
- `build_resnet` / `CNNStem` / `CNNTrunk` / `CNNEncoder`: torchvision ResNets split into a stem
  (conv1, bn1, relu, maxpool) and a trunk (layer1..layer4 + global average pool, optionally a
  Linear to d), optionally narrower than torchvision's (`model.cnn_width`). Weights are random or
  loaded from a local state_dict; nothing is ever downloaded.
  Their BatchNorm layers are `masked_norm.MaskedBatchNorm2d` (plain BatchNorm2d unless a row mask
  is active; the same state_dict keys as torchvision's).
- `run_on_available`: runs an image function on the samples that have a CXR only, so a missing
  image never reaches the CNN's BatchNorm statistics. Two ways, chosen by the training engine
  through `padded_image_batches(...)`: by default the CXR rows are gathered and the CNN sees a
  variable number of images; padded, the CNN sees the whole batch (a static shape, which CUDA
  graphs need) with the missing rows masked out of BatchNorm and their outputs zeroed. Both give
  the same outputs, losses, gradients and BatchNorm statistics up to float rounding.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torchvision
from torch import nn

from drfuse.errors import UserError
from drfuse.models.masked_norm import MaskedBatchNorm2d, valid_rows

N_EHR_FEATURES = 76
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
TORCHVISION_WIDTH = 64  # channels of a torchvision ResNet's stem and first stage


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) bool, True at the time steps inside each sequence's true length."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths.to(torch.long)[:, None]


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T, d) over the valid steps (B, T) of each row."""
    w = valid.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def _layer(cfg: dict) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d_model=cfg["d_model"],
        nhead=cfg["n_heads"],
        dim_feedforward=cfg["ff_dim"],
        dropout=cfg["dropout"],
        batch_first=True,
        norm_first=False,  # post-LN, as nn.TransformerEncoder in the reference
    )


class EHRTransformer(nn.Module):
    """DrFuse's EHR encoder with `n_branches` outputs (2 in DrFuse: shared, distinct; 1 alone)."""

    def __init__(self, cfg: dict, n_branches: int = 1, n_features: int = N_EHR_FEATURES):
        super().__init__()
        d = cfg["d_model"]
        self.max_len = cfg["max_len"]
        self.emb = nn.Linear(n_features, d)
        self.pos = nn.Parameter(torch.empty(1, self.max_len, d).uniform_(-0.1, 0.1))
        self.first = _layer(cfg)  # "we share the first layer" between the shared and distinct encoders
        self.branches = nn.ModuleList(_layer(cfg) for _ in range(n_branches))
        self.out_dim = d

    def forward(self, ehr: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        steps = ehr.shape[1]
        if steps > self.max_len:
            raise UserError(f"EHR sequences of {steps} steps exceed model.max_len = {self.max_len}")
        valid = valid_mask(lengths, steps)
        x = self.emb(ehr) + self.pos[:, :steps]
        x = self.first(x, src_key_padding_mask=~valid)
        return tuple(masked_mean(branch(x, src_key_padding_mask=~valid), valid) for branch in self.branches)


class EHRLSTM(nn.Module):
    """MedFuse's EHR encoder: `layers` stacked single-layer LSTMs (hidden d), last hidden state.

    The layers are kept separate (as in MedFuse) so MMTM and DAFT can act between them.
    """

    def __init__(self, cfg: dict, layers: int = 2, n_features: int = N_EHR_FEATURES):
        super().__init__()
        d = cfg["d_model"]
        self.layers = nn.ModuleList(nn.LSTM(n_features if i == 0 else d, d, batch_first=True) for i in range(layers))
        self.dropout = nn.Dropout(cfg["dropout"])
        self.out_dim = d
        for lstm in self.layers:  # MedFuse's initialisation
            nn.init.orthogonal_(lstm.weight_hh_l0)
            nn.init.xavier_uniform_(lstm.weight_ih_l0)
            nn.init.zeros_(lstm.bias_hh_l0)
            nn.init.zeros_(lstm.bias_ih_l0)

    def run_layer(self, i: int, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i over the padded batch x (B, T, .): (padded outputs (B, T, d), last hidden (B, d))."""
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.layers[i](packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, h[-1]

    def forward(self, ehr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = ehr
        for i in range(len(self.layers)):
            x, h = self.run_layer(i, x, lengths)
        return self.dropout(h)


def build_resnet(
    backbone: str, pretrained_weights: str = "", width: int = TORCHVISION_WIDTH
) -> torchvision.models.ResNet:
    """A torchvision ResNet, random or loaded from a local state_dict file (never downloaded);
    `width` channels in the stem and first stage (`model.cnn_width`; torchvision's is 64)."""
    if backbone not in BACKBONES:
        raise UserError(f"model.backbone = {backbone!r} is not supported; use one of {', '.join(BACKBONES)}")
    net = getattr(torchvision.models, backbone)(weights=None, norm_layer=MaskedBatchNorm2d)
    if width != TORCHVISION_WIDTH:
        if pretrained_weights:
            raise UserError(
                f"model.cnn_width = {width}: pretrained weights ({pretrained_weights}) are torchvision's "
                f"width {TORCHVISION_WIDTH}; set model.cnn_width: {TORCHVISION_WIDTH} to load them"
            )
        _rebuild_with_width(net, width)
    if pretrained_weights:
        path = Path(pretrained_weights)
        if not path.is_file():
            raise UserError(f"model.pretrained_weights: no such file {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:  # wrong architecture or not a state_dict: say which setting
            raise UserError(
                f"model.pretrained_weights: {path} is not a torchvision {backbone} state_dict ({exc})"
            ) from exc
    return net


def _rebuild_with_width(net: torchvision.models.ResNet, width: int) -> None:
    """Replace the stem and the four stages by ones with width, 2, 4, 8 x width channels (torchvision
    fixes 64), built by torchvision's own stage builder and initialised as torchvision does. The
    CPU demo uses 32: at its 48-pixel images a step's time is mostly per-layer costs that shrink
    with the width, not the batch (docs/performance.md)."""
    block = type(net.layer1[0])
    depths = [len(stage) for stage in (net.layer1, net.layer2, net.layer3, net.layer4)]
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = net._norm_layer(width)
    net.layer1, net.layer2, net.layer3, net.layer4 = (
        net._make_layer(block, width * 2**i, depth, stride=1 if i == 0 else 2) for i, depth in enumerate(depths)
    )
    net.fc = nn.Linear(8 * width * block.expansion, net.fc.out_features)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def feature_dim(net: torchvision.models.ResNet) -> int:
    return net.fc.in_features


def stage_channels(encoder: CNNEncoder) -> list[int]:
    """Channels after the stem and after each of layer1..layer4 (stages 0..4) of a CNNEncoder."""
    chans = [encoder.stem[0].out_channels]
    for layer in encoder.trunk.layers:
        last = layer[-1]
        chans.append((last.bn3 if hasattr(last, "bn3") else last.bn2).num_features)
    return chans


class CNNStem(nn.Sequential):
    def __init__(self, net: torchvision.models.ResNet):
        super().__init__(net.conv1, net.bn1, net.relu, net.maxpool)


class CNNTrunk(nn.Module):
    """layer1..layer4 + global average pool (+ Linear(features -> out_dim) when out_dim is given)."""

    def __init__(self, net: torchvision.models.ResNet, out_dim: int | None = None):
        super().__init__()
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.proj = nn.Linear(feature_dim(net), out_dim) if out_dim else None
        self.out_dim = out_dim or feature_dim(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(x), 1), 1)
        return self.proj(x) if self.proj is not None else x


class CNNEncoder(nn.Module):
    """One ResNet: stem + trunk, pooled feature (projected to out_dim when given)."""

    def __init__(
        self, backbone: str, pretrained_weights: str = "", width: int = TORCHVISION_WIDTH, out_dim: int | None = None
    ):
        super().__init__()
        net = build_resnet(backbone, pretrained_weights, width)
        self.stem = CNNStem(net)
        self.trunk = CNNTrunk(net, out_dim)
        self.out_dim = self.trunk.out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.stem(images))


# Whether run_on_available pads (set by the training engine through padded_image_batches; one
# module-level value so torch.compile guards on it instead of seeing a Python argument).
_pad_images = False


@contextlib.contextmanager
def padded_image_batches(enabled: bool = True):
    """Within the block, run_on_available feeds the CNN the whole batch (static shape) instead of
    gathering the rows that have a CXR."""
    global _pad_images
    previous = _pad_images
    _pad_images = bool(enabled)
    try:
        yield
    finally:
        _pad_images = previous


def run_on_available(fn, images: torch.Tensor, has_cxr: torch.Tensor, dims, template: torch.Tensor):
    """fn over the images of the samples with a CXR; a tuple of (B, dim) tensors (one per output of
    fn), zero rows for the samples without CXR.

    `template` gives device and dtype of the result. Unpadded (default), fn sees images[has_cxr]
    and is not called at all when no sample has a CXR (BatchNorm cannot run on an empty batch).
    Padded (`padded_image_batches`), fn sees all B images with BatchNorm statistics taken from the
    rows with a CXR (`masked_norm.valid_rows`); the other rows' outputs are replaced by zeros, so
    no gradient flows from them.
    """
    if _pad_images:
        with valid_rows(has_cxr):
            outs = fn(images)
        outs = outs if isinstance(outs, tuple) else (outs,)
        keep = has_cxr.unsqueeze(1)
        return tuple(torch.where(keep, out.to(template.dtype), 0.0) for out in outs)
    idx = has_cxr.nonzero().squeeze(1)
    full = tuple(template.new_zeros((has_cxr.shape[0], dim)) for dim in dims)
    if idx.numel() == 0:
        return full
    outs = fn(images.index_select(0, idx))
    outs = outs if isinstance(outs, tuple) else (outs,)
    return tuple(base.index_copy(0, idx, out.to(base.dtype)) for base, out in zip(full, outs))


def baseline_cnn(cfg: dict) -> tuple[str, str, int]:
    """(backbone, weights file, width) of MMTM, DAFT and MedFuse: `model.baseline_backbone`,
    (config.yaml: ResNet-34, as in MedFuse's code, whose MMTM and DAFT the DrFuse paper's baselines
    come from), `model.baseline_pretrained_weights` (`model.pretrained_weights` when both backbones
    agree) and `model.cnn_width`."""
    backbone = cfg["baseline_backbone"]
    same = backbone == cfg["backbone"]
    weights = cfg["baseline_pretrained_weights"] or (cfg["pretrained_weights"] if same else "")
    return backbone, weights, cfg["cnn_width"]


def cnn(cfg: dict) -> tuple[str, str, int]:
    """(backbone, weights file, width) of DrFuse's and the uni-modal models' CNN."""
    return cfg["backbone"], cfg["pretrained_weights"], cfg["cnn_width"]


def lstm_layers(cfg: dict, minimum: int = 1) -> int:
    """LSTM depth of the MedFuse-style EHR encoder: `model.lstm_layers` (config.yaml: 2, as in
    MedFuse's runs; MMTM and DAFT act between layers, so they need `minimum` = 2)."""
    layers = int(cfg["lstm_layers"])
    if layers < minimum:
        raise UserError(f"model.lstm_layers = {layers}: this model needs at least {minimum}")
    return layers


def fusion_stages(cfg: dict, key: str) -> list[int]:
    """CNN stages (0 = after the stem, 1..4 = after layer1..layer4) where MMTM/DAFT blocks act:
    `model.<key>` (config.yaml: MMTM [4], DAFT [3], as MedFuse's phenotyping scripts
    `--layer_after 4` / `--layer_after 3`)."""
    stages = sorted({int(s) for s in cfg[key]})
    if not stages or stages[0] < 0 or stages[-1] > 4:
        raise UserError(f"model.{key} = {cfg[key]!r}: give stage numbers in 0..4")
    return stages


def zero_missing_images(images: torch.Tensor, has_cxr: torch.Tensor) -> torch.Tensor:
    """The MMTM/DAFT papers' treatment of a missing CXR: an all-zero (normalised) image."""
    return images * has_cxr.to(images.dtype).view(-1, 1, 1, 1)
