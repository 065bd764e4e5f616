"""The planted-structure check on constructed predictions whose answers are known by construction."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from drfuse.errors import UserError
from drfuse.evaluate.bootstrap import evaluate
from drfuse.evaluate.planted import check, criteria, group_table, label_table, planted_groups, write_report
from drfuse.phenotypes import PHENOTYPES
from tests.test_metrics import fake_test_set, write_predictions

# A key unlike the generator's: the check must read it, not assume the built-in groups.
KEY = {lab: "ehr" if k < 5 else "cxr" if k < 10 else "both" if k < 13 else "none" for k, lab in enumerate(PHENOTYPES)}
SINGLE = [lab for lab in PHENOTYPES if KEY[lab] in ("ehr", "cxr")]
SETTINGS = {"min_attention_share": 0.8, "attention_margin": 0.0, "min_prauc_ratio": 0.9, "min_reference_gain": 0.05}
# planted-minus-other attention margin per single-modality label and seed (SINGLE[0:5] are EHR-only,
# SINGLE[5:10] CXR-only): seed 0 favours 4 of 5 EHR-only labels and all CXR-only ones, seed 1 2 of 5
# and all; averaged over seeds, labels 1 and 2 are favoured again (+0.05): 4 of 5 and all
MARGINS = {0: {SINGLE[0]: -0.2}, 1: {SINGLE[0]: -0.2, SINGLE[1]: -0.1, SINGLE[2]: -0.1}}
N_WITHOUT_CXR = 7


def write_key(path: Path, key: dict[str, str]) -> Path:
    pd.DataFrame({"label": list(key), "group": list(key.values())}).to_csv(path, index=False)
    return path


def scores(y: np.ndarray, informative: list[str], seed: int) -> np.ndarray:
    """Scores that separate the classes of the `informative` labels and are noise elsewhere."""
    rng = np.random.default_rng(seed)
    signal = np.array([lab in informative for lab in PHENOTYPES])
    return np.clip(rng.normal(0.3, 0.2, y.shape) + 0.5 * y * signal, 0, 1).astype(np.float32)


def add_attention(path: Path, seed: int) -> None:
    """Constant attention per label on stays with a CXR; the stays without one get (1, 0, 0),
    which would move every mean if they were counted."""
    df = pd.read_parquet(path)
    has_cxr = np.arange(len(df)) >= N_WITHOUT_CXR
    df["has_cxr"] = has_cxr
    for lab in PHENOTYPES:
        if KEY[lab] in ("ehr", "cxr"):
            m = MARGINS[seed].get(lab, 0.2)
            planted, other = 0.4 + m / 2, 0.4 - m / 2
            ehr, cxr = (planted, other) if KEY[lab] == "ehr" else (other, planted)
            values = {"ehr": ehr, "shared": 0.2, "cxr": cxr}
        else:
            values = {"ehr": 1 / 3, "shared": 1 / 3, "cxr": 1 / 3}
        for part, v in values.items():
            df[f"attn:{lab}:{part}"] = np.where(has_cxr, v, float(part == "ehr")).astype(np.float32)
    df.to_parquet(path, index=False)


@pytest.fixture
def predictions(tmp_path) -> list[Path]:
    stay_id, y = fake_test_set(400, seed=21)
    ehr_labels = [lab for lab in PHENOTYPES if KEY[lab] in ("ehr", "both")]
    cxr_labels = [lab for lab in PHENOTYPES if KEY[lab] in ("cxr", "both")]
    paths = []
    for seed in (0, 1):
        made = {
            "transformer": scores(y, ehr_labels, 10 + seed),
            "resnet50": scores(y, cxr_labels, 20 + seed),
            "drfuse": scores(y, ehr_labels + cxr_labels, 30 + seed),
        }
        for model, p in made.items():
            path = write_predictions(tmp_path, model, "matched", seed, "matched", stay_id, y, p)
            if model == "drfuse":
                add_attention(path, seed)
            paths.append(path)
    return paths


def test_group_prauc_and_attention_are_the_means_of_their_labels(tmp_path, predictions):
    groups = planted_groups(predictions, write_key(tmp_path / "key.csv", KEY))
    assert set(groups["group"]) == {"ehr", "cxr", "both", "none"}
    assert groups.groupby(["model", "seed"]).size().eq(4).all() and set(groups["seed"]) == {0, 1, "mean"}

    path = next(p for p in predictions if "drfuse" in str(p) and "seed1" in str(p))
    df = pd.read_parquet(path)
    ap = {lab: average_precision_score(df[f"y:{lab}"], df[f"p:{lab}"]) for lab in PHENOTYPES}
    row = groups.query("model == 'drfuse' and seed == 1 and group == 'cxr'").iloc[0]
    cxr_only = [lab for lab in PHENOTYPES if KEY[lab] == "cxr"]
    assert row["n_labels"] == 5
    assert row["prauc"] == pytest.approx(np.mean([ap[lab] for lab in cxr_only]), abs=1e-12)
    # attention over the stays with a CXR only: margins 0.2 except SINGLE[0..2] (all ehr labels)
    assert row["attn_cxr"] == pytest.approx(0.5, abs=1e-6) and row["attn_shared"] == pytest.approx(0.2, abs=1e-6)
    ehr = groups.query("model == 'drfuse' and seed == 1 and group == 'ehr'").iloc[0]
    assert ehr["attn_ehr"] == pytest.approx(
        np.mean([0.4 + MARGINS[1].get(lab, 0.2) / 2 for lab in SINGLE[:5]]), abs=1e-6
    )
    # the mean row averages the seeds; models without attention have none
    mean = groups.query("model == 'transformer' and seed == 'mean' and group == 'ehr'")["prauc"].iloc[0]
    per_seed = groups.query("model == 'transformer' and seed != 'mean' and group == 'ehr'")["prauc"]
    assert mean == pytest.approx(per_seed.mean(), abs=1e-12) and per_seed.nunique() == 2
    assert groups.query("model != 'drfuse'")["attn_ehr"].isna().all()
    # the uni-modal models are good exactly where their modality carries the signal
    prauc = groups[groups["seed"] == "mean"].set_index(["model", "group"])["prauc"]
    assert prauc["transformer", "ehr"] > prauc["transformer", "cxr"] + 0.3
    assert prauc["resnet50", "cxr"] > prauc["resnet50", "ehr"] + 0.3


def test_group_prauc_is_the_bootstraps_point_estimate(tmp_path, predictions):
    out = tmp_path / "eval" / "bootstrap.parquet"
    evaluate(predictions, out, n_bootstrap=5, seed=0, ci=0.95)
    boot = pd.read_parquet(out).query("metric == 'prauc' and label != 'macro' and model == 'resnet50' and seed == 0")
    labels = label_table(predictions, KEY).query("model == 'resnet50' and seed == 0").set_index("label")
    assert labels["prauc"].to_numpy() == pytest.approx(
        boot.set_index("label").loc[labels.index, "estimate"].to_numpy(), abs=1e-12
    )


def test_criteria_per_seed_and_on_the_seed_mean(predictions):
    labels = label_table(predictions, KEY)
    groups = group_table(labels)
    verdicts = criteria(labels, groups, SETTINGS).set_index(["seed", "criterion"])
    assert set(verdicts.reset_index()["model"]) == {"drfuse"}  # only models with attention
    share = verdicts["value"].xs("attention_share_ehr", level="criterion")
    assert share[0] == pytest.approx(0.8) and share[1] == pytest.approx(0.4)
    assert share["mean"] == pytest.approx(0.8)  # from the seed-mean attention, not the mean share (0.6)
    assert (verdicts["value"].xs("attention_share_cxr", level="criterion") == 1.0).all()
    assert verdicts.loc[(0, "attention_share_ehr"), "passed"] is True
    assert verdicts.loc[(1, "attention_share_ehr"), "passed"] is False
    single = labels.query("model == 'drfuse' and seed == 'mean'").dropna(subset=["attention_margin"]).set_index("label")
    assert single.index.tolist() == SINGLE
    assert (
        single.loc[SINGLE[1], "attention_margin"] == pytest.approx(0.05, abs=1e-6)
        and single.loc[SINGLE[1], "favours_planted"]
    )
    assert not single.loc[SINGLE[0], "favours_planted"]

    prauc = groups.set_index(["model", "seed", "group"])["prauc"]
    for seed in (0, 1, "mean"):
        assert verdicts.loc[(seed, "prauc_ratio_cxr"), "value"] == pytest.approx(
            prauc["drfuse", seed, "cxr"] / prauc["resnet50", seed, "cxr"]
        )
        assert verdicts.loc[(seed, "prauc_ratio_ehr"), "value"] == pytest.approx(
            prauc["drfuse", seed, "ehr"] / prauc["transformer", seed, "ehr"]
        )
    # a stricter margin turns the +0.05 labels into misses
    strict = criteria(label_table(predictions, KEY, attention_margin=0.1), groups, SETTINGS)
    assert strict.query("seed == 'mean' and criterion == 'attention_share_ehr'")["value"].iloc[0] == pytest.approx(0.4)
    # without ResNet50 there is no CXR reference: no verdict rather than a wrong one
    no_resnet = criteria(labels[labels["model"] != "resnet50"], groups[groups["model"] != "resnet50"], SETTINGS)
    row = no_resnet.query("seed == 0 and criterion == 'prauc_ratio_cxr'").iloc[0]
    assert np.isnan(row["value"]) and row["passed"] is None and row["note"] == "n/a: reference not run"


def _verdicts(tmp_path, made: dict[str, np.ndarray], stay_id, y, attention) -> pd.DataFrame:
    """Criteria of one seed's constructed predictions; `attention(label) -> (ehr, shared, cxr)` for DrFuse."""
    paths = []
    for model, p in made.items():
        path = write_predictions(tmp_path, model, "matched", 0, "matched", stay_id, y, p)
        if model == "drfuse":
            df = pd.read_parquet(path)
            df["has_cxr"] = True
            for lab in PHENOTYPES:
                for part, value in zip(("ehr", "shared", "cxr"), attention(lab)):
                    df[f"attn:{lab}:{part}"] = np.float32(value)
            df.to_parquet(path, index=False)
        paths.append(path)
    labels = label_table(paths, KEY, attention_margin=0.05)
    return criteria(labels, group_table(labels), SETTINGS).query("seed == 0").set_index("criterion")


