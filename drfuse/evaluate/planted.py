"""The planted-structure check: per planted modality group, how well each model predicts, and where
DrFuse's attention goes. The demo's own proof that the fusion does what it should.

Inputs: prediction files (`predict/{model}/{train_set}/seed{n}/{test_set}.parquet`; the workflow
passes those trained on matched and tested on matched) and an answer key `label_groups.csv`
(`drfuse.synth.answer_key`: label -> `ehr`, `cxr`, `both` or `none`). Nothing here knows the
generator: a held-out dataset is checked through its own key.

Per file and label: `prauc`, the average precision on the test set (exactly the point estimate of
`eval/bootstrap.parquet`; NaN without a positive), `prevalence` (the positives' share of the file's
stays: the PRAUC of a predictor that knows nothing), and, for models that emit attention (DrFuse
and its ablations), `attn_ehr`, `attn_shared`, `attn_cxr`: the mean attention weight on
EHR-distinct, shared and CXR-distinct over the test stays with a CXR. For a single-modality label
(group `ehr` or `cxr`), `attention_margin` is the planted modality's distinct weight minus the
other's, and `favours_planted` says it exceeds `evaluation.planted.attention_margin`. Per group:
the means over its labels (labels without a value left out). Seed `mean`: the mean over seeds of
each seed's values; criteria on the `mean` rows are computed from those means.

Criteria, for every model with attention, per seed and for the mean (thresholds in
`evaluation.planted`), each judged on its own so that no single one can pass by chance:
- `attention_share_cxr`, `attention_share_ehr`: per single-modality group, the share of its labels
  whose planted modality's distinct token is favoured by more than the margin; pass at >=
  `min_attention_share`. Attention that ignores the label favours one side for every label, and
  fails one of the two;
- `prauc_ratio_cxr`: the model's mean PRAUC over CXR-only labels / ResNet50's; `prauc_ratio_ehr`:
  over EHR-only labels / the Transformer's (same training set, test set and seed); pass at
  >= `min_prauc_ratio`. Judged only when the reference learned: its mean PRAUC over the group
  exceeds the labels' mean prevalence by `min_reference_gain` (a ratio to a reference that learned
  nothing says nothing); otherwise, or when the reference was not run, no verdict and a `note`;
- for a key with `inconsistent` labels (evidence in the image for one patient, in the series for
  another): `inconsistent_vs_unimodal`, `inconsistent_vs_fusion` and `attention_shift`
  (`drfuse.evaluate.inconsistency`, with the per-label `attention_shift` and its positives).

For experiment scripts: `planted_groups(paths, key)` (the per-group table) and `check(paths, key,
settings)` (label table, group table, criteria) on any prediction files, e.g.
`sorted(Path("results/predict").glob("*/matched/seed*/matched.parquet"))`. Files laid out otherwise
take `describe=`, a function path -> {model, train_set, test_set, seed}; the references of the
criteria are the runs named `resnet50` and `transformer`.

Outputs (`write_report`): `planted.csv` (a `section` column: `group`, `label`, `criterion` rows),
`planted.md`, `planted.png` (PRAUC per group and model; attention per group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from drfuse import atomic
from drfuse.evaluate import inconsistency
from drfuse.evaluate.bootstrap import parse_prediction_path, read_predictions
from drfuse.evaluate.metrics import ap_auroc
from drfuse.evaluate.names import display_name, ordered_models
from drfuse.evaluate.render import csv_text, markdown
from drfuse.evaluate.tables import fmt
from drfuse.phenotypes import PHENOTYPES
from drfuse.synth.answer_key import GROUPS, read_channels, read_label_groups

log = logging.getLogger(__name__)

RUN_KEYS = ["model", "train_set", "test_set", "seed"]
ATTENTION_PARTS = (("ehr", "EHR-distinct"), ("shared", "shared"), ("cxr", "CXR-distinct"))
ATTN = [f"attn_{part}" for part, _ in ATTENTION_PARTS]
# single-modality group -> the sign of (EHR-distinct - CXR-distinct) attention that favours it
SINGLE = {"ehr": 1.0, "cxr": -1.0}
# single-modality group -> the uni-modal model DrFuse must come close to on it
REFERENCE = {"cxr": "resnet50", "ehr": "transformer"}
CRITERIA = {
    **inconsistency.CRITERIA,
    "attention_share_cxr": (
        "share of the CXR-only labels whose CXR-distinct token gets more attention than the EHR-distinct one, "
        "by the margin"
    ),
    "attention_share_ehr": (
        "share of the EHR-only labels whose EHR-distinct token gets more attention than the CXR-distinct one, "
        "by the margin"
    ),
    "prauc_ratio_cxr": "mean PRAUC over CXR-only labels / ResNet50's",
    "prauc_ratio_ehr": "mean PRAUC over EHR-only labels / Transformer's",
}
NOT_RUN, DID_NOT_LEARN = "n/a: reference not run", "n/a: reference did not learn"
MEAN = "mean"


def _per_label(path: Path, describe: Callable[[Path], dict], channels: dict[str, pd.Series]) -> list[dict]:
    meta = {key: describe(path)[key] for key in RUN_KEYS}
    _, y, p = read_predictions(path)
    attn_cols = [f"attn:{lab}:{part}" for lab in PHENOTYPES for part, _ in ATTENTION_PARTS]
    df = pd.read_parquet(path)
    has_attention = all(c in df.columns for c in attn_cols)
    with_cxr = df["has_cxr"].astype(bool).to_numpy() if "has_cxr" in df.columns else np.ones(len(df), bool)
    rows = []
    for k, label in enumerate(PHENOTYPES):
        row = {**meta, "label": label, "prauc": ap_auroc(y[:, k], p[:, k])[0], "prevalence": float(y[:, k].mean())}
        for part, _ in ATTENTION_PARTS:
            col = f"attn:{label}:{part}"
            row[f"attn_{part}"] = float(df.loc[with_cxr, col].mean()) if has_attention and with_cxr.any() else np.nan
        if label in channels:
            row[inconsistency.CHANNEL_AUROC] = inconsistency.channel_auroc(df, p[:, k], channels[label])
            if has_attention:
                row.update(inconsistency.shift_columns(df, label, channels[label]))
        rows.append(row)
    return rows


def _with_seed_mean(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Adds, per `by` group, a row with seed `mean`: the mean over seeds of every value column."""
    values = [c for c in table.columns if c not in by and c != "seed"]
    mean = table.groupby(by, sort=False, dropna=False)[values].mean().reset_index()
    mean["seed"] = MEAN
    out = pd.concat([table.astype({"seed": object}), mean], ignore_index=True)
    return out[table.columns]


