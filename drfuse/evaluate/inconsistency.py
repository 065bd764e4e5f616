"""The planted check's criteria for modal inconsistency: labels whose evidence shows in the image for
one patient and in the series for another (answer-key group `inconsistent`; `channels.parquet`
says which modality shows each positive's signal, `drfuse.synth.answer_key.read_channels`).

Per prediction file of a model with attention and per inconsistent label:
- `attention_shift`: the mean of (CXR-distinct minus EHR-distinct attention) over the positives
  whose signal is in the image, minus the same mean over those whose signal is in the series
  (test stays with a CXR only); `n_cxr_channel`, `n_ehr_channel`: how many positives each mean
  has. A fusion that weighs the modalities per patient moves towards the image for the first and
  towards the series for the second: a large positive shift. Per-label weights give 0.

Per prediction file of any model and per inconsistent label, `channel_auroc`: how well the model's
probability tells the image-channel positives (1) from the series-channel ones (0), test stays with
a CXR. It says whether a channel's evidence can be read at all: ResNet50 well above 0.5 reads the
image's, the Transformer well below 0.5 the series'. Where neither uni-modal model tells a label's
channels apart, no fusion can weigh that label's modalities by the evidence either, and a shift
near 0 says more about the encoders than about the attention.

Criteria per attention model (`criteria_rows`), on the inconsistent group's mean PRAUC:
- `inconsistent_vs_unimodal`: the model's minus the better of ResNet50 and the Transformer (same
  training set, test set, seed): pass above 0;
- `inconsistent_vs_fusion`: the model's minus the best fusion baseline's (MMTM, DAFT, MedFuse,
  MedFuse-II under either recipe, those run): pass at 0 or above;
- `attention_shift`: the share of the inconsistent labels (with positives of both channels) whose
  shift is at least `evaluation.planted.min_attention_shift`: pass above one half (most labels).
The two differences come with a paired bootstrap interval (`group_resamples`): on each resample of
the test stays, the group's mean PRAUC of both models; per seed the percentile interval of the
per-resample differences, for the seed mean the interval of their mean over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from drfuse.evaluate.bootstrap import bootstrap_arrays
from drfuse.evaluate.names import plain_name
from drfuse.evaluate.pooling import percentile_interval
from drfuse.models import MODELS
from drfuse.phenotypes import PHENOTYPES

GROUP = "inconsistent"
SHIFT_COLUMNS = ["attention_shift", "n_cxr_channel", "n_ehr_channel"]
CHANNEL_AUROC = "channel_auroc"
UNIMODAL = ("resnet50", "transformer")
FUSION_BASELINES = ("mmtm", "daft", "medfuse", "medfuse2")
CRITERIA = {
    "inconsistent_vs_unimodal": "mean PRAUC over the inconsistent labels minus the better uni-modal model's",
    "inconsistent_vs_fusion": "mean PRAUC over the inconsistent labels minus the best fusion baseline's",
    "attention_shift": (
        "share of the inconsistent labels whose CXR-minus-EHR attention is higher by at least the minimum shift "
        "for positives whose signal is in the image than for those whose signal is in the series"
    ),
}
# criterion -> passes when value > threshold (strict) or >= threshold
STRICT = {"inconsistent_vs_unimodal": True, "inconsistent_vs_fusion": False, "attention_shift": True}


def shift_columns(frame: pd.DataFrame, label: str, channel: pd.Series) -> dict:
    """`SHIFT_COLUMNS` of one label in one prediction file (`frame`: its stay_id, has_cxr and
    attention columns); `channel`: stay_id -> `ehr` / `cxr` / `none` for this label."""
    with_cxr = frame[frame["has_cxr"].astype(bool)] if "has_cxr" in frame.columns else frame
    lean = (with_cxr[f"attn:{label}:cxr"] - with_cxr[f"attn:{label}:ehr"]).to_numpy(float)
    shown = with_cxr["stay_id"].map(channel).to_numpy()
    image, series = lean[shown == "cxr"], lean[shown == "ehr"]
    shift = image.mean() - series.mean() if len(image) and len(series) else np.nan
    return {"attention_shift": shift, "n_cxr_channel": len(image), "n_ehr_channel": len(series)}


def channel_auroc(frame: pd.DataFrame, prob: np.ndarray, channel: pd.Series) -> float:
    """AUROC of `prob` (one label's probabilities, rows of `frame`) for the positives whose signal
    is in the image against those whose signal is in the series (test stays with a CXR); NaN
    without positives of both channels."""
    shown = frame["stay_id"].map(channel).to_numpy()
    keep = np.isin(shown, ["cxr", "ehr"])
    if "has_cxr" in frame.columns:
        keep &= frame["has_cxr"].astype(bool).to_numpy()
    image = shown[keep] == "cxr"
    if image.all() or not image.any():
        return np.nan
    return float(roc_auc_score(image, prob[keep]))


def group_resamples(
    stay_id: np.ndarray, y: np.ndarray, p: np.ndarray, labels: list[str], bootstrap: dict
) -> np.ndarray:
    """The mean PRAUC over `labels` on each bootstrap resample of one prediction file (the same
    resamples for every file of a test set: `drfuse.evaluate.bootstrap`); labels without a positive
    in a resample are left out of its mean."""
    cols = [PHENOTYPES.index(label) for label in labels]
    arrays = bootstrap_arrays(stay_id, y[:, cols], p[:, cols], int(bootstrap["n_bootstrap"]), int(bootstrap["seed"]))
    with np.errstate(all="ignore"):
        return np.nanmean(arrays["boot_prauc"], axis=1)


def _is_fusion_baseline(model: str) -> bool:
    return model in MODELS and plain_name(model) in FUSION_BASELINES


def _best(groups: pd.DataFrame, run: dict, models) -> str | None:
    """The model among `models` with the highest inconsistent-group PRAUC on the run's training set,
    test set and seed."""
    here = groups[
        (groups["group"] == GROUP)
        & groups["model"].isin(list(models))
        & (groups["train_set"] == run["train_set"])
        & (groups["test_set"] == run["test_set"])
        & (groups["seed"] == run["seed"])
    ].dropna(subset=["prauc"])
    return None if here.empty else here.loc[here["prauc"].idxmax(), "model"]


def _interval(resamples: dict, run: dict, other: str, ci: float) -> tuple[float, float]:
    """Paired percentile interval of the run's group PRAUC minus `other`'s (pooled over seeds for
    the seed mean: the interval of the per-resample mean difference)."""
    seeds = (
        [run["seed"]]
        if run["seed"] != "mean"
        else sorted(
            {s for (m, tr, te, s) in resamples if m == run["model"] and (tr, te) == (run["train_set"], run["test_set"])}
        )
    )
    diffs = []
    for seed in seeds:
        own = resamples.get((run["model"], run["train_set"], run["test_set"], seed))
        ref = resamples.get((other, run["train_set"], run["test_set"], seed))
        if own is None or ref is None:
            return np.nan, np.nan
        diffs.append(own - ref)
    low, high, _ = percentile_interval(np.mean(diffs, axis=0), ci)
    return low, high


def criteria_rows(
    run: dict, labels: pd.DataFrame, groups: pd.DataFrame, settings: dict, resamples: dict | None, ci: float
) -> list[dict]:
    """The three criteria of one attention run (`run`: its model, train_set, test_set, seed)."""
    by_run = groups.set_index(["model", "train_set", "test_set", "seed", "group"])["prauc"]
    own = by_run.get((run["model"], run["train_set"], run["test_set"], run["seed"], GROUP), np.nan)
    rows = []
    for criterion, candidates in (
        ("inconsistent_vs_unimodal", UNIMODAL),
        ("inconsistent_vs_fusion", [m for m in set(groups["model"]) if _is_fusion_baseline(m)]),
    ):
        best = _best(groups, run, candidates)
        value, low, high, note = (
            np.nan,
            np.nan,
            np.nan,
            "n/a: no " + ("uni-modal model" if criterion.endswith("unimodal") else "fusion baseline") + " run",
        )
        if best is not None:
            value = own - by_run[(best, run["train_set"], run["test_set"], run["seed"], GROUP)]
            low, high = _interval(resamples, run, best, ci) if resamples else (np.nan, np.nan)
            note = f"against {best}"
        rows.append(
            {
                **run,
                "criterion": criterion,
                "value": value,
                "threshold": 0.0,
                "ci_low": low,
                "ci_high": high,
                "note": note,
            }
        )
    mine = labels[(labels[list(run)] == pd.Series(run)).all(axis=1) & (labels["group"] == GROUP)]
    shifts = mine["attention_shift"].dropna()
    share = float((shifts >= float(settings["min_attention_shift"])).mean()) if len(shifts) else np.nan
    rows.append(
        {
            **run,
            "criterion": "attention_shift",
            "value": share,
            "threshold": 0.5,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "note": None if len(shifts) else "n/a: no label with positives of both channels",
        }
    )
    return rows


def passed(criterion: str, value: float, threshold: float) -> bool | None:
    if np.isnan(value):
        return None
    return bool(value > threshold) if STRICT.get(criterion) else bool(value >= threshold)