def test_attention_blind_to_the_label_fails(tmp_path):
    stay_id, y = fake_test_set(400, seed=22)
    informative = {"transformer": ["ehr", "both"], "resnet50": ["cxr", "both"], "drfuse": ["ehr", "cxr", "both"]}
    made = {
        m: scores(y, [lab for lab in PHENOTYPES if KEY[lab] in groups], 40 + i)
        for i, (m, groups) in enumerate(informative.items())
    }
    # the same weights for every label, leaning to the EHR token: all EHR-only labels "favoured", no CXR-only one
    verdicts = _verdicts(tmp_path, made, stay_id, y, lambda label: (0.40, 0.33, 0.27))
    assert (
        verdicts.loc["attention_share_ehr", "passed"] is True and verdicts.loc["attention_share_cxr", "passed"] is False
    )
    # an even split over the tokens favours nothing by the 0.05 margin (the old single share read 0.833 here)
    even = _verdicts(tmp_path, made, stay_id, y, lambda label: (0.34, 0.33, 0.33))
    assert even.loc[["attention_share_ehr", "attention_share_cxr"], "passed"].tolist() == [False, False]
    # the label-aware attention of a fusion that reads each label's modality passes everything
    aware = _verdicts(
        tmp_path,
        made,
        stay_id,
        y,
        lambda label: {"ehr": (0.6, 0.2, 0.2), "cxr": (0.2, 0.2, 0.6)}.get(KEY[label], (1 / 3,) * 3),
    )
    assert aware["passed"].tolist() == [True] * 4 and aware["note"].isna().all()


