"""benchmarks/model_diagnostics.py: trains each (model, seed) of a variant on a finished data stage,
predicts both validation sets (never a test set), scores the auxiliary heads and prints the
planted-structure check."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from drfuse.evaluate import planted
from drfuse.phenotypes import PHENOTYPES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "model_diagnostics.py"


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=900, cwd=cwd
    )


def test_a_variant_over_two_seeds(tmp_path, tiny_results, tiny_cfg):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_cfg))
    out = tmp_path / "variant"
    args = [
        "--results",
        str(tiny_results),
        "--out",
        str(out),
        "--config",
        str(config),
        "--seeds",
        "0",
        "1",
        "--models",
        "drfuse",
        "transformer",
        "resnet50",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=16",
    ]
    proc = run_script(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    stays = pd.read_parquet(tiny_results / "cohort" / "stays.parquet")
    val_ids, test_ids = (set(stays.loc[stays["split"] == s, "stay_id"]) for s in ("val", "test"))
    for seed in (0, 1):
        drfuse = out / "drfuse" / f"seed{seed}"
        for test_set in ("matched", "full"):  # the validation split's stays, no test stay
            ids = set(pd.read_parquet(drfuse / f"{test_set}.parquet")["stay_id"])
            assert ids and ids <= val_ids and not ids & test_ids
        assert (drfuse / "matched.parquet").is_file() and (drfuse / "full.parquet").is_file()
        assert not (out / "resnet50" / f"seed{seed}" / "full.parquet").exists()  # no EHR input: matched only
        aux = np.load(drfuse / "aux_last.npz")
        test = pd.read_parquet(drfuse / "matched.parquet")
        assert aux["aux_cxr"].shape == aux["labels"].shape == (len(test), len(PHENOTYPES))
        assert np.array_equal(aux["labels"], test[[f"y:{x}" for x in PHENOTYPES]].to_numpy())
        for head in ("aux_ehr", "aux_shared", "aux_cxr"):  # logits of the three heads, one per stay and label
            assert np.isfinite(aux[head]).all() and aux[head].std() > 0
        fit = np.load(drfuse / "attention_train.npz")  # the attention on its own training stays
        train_ids = stays.loc[(stays["split"] == "train") & stays["has_cxr"], "stay_id"]
        assert set(train_ids) <= set(fit["stay_id"]) <= set(stays.loc[stays["split"] == "train", "stay_id"])
        assert fit["attention"].shape == (len(fit["stay_id"]), len(PHENOTYPES), 3)
        assert np.allclose(fit["attention"].sum(-1), 1.0, atol=1e-5)

    lines = proc.stdout.splitlines()
    assert lines[0] == "variant variant: train.epochs=1 train.batch_size=16; scores on the validation split"
    rows = {line.split()[0]: line for line in lines if line and not line.startswith((" ", "variant"))}
    assert set(rows) == {"drfuse", "transformer", "resnet50"}
    assert "full" in rows["transformer"] and "full" not in rows["resnet50"]
    assert rows["drfuse"].endswith(
        "best epochs [2, 2]"
    )  # after our recipe's warm-up epoch, one epoch was all there was
    scores = "\n".join(line for line in lines if "ratio" not in line)  # PRAUCs and shares; ratios may pass 1
    for value in re.findall(r"(\d+\.\d{3}) ± ", scores):
        assert 0.0 <= float(value) <= 1.0
    assert sum(line.strip().startswith("attention on") for line in lines) == 3
    assert sum(line.strip().startswith(("aux_ehr", "aux_shared", "aux_cxr")) for line in lines) == 3
    assert any("attention_share_cxr" in line and "attention_share_ehr" in line for line in lines)
    parts = [line for line in lines if line.strip().startswith("logit parts on")]
    assert parts and all(len(re.findall(r"(?:EHR|shared|CXR) (\d\.\d{3}) / (\d+\.\d{2})", line)) == 3 for line in parts)
    for line in parts:
        for prauc, sd in re.findall(r"(\d\.\d{3}) / (\d+\.\d{2})", line):
            assert 0.0 <= float(prauc) <= 1.0 and float(sd) >= 0.0

    # a second call reuses what is trained: no run is repeated
    before = (out / "drfuse" / "seed0" / "best.pt").stat().st_mtime_ns
    again = run_script(*args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == proc.stdout
    assert (out / "drfuse" / "seed0" / "best.pt").stat().st_mtime_ns == before

    # a DrFuse-only variant: its ratios need uni-modal runs, from --reference or nowhere
    alone = [
        "--results",
        str(tiny_results),
        "--config",
        str(config),
        "--seeds",
        "0",
        "1",
        "--models",
        "drfuse",
        "--set",
        "train.epochs=1",
        "--set",
        "model.lambda_attn=1.0",
    ]
    no_reference = run_script(*alone, "--out", str(tmp_path / "attn1"), cwd=tmp_path)
    assert no_reference.returncode == 0, no_reference.stderr[-3000:]
    on_mean = next(line for line in no_reference.stdout.splitlines() if "on seed mean" in line)
    assert (
        "prauc_ratio_cxr n/a: reference not run (add resnet50 / transformer" in on_mean
        and "nan" not in no_reference.stdout
    )
    referenced = run_script(*alone, "--out", str(tmp_path / "attn1"), "--reference", str(out), cwd=tmp_path)
    assert referenced.returncode == 0, referenced.stderr[-3000:]
    on_mean = next(line for line in referenced.stdout.splitlines() if "on seed mean" in line)
    drfuse_files = [tmp_path / "attn1" / "drfuse" / f"seed{s}" / "matched.parquet" for s in (0, 1)]
    reference_files = [out / m / f"seed{s}" / "matched.parquet" for m in ("resnet50", "transformer") for s in (0, 1)]
    _, _, verdicts = planted.check(
        drfuse_files + reference_files,
        tiny_results / "synth" / "answer_key" / "label_groups.csv",
        tiny_cfg["evaluation"]["planted"],
        runpy.run_path(str(SCRIPT))["describe_run"],
    )
    for criterion in ("prauc_ratio_cxr", "prauc_ratio_ehr"):
        row = verdicts[(verdicts["seed"] == planted.MEAN) & (verdicts["criterion"] == criterion)].iloc[0]
        expected = row["note"] if row["passed"] is None else f"{row['value']:.3f} {'PASS' if row['passed'] else 'FAIL'}"
        assert f"{criterion} {expected}" in on_mean, on_mean

    missing = run_script(*alone, "--out", str(tmp_path / "attn1"), "--reference", str(tmp_path / "attn1"), cwd=tmp_path)
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .startswith(f"--reference: {tmp_path / 'attn1' / 'resnet50' / 'seed0' / 'matched.parquet'} does not exist")
    )


def test_a_setting_that_does_not_exist_is_named(tmp_path, tiny_results, tiny_cfg):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_cfg))
    proc = run_script(
        "--results",
        str(tiny_results),
        "--out",
        str(tmp_path / "v"),
        "--config",
        str(config),
        "--models",
        "transformer",
        "--seeds",
        "0",
        "--set",
        "train.epoch=1",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("--set: train.epoch")
    assert not (tmp_path / "v" / "transformer").exists()


def test_training_shifts_read_the_attention_on_the_training_stays(tmp_path):
    """Per inconsistent label, CXR-minus-EHR attention of the image-channel positives minus that of
    the series-channel ones, stays without an image left out."""
    label = PHENOTYPES[5]
    stay_id = np.arange(10, 16)
    has_cxr = np.array([True, True, True, True, True, False])
    attention = np.full((6, len(PHENOTYPES), 3), 1 / 3, np.float32)
    attention[:, 5] = [[0.1, 0.2, 0.7], [0.3, 0.2, 0.5], [0.6, 0.2, 0.2], [0.5, 0.1, 0.4], [0.3, 0.4, 0.3], [0, 0, 1]]
    np.savez(tmp_path / "attention_train.npz", stay_id=stay_id, has_cxr=has_cxr, attention=attention)
    channels = pd.DataFrame(
        {"stay_id": stay_id, "label": label, "channel": ["cxr", "cxr", "ehr", "ehr", "none", "ehr"]}
    )
    shifts = runpy.run_path(str(SCRIPT))["training_shifts"](tmp_path, channels)
    # image: (0.6 + 0.2) / 2 = 0.4; series: (-0.4 - 0.1) / 2 = -0.25 (the stay without an image left out)
    assert list(shifts) == [label] and abs(shifts[label] - 0.65) < 1e-6
