"""Chest X-ray preparation on tensors, a whole batch at once, on the GPU or the CPU alike.

Input: uint8 grayscale images (B, S, S) from the image cache (shorter side already resized to S,
centre square kept). Output: float (B, 3, crop, crop), ImageNet-normalised, grayscale copied to
three channels. Training adds the paper's augmentation: random horizontal flip, random affine
(rotation +-45 deg, translation up to 15 % of the side, scale 0.85-1.15), then the centre crop;
evaluation takes the centre crop only.

The flip, the affine and the crop are one sampling grid per image (`affine_grid` + `grid_sample`,
bilinear, zero fill like torchvision's RandomAffine), so a batch costs one kernel call instead of
per-image PIL transforms in DataLoader workers. The random parameters are drawn on the CPU from
the caller's generator, so the result does not depend on the device and a resumed run draws the
same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentSettings:
    """The paper's training augmentation (section 4.1 / the reference transforms)."""

    flip_p: float = 0.5
    degrees: float = 45.0
    translate: float = 0.15  # max shift, as a share of the image side
    scale: tuple[float, float] = (0.85, 1.15)

    @classmethod
    def from_cfg(cls, augment: dict) -> AugmentSettings:
        """From the `train.augment` settings of config.yaml."""
        return cls(
            flip_p=float(augment["flip_p"]),
            degrees=float(augment["degrees"]),
            translate=float(augment["translate"]),
            scale=(float(augment["scale"][0]), float(augment["scale"][1])),
        )


def random_grids(n: int, size: int, crop: int, generator: torch.Generator, settings: AugmentSettings) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices mapping crop pixels to source pixels, on the CPU.

    In normalised coordinates the output crop covers [-c, c] of the source (c = crop / size);
    a source point p is reached from output point u as p = Flip . A^-1 . (c u), where A is the
    forward affine x -> s R x + t (about the image centre) and the flip comes first in the
    forward pipeline.
    """
    flip = torch.where(torch.rand(n, generator=generator) < settings.flip_p, -1.0, 1.0)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(settings.degrees)
    # translation in normalised units: a shift of f * side is 2 f in [-1, 1] coordinates
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * settings.translate)
    lo, hi = settings.scale
    scale = lo + torch.rand(n, generator=generator) * (hi - lo)

    c = crop / size
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # A^-1 (p) = R(-angle) (p - t) / s ; R(-a) = [[cos, sin], [-sin, cos]]
    theta = torch.empty(n, 2, 3)
    theta[:, 0, 0] = cos * c
    theta[:, 0, 1] = sin * c
    theta[:, 0, 2] = -(cos * shift[:, 0] + sin * shift[:, 1])
    theta[:, 1, 0] = -sin * c
    theta[:, 1, 1] = cos * c
    theta[:, 1, 2] = -(-sin * shift[:, 0] + cos * shift[:, 1])
    theta[:, 0, :] *= flip[:, None]  # the flip negates the source x coordinate
    return theta


def _normalise(gray: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] -> (B, 3, H, W) ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=gray.device, dtype=gray.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=gray.device, dtype=gray.dtype).view(1, 3, 1, 1)
    return (gray - mean) / std


def prepare_images(
    raw: torch.Tensor,
    crop: int,
    train: bool,
    generator: torch.Generator | None = None,
    settings: AugmentSettings | None = None,
) -> torch.Tensor:
    """uint8 (B, S, S) -> float32 (B, 3, crop, crop) on raw's device; augmented when `train`."""
    if raw.ndim != 3 or raw.shape[1] != raw.shape[2]:
        raise ValueError(f"expected square uint8 images (B, S, S), got {tuple(raw.shape)}")
    size = raw.shape[-1]
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the cached image size {size}")
    gray = raw.unsqueeze(1).float().div_(255.0)
    if train:
        if generator is None:
            raise ValueError("training augmentation needs a generator")
        theta = random_grids(raw.shape[0], size, crop, generator, settings or AugmentSettings()).to(raw.device)
        grid = F.affine_grid(theta, [raw.shape[0], 1, crop, crop], align_corners=False)
        gray = F.grid_sample(gray, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        off = (size - crop) // 2
        gray = gray[:, :, off : off + crop, off : off + crop]
    return _normalise(gray)