def test_noise_predictions_fail_or_read_not_applicable(tmp_path):
    stay_id, y = fake_test_set(400, seed=23)
    made = {m: scores(y, [], 50 + i) for i, m in enumerate(("transformer", "resnet50", "drfuse"))}
    rng = np.random.default_rng(3)
    draws = {lab: rng.dirichlet([5, 5, 5]) for lab in PHENOTYPES}  # noise attention, per label
    verdicts = _verdicts(tmp_path, made, stay_id, y, lambda label: draws[label])
    ratios = verdicts.loc[["prauc_ratio_cxr", "prauc_ratio_ehr"]]
    assert ratios["passed"].isna().all() and (ratios["note"] == "n/a: reference did not learn").all()
    assert not verdicts.loc[["attention_share_ehr", "attention_share_cxr"], "passed"].all()
    # noise from DrFuse against references that learned: the ratios fail
    made["transformer"] = scores(y, [lab for lab in PHENOTYPES if KEY[lab] == "ehr"], 60)
    made["resnet50"] = scores(y, [lab for lab in PHENOTYPES if KEY[lab] == "cxr"], 61)
    learned_refs = _verdicts(tmp_path, made, stay_id, y, lambda label: draws[label])
    assert learned_refs.loc[["prauc_ratio_cxr", "prauc_ratio_ehr"], "passed"].tolist() == [False, False]


