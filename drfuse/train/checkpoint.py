"""Checkpoint files: written atomically, loadable with `torch.load(weights_only=True)`.

`last.pt` must restore a run exactly (model, optimiser, counters and every random state), so a
killed run that is restarted ends bit-identical, on the CPU, to one that never stopped. RNG
states are stored as tensors and plain lists (no numpy objects) so loading needs no pickle.

Files are written through `drfuse.atomic`; a temporary one left behind by a killed process (a
`last.pt` half-written is as large as the checkpoint) is removed at the next start of training
(`atomic.remove_stale`), unless its process is still alive.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from drfuse import atomic
from drfuse.errors import UserError


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: never a half-written file."""
    with atomic.writing(path) as tmp:
        torch.save(obj, tmp)


def link_atomic(src: Path, dst: Path) -> None:
    """Make dst another name of src (a hard link: no extra disk; a copy where links fail)."""
    with atomic.writing(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def load(path: Path, map_location="cpu", remedy: str = "delete it and run the step that wrote it again") -> dict:
    """torch.load(weights_only=True); a file that cannot be read (truncated, corrupt, not a
    checkpoint) is a one-line UserError naming it and `remedy`."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError ... here
        raise UserError(f"{path} is truncated or corrupt (torch.load failed: {type(exc).__name__}); {remedy}") from exc


def rng_state(data_generator: torch.Generator) -> dict:
    """Every random state a training run draws from."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
        "data": data_generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    data_generator.set_state(state["data"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