def label_table(
    prediction_paths: list[Path],
    groups: dict[str, str],
    attention_margin: float = 0.0,
    describe: Callable[[Path], dict] = parse_prediction_path,
    channels: pl.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (prediction file or seed mean, label): prauc, attention, the label's group and,
    for single-modality labels of attention models, attention_margin and favours_planted; for
    inconsistent labels of attention models, the attention shift (`channels`: the answer key's
    `channels.parquet`). `describe` gives a file's model, train_set, test_set and seed (default:
    from the workflow's path)."""
    by_label = (
        {}
        if channels is None
        else {label: part.set_index("stay_id")["channel"] for label, part in channels.to_pandas().groupby("label")}
    )
    rows = [row for path in prediction_paths for row in _per_label(Path(path), describe, by_label)]
    table = pd.DataFrame(
        rows,
        columns=[
            *RUN_KEYS,
            "label",
            "prauc",
            "prevalence",
            *ATTN,
            *inconsistency.SHIFT_COLUMNS,
            inconsistency.CHANNEL_AUROC,
        ],
    )
    table.insert(table.columns.get_loc("label") + 1, "group", table["label"].map(groups))
    table = _with_seed_mean(table, ["model", "train_set", "test_set", "label", "group"])
    # NaN for labels of no single modality and for models without attention
    margin = ((table["attn_ehr"] - table["attn_cxr"]) * table["group"].map(SINGLE)).to_numpy(float)
    table["attention_margin"] = margin
    table["favours_planted"] = pd.Series(np.where(np.isnan(margin), None, margin > attention_margin), dtype=object)
    return table


def group_table(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per (prediction file or seed mean, planted group): n_labels and the group means."""
    keys = [*RUN_KEYS, "group"]
    out = (
        labels.groupby(keys, sort=False, dropna=False)
        .agg(
            n_labels=("label", "size"),
            prauc=("prauc", "mean"),
            prevalence=("prevalence", "mean"),
            **{c: (c, "mean") for c in ATTN},
        )
        .reset_index()
    )
    out["group_order"] = out["group"].map({g: i for i, g in enumerate(GROUPS)})
    return _sorted(out, ["group_order"]).drop(columns="group_order")


def planted_groups(
    prediction_paths: list[Path], answer_key: Path, describe: Callable[[Path], dict] = parse_prediction_path
) -> pd.DataFrame:
    """Per prediction file (and seed mean) and planted group: mean PRAUC and mean attention."""
    return group_table(label_table(prediction_paths, read_label_groups(answer_key), describe=describe))


def criteria(
    labels: pd.DataFrame, groups: pd.DataFrame, settings: dict, resamples: dict | None = None, ci: float = 0.95
) -> pd.DataFrame:
    """The acceptance criteria per attention model, training set, test set and seed (and mean).
    `resamples`: the inconsistent group's PRAUC per bootstrap resample and prediction file
    (`inconsistency.group_resamples`), for the intervals of its two comparisons."""
    rows = []
    attention_runs = labels.dropna(subset=["attn_ehr"])[RUN_KEYS].drop_duplicates()
    by_run = groups.set_index([*RUN_KEYS, "group"])
    for run in attention_runs.itertuples(index=False):
        mine = labels[(labels[RUN_KEYS] == pd.Series(run._asdict())).all(axis=1)]
        for group in SINGLE:
            favoured = mine.loc[mine["group"] == group, "favours_planted"].dropna()
            share = float(favoured.astype(bool).mean()) if len(favoured) else np.nan
            rows.append(
                {
                    **run._asdict(),
                    "criterion": f"attention_share_{group}",
                    "value": share,
                    "threshold": float(settings["min_attention_share"]),
                    "note": None,
                }
            )
        for group, reference in REFERENCE.items():
            own = by_run["prauc"].get((run.model, run.train_set, run.test_set, run.seed, group), np.nan)
            key = (reference, run.train_set, run.test_set, run.seed, group)
            ref = by_run.loc[key] if key in by_run.index else None
            if ref is None or np.isnan(ref["prauc"]):
                ratio, note = np.nan, NOT_RUN
            elif ref["prauc"] <= ref["prevalence"] + float(settings["min_reference_gain"]):
                ratio, note = np.nan, DID_NOT_LEARN
            else:
                ratio, note = own / ref["prauc"], None
            rows.append(
                {
                    **run._asdict(),
                    "criterion": f"prauc_ratio_{group}",
                    "value": ratio,
                    "threshold": float(settings["min_prauc_ratio"]),
                    "note": note,
                }
            )
        if (mine["group"] == inconsistency.GROUP).any():
            rows += inconsistency.criteria_rows(run._asdict(), labels, groups, settings, resamples, ci)
    out = pd.DataFrame(rows, columns=[*RUN_KEYS, "criterion", "value", "threshold", "ci_low", "ci_high", "note"])
    out["passed"] = pd.Series(
        [inconsistency.passed(c, v, t) for c, v, t in zip(out["criterion"], out["value"], out["threshold"])],
        dtype=object,
    )
    return _sorted(out, ["criterion"])


def _sorted(table: pd.DataFrame, then: list[str]) -> pd.DataFrame:
    """Models in the paper's order, then training set, test set, seed (the mean last), `then`."""
    order = {m: i for i, m in enumerate(ordered_models(table["model"]))}
    keys = table.assign(
        model_order=table["model"].map(order),
        mean_last=table["seed"].eq(MEAN),
        seed_order=pd.to_numeric(table["seed"], errors="coerce"),
    )
    keys = keys.sort_values(["model_order", "train_set", "test_set", "mean_last", "seed_order", *then], kind="stable")
    return table.loc[keys.index].reset_index(drop=True)


def planted_csv(labels: pd.DataFrame, groups: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """The three kinds of rows under one header, told apart by `section`."""
    # single-modality and inconsistent labels of the attention models; the uni-modal models' rows of
    # the inconsistent labels too (their channel AUROC)
    inconsistent = labels["group"] == inconsistency.GROUP
    label_rows = labels[
        (labels["group"].isin(SINGLE) | inconsistent) & labels["attn_ehr"].notna()
        | inconsistent & labels["model"].isin(inconsistency.UNIMODAL)
    ]
    parts = [groups.assign(section="group"), label_rows.assign(section="label"), verdicts.assign(section="criterion")]
    columns = [
        "section",
        *RUN_KEYS,
        "group",
        "label",
        "n_labels",
        "prauc",
        "prevalence",
        *ATTN,
        "attention_margin",
        "favours_planted",
        *inconsistency.SHIFT_COLUMNS,
        inconsistency.CHANNEL_AUROC,
        "criterion",
        "value",
        "threshold",
        "ci_low",
        "ci_high",
        "passed",
        "note",
    ]
    out = pd.concat(parts, ignore_index=True)
    out["model"] = out["model"].map(display_name)
    return out.reindex(columns=columns)


# ---------------------------------------------------------------- Markdown and figure


def _seed_spread(group: pd.DataFrame, column: str) -> str:
    per_seed = group.loc[group["seed"] != MEAN, column].to_numpy(float)
    mean = group.loc[group["seed"] == MEAN, column].iloc[0]
    return fmt(mean) + (f" ± {fmt(np.nanstd(per_seed, ddof=1))}" if len(per_seed) > 1 else "")


def render(labels: pd.DataFrame, groups: pd.DataFrame, verdicts: pd.DataFrame, answer_key: Path, settings: dict) -> str:
    key_groups = labels.drop_duplicates("label").set_index("label")["group"]
    counts = {g: int((key_groups == g).sum()) for g in GROUPS}
    mixed = labels[(labels["group"] == inconsistency.GROUP) & labels["attn_ehr"].notna() & (labels["seed"] == MEAN)]
    sections = _group_sections(labels, groups, counts)
    sections += _single_label_section(labels)
    sections += _inconsistent_section(mixed, labels)
    sections.append(_criteria_section(verdicts, answer_key, settings, with_inconsistent=bool(len(mixed))))
    return "\n".join(sections)


def _group_sections(labels: pd.DataFrame, groups: pd.DataFrame, counts: dict[str, int]) -> list[str]:
    """Per training and test set: mean PRAUC per planted group and model, then mean attention."""
    seeds = sorted(s for s in labels["seed"].unique() if s != MEAN)
    sections = []
    for (train_set, test_set), here in groups.groupby(["train_set", "test_set"], sort=False):
        models = list(dict.fromkeys(here["model"]))
        header = ["Group (labels)"] + [display_name(m) for m in models]
        rows = []
        for group in [g for g in GROUPS if counts[g]]:
            rows.append(
                [f"{group} ({counts[group]})"]
                + [_seed_spread(here[(here["model"] == m) & (here["group"] == group)], "prauc") for m in models]
            )
        spread = " ± std across seeds" if len(seeds) > 1 else ""
        sections.append(
            markdown(
                "Planted structure: mean PRAUC per planted modality group "
                f"(trained on {train_set}, tested on {test_set})",
                header,
                rows,
                [f"Mean over the group's labels; mean over seed(s) {', '.join(map(str, seeds))}{spread}."],
            )
        )
        attn = here.dropna(subset=["attn_ehr"])
        attn = attn[attn["seed"] == MEAN]
        if len(attn):
            rows = [
                [
                    display_name(r.model),
                    f"{r.group} ({counts[r.group]})",
                    fmt(r.attn_ehr),
                    fmt(r.attn_shared),
                    fmt(r.attn_cxr),
                ]
                for r in attn.itertuples()
            ]
            sections.append(
                markdown(
                    "Mean attention per planted group",
                    ["Model", "Group (labels)"] + [n for _, n in ATTENTION_PARTS],
                    rows,
                    ["Mean over the test stays with a CXR and the group's labels (mean over seeds)."],
                )
            )
    return sections


def _single_label_section(labels: pd.DataFrame) -> list[str]:
    """Attention on each single-modality label (seed mean): DrFuse's, or every attention model's without it."""
    single = labels[labels["group"].isin(list(SINGLE)) & labels["attn_ehr"].notna() & (labels["seed"] == MEAN)]
    drfuse = single["model"].isin(["drfuse_paper", "drfuse"])  # DrFuse under each recipe; else every model
    shown = single[drfuse] if drfuse.any() else single
    shown = shown.sort_values("group", key=lambda g: g.map({g: i for i, g in enumerate(GROUPS)}), kind="stable")
    if not len(shown):
        return []
    rows = [
        [
            display_name(r.model),
            r.label,
            r.group,
            fmt(r.attn_ehr),
            fmt(r.attn_cxr),
            f"{r.attention_margin:+.3f}",
            "yes" if r.favours_planted else "no",
        ]
        for r in shown.itertuples()
    ]
    return [
        markdown(
            "Attention on each single-modality label",
            ["Model", "Label", "Planted", "EHR-distinct", "CXR-distinct", "planted - other", "favours planted"],
            rows,
            ["Mean over seeds; other models' rows: planted.csv."],
        )
    ]


def _inconsistent_section(mixed: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    """The per-patient attention shift on each inconsistent label (`mixed`: the attention models'
    seed-mean rows), beside how well each uni-modal model tells the label's channels apart."""
    if not len(mixed):
        return []
    by_run = labels[labels["seed"] == MEAN].set_index(["model", "train_set", "test_set", "label"])
    by_run = by_run[inconsistency.CHANNEL_AUROC]

    def auroc(model: str, r) -> str:
        value = by_run.get((model, r.train_set, r.test_set, r.label), np.nan)
        return fmt(value) if pd.notna(value) else "-"

    rows = [
        [
            display_name(r.model),
            r.label,
            f"{r.attention_shift:+.3f}" if pd.notna(r.attention_shift) else "-",
            fmt(r.n_cxr_channel, 1),
            fmt(r.n_ehr_channel, 1),
            auroc(r.model, r),
            *(auroc(model, r) for model in inconsistency.UNIMODAL),
        ]
        for r in mixed.itertuples()
    ]
    header = ["Model", "Label", "attention shift", "positives (image)", "positives (series)", "channel AUROC"]
    header += [f"channel AUROC, {display_name(model)}" for model in inconsistency.UNIMODAL]
    return [
        markdown(
            "Per-patient attention on each inconsistent label",
            header,
            rows,
            [
                "Attention shift: mean CXR-minus-EHR distinct attention of the positives whose signal is in the "
                "image minus that of the positives whose signal is in the series (test stays with a CXR; mean "
                "over seeds, as the positives' counts).",
                "Channel AUROC: how well a model's probability tells the image-channel positives from the "
                "series-channel ones (0.5: not at all). ResNet50 well above 0.5 reads the image's evidence, the "
                "Transformer well below 0.5 the series'; where neither does, no attention can follow the channel.",
            ],
        )
    ]


def _criteria_section(verdicts: pd.DataFrame, answer_key: Path, settings: dict, with_inconsistent: bool) -> str:
    """Every criterion's value and verdict, with what each means and its settings."""
    rows = [
        [
            display_name(r.model),
            f"{r.train_set} -> {r.test_set}",
            str(r.seed),
            r.criterion,
            _value(r),
            fmt(r.threshold),
            (r.note or "-") if r.passed is None else ("pass" if r.passed else "FAIL"),
        ]
        for r in verdicts.itertuples()
    ]
    notes = [f"{name}: {text}." for name, text in CRITERIA.items() if name in set(verdicts["criterion"])]
    notes += [
        f"Margin {fmt(settings['attention_margin'], 2)}; a ratio is judged when its reference's mean PRAUC over "
        f"the group exceeds the labels' mean prevalence by {fmt(settings['min_reference_gain'], 2)}."
    ]
    if with_inconsistent:
        notes += [
            f"Minimum attention shift {fmt(settings['min_attention_shift'], 2)}; the differences pass above 0 "
            "(uni-modal) and at 0 or above (fusion), the shift share above one half; intervals: paired bootstrap "
            "of the group's mean PRAUC."
        ]
    notes += [f"Answer key: {answer_key}."]
    return markdown(
        "Acceptance criteria",
        ["Model", "Trained -> tested", "Seed", "Criterion", "Value", "Threshold", "Result"],
        rows,
        [" ".join(notes)],
    )


def _value(r) -> str:
    """A criterion's value, with its interval where it has one."""
    if pd.isna(r.ci_low):
        return fmt(r.value)
    return f"{r.value:+.3f} ({r.ci_low:+.3f}, {r.ci_high:+.3f})"


def figure(labels: pd.DataFrame, groups: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drfuse.evaluate.figures import save_png

    mean = groups[groups["seed"] == MEAN]
    present = [g for g in GROUPS if g in set(mean["group"])]
    models = list(dict.fromkeys(mean["model"]))
    attention_models = list(dict.fromkeys(mean.dropna(subset=["attn_ehr"])["model"]))
    mixed = labels[(labels["group"] == inconsistency.GROUP) & labels["attn_ehr"].notna() & (labels["seed"] == MEAN)]
    fig, axes = plt.subplots(1, 3 if len(mixed) else 2, figsize=(19.5 if len(mixed) else 13, 4.5), squeeze=False)
    ax = axes[0, 0]
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(present))
    for i, model in enumerate(models):
        values = mean[mean["model"] == model].set_index("group")["prauc"].reindex(present)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=display_name(model))
    n_labels = labels.drop_duplicates("label")["group"].value_counts()
    ax.set_xticks(x, [f"{g} ({int(n_labels.get(g, 0))})" for g in present])
    ax.set_ylabel("mean PRAUC over the group's labels")
    ax.set_title("PRAUC per planted modality group")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    width = 0.8 / max(len(attention_models), 1)
    for i, model in enumerate(attention_models):
        values = mean[mean["model"] == model].set_index("group").reindex(present)
        bottom = np.zeros(len(present))
        for j, (part, name) in enumerate(ATTENTION_PARTS):
            ax.bar(
                x + (i - (len(attention_models) - 1) / 2) * width,
                values[f"attn_{part}"],
                width,
                bottom=bottom,
                color=f"C{j}",
                edgecolor="white",
                label=name if i == 0 else None,
            )
            bottom += values[f"attn_{part}"].fillna(0).to_numpy()
    ax.set_xticks(x, present)
    ax.set_ylabel("mean attention weight")
    names = ", ".join(display_name(m) for m in attention_models) or "no model with attention"
    ax.set_title(f"Attention per planted group ({names}, left to right)", fontsize=9)
    if attention_models:
        ax.legend(fontsize=7)
    if len(mixed):
        _shift_panel(axes[0, 2], mixed)
    save_png(fig, Path(out))


def _shift_panel(ax, mixed: pd.DataFrame) -> None:
    """Per inconsistent label and attention model: the per-patient attention shift (seed mean)."""
    label_names = list(dict.fromkeys(mixed["label"]))
    models = list(dict.fromkeys(mixed["model"]))
    width = 0.8 / len(models)
    x = np.arange(len(label_names))
    for i, model in enumerate(models):
        rows = mixed[mixed["model"] == model].set_index("label").reindex(label_names)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, rows["attention_shift"], width, label=display_name(model))
    counts = mixed.drop_duplicates("label").set_index("label").reindex(label_names)
    ax.set_xticks(
        x,
        [
            f"{lab[:22]}\n({c:.0f} image, {e:.0f} series)"
            for lab, c, e in zip(label_names, counts["n_cxr_channel"], counts["n_ehr_channel"])
        ],
        fontsize=7,
    )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("CXR-minus-EHR attention: image-channel - series-channel positives")
    ax.set_title("Per-patient attention shift on the inconsistent labels", fontsize=9)
    ax.legend(fontsize=7)


def check(
    prediction_paths: list[Path],
    answer_key: Path,
    settings: dict,
    describe: Callable[[Path], dict] = parse_prediction_path,
    bootstrap: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(label table, group table, criteria) of prediction files against an answer key, with the
    `evaluation.planted` settings: what an experiment script needs to compare model variants.
    `bootstrap` (`n_bootstrap`, `seed`, `ci` of `evaluation:`): intervals for the inconsistent
    labels' comparisons; None: without."""
    key = read_label_groups(answer_key)
    channels = read_channels(answer_key, key)
    labels = label_table(prediction_paths, key, float(settings["attention_margin"]), describe, channels)
    groups = group_table(labels)
    inconsistent = [lab for lab in PHENOTYPES if key[lab] == inconsistency.GROUP]
    resamples = None
    if inconsistent and bootstrap is not None:
        resamples = {
            tuple(describe(Path(path))[k] for k in RUN_KEYS): inconsistency.group_resamples(
                *read_predictions(Path(path)), inconsistent, bootstrap
            )
            for path in prediction_paths
        }
    ci = float(bootstrap["ci"]) if bootstrap else 0.95
    return labels, groups, criteria(labels, groups, settings, resamples, ci)


def write_report(
    prediction_paths: list[Path],
    answer_key: Path,
    settings: dict,
    table_dir: Path,
    figure_path: Path,
    describe: Callable[[Path], dict] = parse_prediction_path,
    bootstrap: dict | None = None,
) -> None:
    """planted.{csv,md} into `table_dir` and the figure to `figure_path` (`bootstrap`: see `check`)."""
    answer_key = Path(answer_key)
    labels, groups, verdicts = check(prediction_paths, answer_key, settings, describe, bootstrap)
    atomic.write_text(Path(table_dir) / "planted.csv", csv_text(planted_csv(labels, groups, verdicts)))
    atomic.write_text(Path(table_dir) / "planted.md", render(labels, groups, verdicts, answer_key, settings))
    figure(labels, groups, figure_path)
    for r in verdicts[verdicts["seed"] == MEAN].itertuples():
        log.info("%s %s: %s = %s (threshold %s)", r.model, r.train_set, r.criterion, fmt(r.value), r.threshold)