def test_the_key_decides_the_groups(tmp_path, predictions):
    swapped = {lab: {"ehr": "cxr", "cxr": "ehr"}.get(g, g) for lab, g in KEY.items()}
    groups = planted_groups(predictions, write_key(tmp_path / "swapped.csv", swapped)).set_index(
        ["model", "seed", "group"]
    )
    assert (
        groups.loc[("transformer", "mean", "cxr"), "prauc"] > groups.loc[("transformer", "mean", "ehr"), "prauc"] + 0.3
    )
    with pytest.raises(UserError, match="answer key"):
        planted_groups(predictions, write_key(tmp_path / "short.csv", dict(list(KEY.items())[:20])))


def test_files_laid_out_otherwise_are_described_by_the_caller(tmp_path, predictions):
    """An experiment script keeps runs as runs/<variant>/<model>.<train_set>.seed<n>/<test_set>.parquet."""
    moved = []
    for path in predictions:
        model, train_set, seed = path.parts[-4], path.parts[-3], path.parts[-2]
        target = tmp_path / "runs" / "base" / f"{model}.{train_set}.{seed}" / path.name
        target.parent.mkdir(parents=True)
        moved.append(Path(path.replace(target)))

    def describe(path: Path) -> dict:
        model, train_set, seed = path.parent.name.split(".")
        return {"model": model, "train_set": train_set, "test_set": path.stem, "seed": int(seed.removeprefix("seed"))}

    key = write_key(tmp_path / "key.csv", KEY)
    with pytest.raises(UserError, match="expected a path like"):
        planted_groups(moved, key)
    labels, groups, verdicts = check(moved, key, SETTINGS, describe=describe)
    assert set(groups["model"]) == {"drfuse", "transformer", "resnet50"} and set(groups["seed"]) == {0, 1, "mean"}
    assert verdicts.query("seed == 1 and criterion == 'attention_share_ehr'")["value"].iloc[0] == pytest.approx(0.4)


