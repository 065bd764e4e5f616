"""A cheap chest-X-ray-like grayscale picture with planted signs.

Dark lungs, bright mediastinum, heart and spine, faint ribs, soft tissue, noise, and varied
brightness/contrast. Signs (each drawn with some probability when its label is set, so the image
is an imperfect witness, and rarely without it):
- conduction disorders: a pacemaker (small bright device, upper chest) with a lead to the heart;
- congestive heart failure: an enlarged heart shadow;
- pleurisy/pneumothorax: a dark, featureless region at one lung's apex;
- COPD: hyperinflated, darker lungs;
- pneumonia: a bright patchy opacity in a lower zone (also visible in the EHR: fever, RR).
Shapes are soft-edged ellipses evaluated on a coordinate grid: a few numpy passes per image.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SIGNS = ("pacemaker", "cardiomegaly", "pneumothorax", "hyperinflation", "opacity")


@lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(h, dtype=np.float32) + 0.5) / h
    x = (np.arange(w, dtype=np.float32) + 0.5) / w
    return y[:, None], x[None, :]


def _ellipse(y, x, cy, cx, ry, rx, edge=0.15) -> np.ndarray:
    d = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    return np.clip((1.0 - d) / edge, 0.0, 1.0)


def _segment(y, x, p0, p1, width) -> np.ndarray:
    """Soft line from p0 to p1 (y, x), `width` in image fractions."""
    py, px = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((y - p0[0]) * py + (x - p0[1]) * px) / (py * py + px * px), 0, 1)
    dist = np.sqrt((y - p0[0] - t * py) ** 2 + (x - p0[1] - t * px) ** 2)
    return np.clip(1.0 - dist / width, 0.0, 1.0)


def draw(rng: np.random.Generator, h: int, w: int, signs: dict[str, bool], view: str) -> np.ndarray:
    """Return a uint8 (h, w) image for `view` ('AP', 'PA' or 'LATERAL') showing `signs`."""
    y, x = _grid(h, w)

    def j(scale: float) -> float:  # small positional jitter
        return rng.uniform(-scale, scale)

    body = _ellipse(y, x, 0.58 + j(0.02), 0.5 + j(0.02), 0.62, 0.47 + j(0.03), edge=0.3)
    img = 0.08 + 0.45 * body
    if view == "LATERAL":
        lung = _ellipse(y, x, 0.45 + j(0.02), 0.52 + j(0.02), 0.3, 0.3, edge=0.4)
        heart = _ellipse(y, x, 0.62, 0.36, 0.15 * (1.3 if signs["cardiomegaly"] else 1.0), 0.13)
        img = img * (1 - lung) + lung * 0.25
        img = img * (1 - heart) + heart * 0.6
        img = img + 0.15 * _ellipse(y, x, 0.55, 0.8, 0.45, 0.05)  # spine
    else:
        inflate = 1.13 if signs["hyperinflation"] else 1.0
        lung_value = 0.14 if signs["hyperinflation"] else 0.22
        cy = 0.46 + j(0.02) - (0.02 if signs["hyperinflation"] else 0)
        right = _ellipse(y, x, cy, 0.31 + j(0.015), 0.29 * inflate, 0.14 * inflate)
        left = _ellipse(y, x, cy + 0.01, 0.69 + j(0.015), 0.27 * inflate, 0.13 * inflate)
        lungs = np.maximum(right, left)
        ribs = 0.05 * (np.sin(2 * np.pi * (y * 9 + 2.5 * (x - 0.5) ** 2)) > 0.4)
        img = img * (1 - lungs) + lungs * (lung_value + ribs)
        if signs["pneumothorax"]:
            side = 0.24 if rng.random() < 0.5 else 0.76
            ptx = _ellipse(y, x, 0.3 + j(0.03), side, 0.13, 0.06, edge=0.3) * lungs
            img = img * (1 - ptx) + ptx * 0.03
        if signs["opacity"]:
            blob = (
                _ellipse(y, x, 0.6 + j(0.04), (0.3 if rng.random() < 0.5 else 0.7) + j(0.02), 0.11, 0.09, edge=0.9)
                * lungs
            )
            img = img + 0.3 * blob * (0.7 + 0.3 * rng.random(img.shape, dtype=np.float32))
        mediastinum = _ellipse(y, x, 0.35, 0.5, 0.3, 0.06, edge=0.5)
        spine = _ellipse(y, x, 0.6, 0.5, 0.6, 0.035, edge=0.4)
        grow = 1.45 if signs["cardiomegaly"] else 1.0
        heart = _ellipse(y, x, 0.64 + j(0.015), 0.55 + j(0.015), 0.13 * (1 + 0.15 * (grow - 1)), 0.12 * grow, 0.3)
        img = np.maximum(img, 0.6 * mediastinum)
        img = img * (1 - heart) + heart * 0.66
        img = img + 0.1 * spine
    if signs["pacemaker"]:
        py, px = 0.2 + j(0.03), 0.76 + j(0.03)
        device = _ellipse(y, x, py, px, 0.04, 0.06, edge=0.1)
        lead = _segment(y, x, (py, px), (0.6, 0.55), 0.006)
        img = np.maximum(img, 0.97 * np.maximum(device, lead))
    img = img + rng.normal(0.0, 0.025, img.shape).astype(np.float32)
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip(img, 0, 1) ** gamma * rng.uniform(0.85, 1.1) + rng.uniform(-0.04, 0.04)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)
