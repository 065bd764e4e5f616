"""The registry's declarations: the settings a model declares are all it reads (so its training
runs' params are complete), and every setting of the schema is read by some model or is
operational (so a new setting cannot slip past the re-run logic)."""

from __future__ import annotations

import pytest
import torch
import torchvision
import yaml

from drfuse import config as config_mod
from drfuse.experiments import resolve_run, run_params
from drfuse.models import MODELS, build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def full_model_cfg(tmp_path_factory) -> dict:
    """Every `model:` setting (the schema's list), each at a value that changes the model where the
    setting allows it, so a model that reads an undeclared key fails or is built differently
    without it."""
    tmp = tmp_path_factory.mktemp("weights")
    paths = {}
    for name, seed in (("cnn", 1), ("baseline", 2)):
        torch.manual_seed(seed)
        paths[name] = tmp / f"{name}.pt"
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), paths[name])
    return {
        "d_model": 16,
        "n_heads": 2,
        "ff_dim": 24,
        "dropout": 0.1,
        "max_len": 60,
        "backbone": "resnet18",
        "pretrained_weights": str(paths["cnn"]),
        "cnn_width": 64,  # the width of pretrained weights; the "narrow" variant below changes it
        "aux_head": "mlp",
        "image_size": 36,
        "lambda_jsd": 0.3,
        "lambda_orth": 0.4,
        "lambda_attn": 0.7,
        "margin": 0.1,
        "rank_order": "batch",
        "rank_gap": 0.5,
        "rank_negatives": 0.5,
        "attention_query": "token",
        "attention_prior": "aux",
        "baseline_backbone": "resnet18",
        "baseline_pretrained_weights": str(paths["baseline"]),
        "lstm_layers": 3,
        "mmtm_ratio": 2,
        "mmtm_stages": [3, 4],
        "daft_stages": [3],
        "medfuse_init_ehr": "",
        "medfuse_init_cxr": "",
    }


def _fingerprint(model) -> tuple:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return repr(model), state, getattr(model, "loss_settings", None)


@pytest.mark.parametrize("cnn", ["pretrained", "narrow"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_built_from_its_declared_settings_alone_is_the_same_model(name, cnn, full_model_cfg):
    assert set(full_model_cfg) == set(config_mod.schema()["$defs"]["model"]["properties"])  # every setting
    # pretrained weights need torchvision's width: the CNN width is checked without them
    cfg = (
        full_model_cfg
        if cnn == "pretrained"
        else {**full_model_cfg, "cnn_width": 16, "pretrained_weights": "", "baseline_pretrained_weights": ""}
    )
    declared = {k: v for k, v in cfg.items() if k in MODELS[name].model_keys}
    torch.manual_seed(0)
    full_repr, full_state, full_loss = _fingerprint(build_model(name, cfg))
    torch.manual_seed(0)
    decl_repr, decl_state, decl_loss = _fingerprint(build_model(name, declared))
    assert decl_repr == full_repr, f"{name} reads a model setting it does not declare (architecture differs)"
    assert decl_state.keys() == full_state.keys()
    for key, value in full_state.items():
        assert torch.equal(decl_state[key], value), f"{name}: {key} differs: an undeclared setting is read"
    assert decl_loss == full_loss


def test_declared_settings_exist_in_the_schema():
    schema = config_mod.schema()["$defs"]
    for name, spec in MODELS.items():
        assert set(spec.model_keys) <= set(schema["model"]["properties"]), name
        assert set(spec.train_keys) <= set(schema["train"]["properties"]), name


def test_every_model_and_train_setting_is_read_by_a_model_or_operational():
    schema = config_mod.schema()["$defs"]
    for section, attr in (("model", "model_keys"), ("train", "train_keys")):
        declared = {k for spec in MODELS.values() for k in getattr(spec, attr)}
        operational = set(config_mod.OPERATIONAL.get(section, ()))
        unaccounted = set(schema[section]["properties"]) - declared - operational
        assert not unaccounted, f"{section}.{sorted(unaccounted)}: declare it in drfuse.models.MODELS or OPERATIONAL"
        assert not declared & operational, f"{section}: both declared and operational: {declared & operational}"


def test_schema_model_names_are_the_registry():
    assert config_mod.schema()["$defs"]["model_name"]["enum"] == list(MODELS)


def test_run_params_hold_only_what_the_model_reads_with_per_model_and_grid_merged():
    cfg = config_mod.load("config.yaml")
    cfg["per_model"] = {
        "mmtm": {"train": {"lr": 0.5}, "model": {"mmtm_ratio": 8}},
        "drfuse": {"model": {"rank_gap": 0.2}},
    }
    cfg["experiments"]["grid_search"].update(
        enabled=True, lambda_jsd=[0.0, 1.0], lambda_orth=[1.0], lambda_attn=[0.5], lr=[1e-4]
    )

    transformer = run_params("transformer", cfg)
    assert set(transformer["model"]) == {"d_model", "n_heads", "ff_dim", "dropout", "max_len"}
    assert set(transformer["train"]) == {
        "lr", "lr_multipliers", "adam_betas", "weight_decay", "lr_scheduler", "batch_size", "epochs", "patience",
        "select_on", "val_set",
    }  # fmt: skip
    mmtm = run_params("mmtm", cfg)
    assert mmtm["train"]["lr"] == 0.5 and mmtm["model"]["mmtm_ratio"] == 8  # its per_model entry
    assert "lambda_attn" not in mmtm["model"] and "device" not in mmtm["train"] and "num_threads" not in mmtm["train"]
    assert run_params("daft", cfg)["train"]["lr"] == cfg["train"]["lr"]  # another model's entry does not leak
    # a grid run is DrFuse: its per_model entry, then the grid point on top
    model, run_cfg = resolve_run("drfuse-g01", cfg)
    assert model == "drfuse" and run_cfg["model"]["rank_gap"] == 0.2 and run_cfg["model"]["lambda_jsd"] == 1.0
    assert run_params("drfuse-g01", cfg)["model"]["lambda_jsd"] == 1.0
    assert run_params("drfuse-g00", cfg)["model"]["lambda_jsd"] == 0.0


def test_per_model_in_builtin_overrides_merges_and_unknown_models_are_refused(tmp_path):
    from drfuse.errors import UserError

    raw = yaml.safe_load(open("config.yaml"))
    raw["per_model"] = {"mmtm": {"train": {"lr": 0.2, "batch_size": 8}}}
    raw["builtin_overrides"]["per_model"] = {"mmtm": {"train": {"lr": 0.3}}}
    cfg = config_mod.checked_resolve(raw)
    assert cfg["per_model"]["mmtm"]["train"] == {"lr": 0.3, "batch_size": 8}  # deep merge
    raw["per_model"]["mmtmm"] = {"train": {"lr": 0.1}}
    with pytest.raises(UserError, match=r"per_model\.mmtmm: not a model name; allowed: drfuse, "):
        config_mod.checked_resolve(raw)