def test_report_files(tmp_path, predictions):
    key = write_key(tmp_path / "key.csv", KEY)
    write_report(predictions, key, SETTINGS, tmp_path / "tables", tmp_path / "figures" / "planted.png")
    table = pd.read_csv(tmp_path / "tables" / "planted.csv")
    assert set(table["section"]) == {"group", "label", "criterion"}
    assert len(table.query("section == 'group'")) == 3 * 3 * 4  # models x (2 seeds + mean) x groups
    assert len(table.query("section == 'label'")) == 3 * len(SINGLE)  # DrFuse only
    verdicts = table.query("section == 'criterion'").set_index(["seed", "criterion"])
    assert verdicts.loc[("1", "attention_share_ehr"), "passed"] == False  # noqa: E712 - read back from CSV
    assert table["model"].isin(["Transformer", "ResNet50", "DrFuse (our recipe)"]).all()
    md = (tmp_path / "tables" / "planted.md").read_text()
    assert "| cxr (5) |" in md and "FAIL" in md and "pass" in md and str(key) in md
    assert (tmp_path / "figures" / "planted.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ modal inconsistency

MIXED_KEY = {lab: "inconsistent" if 13 <= k < 16 else g for k, (lab, g) in enumerate(KEY.items())}
MIXED = [lab for lab in PHENOTYPES if MIXED_KEY[lab] == "inconsistent"]


def _mixed_case(tmp_path, per_patient: bool):
    """A test set whose inconsistent labels' positives show in the image or the series (half each):
    the Transformer sees the series-channel positives, ResNet50 the image-channel ones, MMTM both a
    little, DrFuse both well; DrFuse's attention follows the patient's channel, or not."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    stay_id, y = fake_test_set(600, seed=24)
    rng = np.random.default_rng(5)
    image = rng.random(len(stay_id)) < 0.5  # the channel of each stay's positives
    channel = {lab: np.where(y[:, PHENOTYPES.index(lab)] == 0, "none", np.where(image, "cxr", "ehr")) for lab in MIXED}
    key_path = write_key(tmp_path / "key.csv", MIXED_KEY)
    pd.DataFrame(
        {
            "stay_id": np.tile(stay_id, len(MIXED)),
            "label": np.repeat(MIXED, len(stay_id)),
            "channel": np.concatenate([channel[lab] for lab in MIXED]),
        }
    ).to_parquet(tmp_path / "channels.parquet")
    mixed_cols = [PHENOTYPES.index(lab) for lab in MIXED]

    def seen(informative: np.ndarray, strength: float, seed: int) -> np.ndarray:
        """Scores separating the positives where `informative` (stays x labels) holds."""
        noise = np.random.default_rng(seed).normal(0.3, 0.15, y.shape)
        return np.clip(noise + strength * y * informative, 0, 1).astype(np.float32)

    everywhere = np.ones(y.shape, bool)
    series_only, image_only = everywhere.copy(), everywhere.copy()
    series_only[:, mixed_cols] = ~image[:, None]
    image_only[:, mixed_cols] = image[:, None]
    made = {
        "transformer": seen(series_only, 0.5, 1),
        "resnet50": seen(image_only, 0.5, 2),
        "mmtm": seen(everywhere, 0.2, 3),
        "drfuse": seen(everywhere, 0.5, 4),
    }
    paths = [write_predictions(tmp_path, m, "matched", 0, "matched", stay_id, y, p) for m, p in made.items()]
    df = pd.read_parquet(paths[-1])
    for lab in PHENOTYPES:
        lean = np.where(image, 0.3, -0.3) if (per_patient and lab in MIXED) else np.zeros(len(df))
        df[f"attn:{lab}:ehr"], df[f"attn:{lab}:shared"], df[f"attn:{lab}:cxr"] = 0.4 - lean / 2, 0.2, 0.4 + lean / 2
    df.to_parquet(paths[-1], index=False)
    return paths, key_path, channel, image


MIXED_SETTINGS = {**SETTINGS, "min_attention_shift": 0.1}
BOOTSTRAP = {"n_bootstrap": 200, "seed": 0, "ci": 0.95}


def test_inconsistent_labels_are_judged_per_patient(tmp_path):
    paths, key_path, channel, image = _mixed_case(tmp_path, per_patient=True)
    labels, groups, verdicts = check(paths, key_path, MIXED_SETTINGS, bootstrap=BOOTSTRAP)
    verdicts = verdicts.query("seed == 0").set_index("criterion")
    # the shift: CXR-minus-EHR attention of image-channel positives (+0.3) minus series-channel ones (-0.3)
    shifts = labels.query("model == 'drfuse' and seed == 0 and group == 'inconsistent'").set_index("label")
    assert shifts["attention_shift"].tolist() == pytest.approx([0.6] * 3, abs=1e-6)
    for lab in MIXED:
        assert shifts.loc[lab, "n_cxr_channel"] == (channel[lab] == "cxr").sum()
        assert shifts.loc[lab, "n_ehr_channel"] == (channel[lab] == "ehr").sum()
    assert verdicts.loc["attention_shift", ["value", "passed"]].tolist() == [1.0, True]
    # whose probabilities tell the channels apart: ResNet50 reads the image's evidence, the
    # Transformer the series', the fusions both alike
    auroc = labels.query("seed == 0 and group == 'inconsistent'").pivot(
        index="label", columns="model", values="channel_auroc"
    )
    assert (auroc["resnet50"] > 0.9).all() and (auroc["transformer"] < 0.1).all()
    assert auroc[["drfuse", "mmtm"]].stack().between(0.25, 0.75).all()
    assert labels.query("group != 'inconsistent'")["channel_auroc"].isna().all()
    prauc = groups.query("seed == 0 and group == 'inconsistent'").set_index("model")["prauc"]
    unimodal = verdicts.loc["inconsistent_vs_unimodal"]
    assert unimodal["value"] == pytest.approx(prauc["drfuse"] - prauc[["transformer", "resnet50"]].max())
    assert unimodal["passed"] and 0 < unimodal["ci_low"] < unimodal["value"] < unimodal["ci_high"]
    fusion = verdicts.loc["inconsistent_vs_fusion"]
    assert fusion["value"] == pytest.approx(prauc["drfuse"] - prauc["mmtm"]) and fusion["note"] == "against mmtm"
    assert fusion["passed"] and fusion["ci_low"] > 0
    # per-label attention passes nothing of the per-patient criterion
    flat = check(*_mixed_case(tmp_path / "flat", per_patient=False)[:2], MIXED_SETTINGS, bootstrap=BOOTSTRAP)[2]
    assert flat.query("seed == 0 and criterion == 'attention_shift'")[["value", "passed"]].values.tolist() == [
        [0.0, False]
    ]


def test_inconsistent_report_and_a_key_without_its_channels(tmp_path):
    paths, key_path, _, _ = _mixed_case(tmp_path, per_patient=True)
    write_report(
        paths, key_path, MIXED_SETTINGS, tmp_path / "tables", tmp_path / "figures" / "planted.png", bootstrap=BOOTSTRAP
    )
    md = (tmp_path / "tables" / "planted.md").read_text()
    assert "Per-patient attention on each inconsistent label" in md and "| inconsistent (3) |" in md
    row = next(line for line in md.splitlines() if "| inconsistent_vs_fusion |" in line)
    assert re.search(r"\| \+0\.\d{3} \(\+0\.\d{3}, \+0\.\d{3}\) \| 0\.000 \| pass \|$", row), row
    table = pd.read_csv(tmp_path / "tables" / "planted.csv")
    # DrFuse, ResNet50 and the Transformer (their channel AUROC), seed 0 and mean
    rows = table.query("section == 'label' and group == 'inconsistent'")
    assert sorted(set(rows["model"])) == ["DrFuse (our recipe)", "ResNet50", "Transformer"] and len(rows) == 3 * 3 * 2
    channel_row = next(
        line for line in md.splitlines() if line.startswith("| DrFuse (our recipe) | ") and "| +0.600 |" in line
    )
    resnet, transformer = (float(x) for x in channel_row.rstrip(" |").split(" | ")[-2:])
    assert resnet > 0.9 and transformer < 0.1, channel_row
    (tmp_path / "channels.parquet").unlink()
    with pytest.raises(UserError, match="has inconsistent labels but no .*channels.parquet"):
        check(paths, key_path, MIXED_SETTINGS)
