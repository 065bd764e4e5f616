"""Shared fixtures: the real open data (a trimmed copy in tests/data, the whole of it in ../shared),
and a tiny built-in dataset run through the data stages once per test session (so model and
training tests run on realistic files).

A test that uses `shared_dir` (or a fixture built on it: `demo_dir`, `demo_db`) is marked
`shared_data`; those are deselected only when ../shared is absent (a fresh clone), never when it
is there (CI has it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from drfuse import config as config_mod

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEMO_DIR = SHARED / "data" / "mimic-iv-demo"
# Vendored with the repository (tests/data/README.md): 7 demo patients, 7 X-rays, 2 DICOMs.
FIXTURE = ROOT / "tests" / "data"
DEMO_SUBSET_DIR = FIXTURE / "mimic-iv-demo"
CXR_SAMPLES = FIXTURE / "cxr-samples"

# A tiny built-in dataset: enough stays in every split for training and evaluation tests.
TINY_OVERRIDES = {
    "synth": {"n_subjects": 240, "seed": 7, "image_size": [96, 80]},
    "images": {"cache_size": 40},
    "model": {"d_model": 32, "n_heads": 2, "ff_dim": 64, "dropout": 0.0, "backbone": "resnet18", "image_size": 36},
    # checkpoint_interval_s 0: the resume tests stop a run after an epoch and resume from its last.pt
    "train": {
        "batch_size": 32,
        "epochs": 2,
        "patience": 2,
        "lr": 1e-3,
        "device": "cpu",
        "cxr_warmup_epochs": 0,
        "checkpoint_interval_s": 0,
    },
    "evaluation": {"n_bootstrap": 50},
    # our recipe's warm-up in one epoch (drfuse and the *_ours runs)
    "recipe": {"warmup": {"train": {"cxr_warmup_epochs": 1}}},
}


def pytest_report_header(config):
    if not SHARED.is_dir():
        return f"{SHARED} not found: the tests that need the whole MIMIC-IV demo (marked shared_data) are deselected"
    return None


def pytest_collection_modifyitems(config, items):
    """Mark the tests that read ../shared; deselect them when it is absent (and only then)."""
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
    if SHARED.is_dir():
        return
    deselected = [item for item in items if item.get_closest_marker("shared_data")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("shared_data")]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"tests need the shared data folder beside the project: {SHARED}"
    return SHARED


@pytest.fixture(scope="session")
def demo_dir(shared_dir) -> Path:
    return DEMO_DIR


@pytest.fixture(scope="session")
def demo_subset_dir() -> Path:
    """The vendored MIMIC-IV demo subset (every fresh clone has it)."""
    return DEMO_SUBSET_DIR


@pytest.fixture(scope="session")
def cxr_samples_dir() -> Path:
    """Real chest X-rays (NIH PNGs, an uncompressed and a JPEG DICOM), vendored in tests/data."""
    return CXR_SAMPLES


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory, demo_dir) -> Path:
    """The real MIMIC-IV demo ingested once (no CXR metadata: the demo has none)."""
    from drfuse.data.ingest import ingest

    out = tmp_path_factory.mktemp("demo_db")
    db = out / "mimiciv.duckdb"
    ingest(demo_dir, None, db, out / "manifest.json")
    return db


@pytest.fixture(scope="session")
def tiny_cfg() -> dict:
    cfg = config_mod.load(ROOT / "config.yaml")
    return config_mod.deep_merge(cfg, TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory, tiny_cfg) -> Path:
    """synth -> ingest -> cohort (and the mortality cohort) -> features -> images on a tiny built-in
    dataset, once."""
    from drfuse.data.cohort import build_cohort
    from drfuse.data.features import build_features
    from drfuse.data.ingest import ingest
    from drfuse.data.mortality import build_mortality_cohort
    from drfuse.images.cache import build_cache
    from drfuse.synth import generate

    results = tmp_path_factory.mktemp("tiny_results")
    synth = results / "synth"
    generate(synth, tiny_cfg["synth"])
    db = results / "mimiciv.duckdb"
    ingest(synth / "mimic-iv", synth / "mimic-cxr-jpg", db, results / "ingest" / "manifest.json")
    build_cohort(db, results / "cohort", tiny_cfg)
    build_mortality_cohort(db, results / "cohort" / "stays.parquet", results / "cohort", tiny_cfg["cohort"]["hours"])
    build_features(db, results / "cohort" / "stays.parquet", results / "features", tiny_cfg)
    images = tiny_cfg["images"]
    build_cache(
        results / "cohort" / "stays.parquet",
        synth / "mimic-cxr-jpg",
        results / "images",
        size=images["cache_size"],
        strict=images["strict"],
        workers=1,
    )
    return results


@pytest.fixture
def tiny_cfg_copy(tiny_cfg) -> dict:
    return copy.deepcopy(tiny_cfg)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors run ~10x faster on one thread than on two oversubscribed cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
