"""Stage `figures`: t-SNE of DrFuse's representations, its attention per disease, PR curves.

All from the predictions of the first configured seed, for models trained on the Table 3
training set (experiments.table3.train_set, the matched subset by default). DrFuse's figures have
one panel per recipe of `experiments.recipes` (paper, ours):

- `tsne.png` (paper Fig. 3): t-SNE of the four representations on the matched test set (stays with
  a CXR); at most 500 stays are drawn (so at most 2,000 points), perplexity min(30, (points-1)/3).
- `attention.png`: mean attention weight of EHR-distinct / shared / CXR-distinct per disease over the
  matched test stays with a CXR (stacked bars, one per phenotype).
- `pr_curves.png`: macro-averaged precision-recall curve of every model, one panel per test set.
  Macro: for each label, precision at each recall level of a common grid is the precision of the
  first threshold reaching that recall (the step curve behind average precision); the curves are
  then averaged over labels. The legend gives the macro average precision.

A figure whose inputs the configuration does not produce (e.g. DrFuse not configured) is drawn as
a panel saying so, so the stage always yields its three files.

`build_mortality_figures` (`drfuse figures --task mortality`): `attention_mortality.png`, the same
attention figure for the in-hospital mortality task, whose one "disease" is in_hospital_mortality
(runs of `experiments.mortality` trained on the matched set, else on the first of its training
sets; first seed; matched test stays).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from drfuse import atomic  # noqa: E402
from drfuse.evaluate.names import display_name  # noqa: E402
from drfuse.evaluate.tables import TEST_SETS, expand  # noqa: E402
from drfuse.experiments import drfuse_runs  # noqa: E402
from drfuse.phenotypes import PHENOTYPES  # noqa: E402

log = logging.getLogger(__name__)

REPRESENTATIONS = ("ehr_distinct", "ehr_shared", "cxr_distinct", "cxr_shared")
ATTENTION_PARTS = (("ehr", "EHR-distinct"), ("shared", "shared"), ("cxr", "CXR-distinct"))
MAX_TSNE_STAYS = 500
RECALL_GRID = np.linspace(0.0, 1.0, 101)


def save_png(fig, path: Path) -> None:
    """Save to a temp file beside the target, then rename: no half-written PNG on failure."""
    try:
        with atomic.writing(path) as tmp:  # its name ends .png: savefig takes the format from it
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def _placeholder(path: Path, message: str) -> None:
    log.warning("%s: %s", path.name, message)
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    save_png(fig, path)


def _prediction(results_dir: Path, model: str, train_set: str, seed: int, test_set: str) -> Path:
    return results_dir / "predict" / model / train_set / f"seed{seed}" / f"{test_set}.parquet"


def _panels(n: int, width: float, height: float):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height), squeeze=False)
    return fig, list(axes[0])


def _tsne_panel(ax, npz_path: Path, name: str, seed: int) -> str | None:
    """Draws one run's t-SNE; returns why it could not instead."""
    if not npz_path.is_file():
        return f"no {name} representations ({npz_path})"
    with np.load(npz_path) as data:
        reps = {k: data[k] for k in REPRESENTATIONS}
    keep = np.flatnonzero(~np.isnan(reps["cxr_shared"]).any(axis=1) & ~np.isnan(reps["ehr_shared"]).any(axis=1))
    if len(keep) < 2:
        return f"{npz_path}: fewer than 2 test stays with a CXR"
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(keep, size=min(len(keep), MAX_TSNE_STAYS), replace=False))
    points = np.concatenate([reps[k][keep] for k in REPRESENTATIONS])
    kind = np.repeat(np.arange(len(REPRESENTATIONS)), len(keep))
    perplexity = min(30.0, (len(points) - 1) / 3.0)
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    for i, rep in enumerate(REPRESENTATIONS):
        sel = kind == i
        ax.scatter(emb[sel, 0], emb[sel, 1], s=6, alpha=0.6, label=rep.replace("_", " "))
    ax.set_title(f"t-SNE of {name} representations ({len(keep)} matched test stays)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7)
    return None


def tsne_figure(npz_paths: dict[str, Path], out: Path, seed: int) -> None:
    """One t-SNE panel per DrFuse run (display name -> its .npz)."""
    if not npz_paths:
        return _placeholder(out, "no DrFuse representations: DrFuse not in the experiments config")
    fig, axes = _panels(len(npz_paths), 6, 5)
    problems = [p for ax, (name, path) in zip(axes, npz_paths.items()) if (p := _tsne_panel(ax, path, name, seed))]
    if problems:
        plt.close(fig)
        return _placeholder(out, "; ".join(problems))
    save_png(fig, out)


def attention_figure(pred_paths: dict[str, Path], out: Path, labels: tuple[str, ...] = PHENOTYPES) -> None:
    """One panel per DrFuse run (display name -> its predictions): mean attention per disease
    (`labels`: the task's, the 25 phenotypes or in_hospital_mortality)."""
    frames = {}
    for name, path in pred_paths.items():
        if not path.is_file():
            return _placeholder(out, f"no {name} predictions ({path})")
        df = pd.read_parquet(path)
        frames[name] = df[df["has_cxr"].astype(bool)] if "has_cxr" in df.columns else df
        if len(frames[name]) == 0:
            return _placeholder(out, f"{path}: no test stays with a CXR")
    if not frames:
        return _placeholder(out, "no DrFuse predictions: DrFuse not in the experiments config")
    fig, axes = _panels(len(frames), 8, 1.5 + 0.3 * len(labels))
    y = np.arange(len(labels))
    for i, (ax, (name, df)) in enumerate(zip(axes, frames.items())):
        means = np.array([[df[f"attn:{lab}:{part}"].mean() for part, _ in ATTENTION_PARTS] for lab in labels])
        left = np.zeros(len(labels))
        for j, (_, part) in enumerate(ATTENTION_PARTS):
            ax.barh(y, means[:, j], left=left, label=part, color=f"C{j}")
            left += means[:, j]
        names = [lab if len(lab) <= 45 else lab[:42] + "..." for lab in labels]
        ax.set_yticks(y, names if i == 0 else [""] * len(names), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mean attention weight")
        ax.set_title(f"{name}: attention per disease ({len(df)} matched test stays)", fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
    save_png(fig, out)


def macro_pr_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, float]:
    """Precision on RECALL_GRID averaged over the labels that have a positive; macro AP."""
    from drfuse.evaluate.metrics import ap_auroc, macro

    curves, aps = [], []
    for k in range(y.shape[1]):
        if y[:, k].sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(y[:, k], p[:, k])
        precision, recall = precision[::-1], recall[::-1]  # recall increasing
        idx = np.minimum(np.searchsorted(recall, RECALL_GRID, side="left"), len(recall) - 1)
        curves.append(precision[idx])
        aps.append(ap_auroc(y[:, k], p[:, k])[0])
    if not curves:
        return np.full_like(RECALL_GRID, np.nan), float("nan")
    return np.mean(curves, axis=0), float(macro(np.array(aps))[0])


def pr_figure(results_dir: Path, models: list[str], train_set: str, seed: int, out: Path) -> None:
    fig, axes = plt.subplots(1, len(TEST_SETS), figsize=(11, 4.5), squeeze=False)
    drawn = 0
    for ax, test_set in zip(axes[0], TEST_SETS):
        for model in models:
            path = _prediction(results_dir, model, train_set, seed, test_set)
            if not path.is_file():
                continue
            df = pd.read_parquet(path)
            y = df[[f"y:{c}" for c in PHENOTYPES]].to_numpy()
            p = df[[f"p:{c}" for c in PHENOTYPES]].to_numpy(np.float64)
            curve, ap = macro_pr_curve(y, p)
            ax.plot(RECALL_GRID, curve, label=f"{display_name(model)} (AP {ap:.3f})")
            drawn += 1
        ax.set_title(f"trained on {train_set}, tested on {test_set}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision (macro over labels)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        if ax.lines:
            ax.legend(fontsize=7)
    if drawn == 0:
        plt.close(fig)
        return _placeholder(out, f"no predictions of models trained on {train_set} under {results_dir / 'predict'}")
    save_png(fig, out)


def build_mortality_figures(results_dir: Path, cfg: dict, out_dir: Path) -> None:
    """Write attention_mortality.png: DrFuse's attention on in-hospital mortality, per recipe."""
    from drfuse.experiments import mortality_runs
    from drfuse.tasks import MORTALITY, labels, task_dir

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    exp = cfg["experiments"]
    train_sets = exp["mortality"]["train_sets"]
    train_set = "matched" if "matched" in train_sets else train_sets[0]
    planned = {(run, t) for run, t, _ in mortality_runs(cfg)}
    seed = int(exp["seeds"][0])
    drfuse = {
        display_name(r): _prediction(task_dir(results_dir, MORTALITY), r, train_set, seed, "matched")
        for r in drfuse_runs(cfg)
        if (r, train_set) in planned
    }
    attention_figure(drfuse, out_dir / "attention_mortality.png", labels(MORTALITY))
    log.info("wrote %s", out_dir / "attention_mortality.png")


def build_figures(results_dir: Path, cfg: dict, out_dir: Path) -> None:
    """Write tsne.png, attention.png and pr_curves.png to `out_dir`."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    exp = cfg["experiments"]
    seed = int(exp["seeds"][0])
    train_set = exp["table3"]["train_set"]
    configured = set(expand([*exp["table3"]["models"], *exp["table2"]["models"]], cfg))
    drfuse = {
        display_name(r): _prediction(results_dir, r, train_set, seed, "matched")
        for r in drfuse_runs(cfg)
        if r in configured
    }
    tsne_figure(
        {name: path.with_suffix(".npz") for name, path in drfuse.items()},
        out_dir / "tsne.png",
        int(cfg["evaluation"]["seed"]),
    )
    attention_figure(drfuse, out_dir / "attention.png")
    models = list(dict.fromkeys(expand([*exp["table3"]["models"], *exp["table2"]["models"]], cfg)))
    pr_figure(results_dir, models, train_set, seed, out_dir / "pr_curves.png")
    log.info("wrote figures to %s", out_dir)
