"""DrFuse model diagnostics on data with an answer key: train variants over seeds, print the
planted-structure check per variant, on the VALIDATION split. Model and recipe decisions are made
here; the test split is read once, by the workflow's final tables.

A variant is a set of setting overrides (`--set train.batch_size=16`, repeatable) applied to every
run of `--models`. A model is any run name of the workflow (`drfuse.experiments`): a registry model
(`drfuse`, under our recipe; `drfuse_paper`, the paper's; `mmtm_ours`, ...) or a recipe variant
(`drfuse-warmup`: our recipe without its warm-up; `drfuse_paper+warmup`: the paper's with it).
Every (model, seed) is trained on the matched training set of a finished data stage (`--results`:
cohort, features and images built, e.g. `snakemake --cores all results/images/cxr.u8`), predicted
on the validation splits of the matched and the full dataset, and scored by
`drfuse.evaluate.planted` against the answer key (`--answer-key`, default the built-in data's).
For the DrFuse family it also scores the three auxiliary heads (g1 on EHR-distinct, g2 on the
shared vector, g3 on CXR-distinct) with the last epoch's weights: how far each encoder learned,
apart from the fusion.

Prints, per model: macro PRAUC matched -> matched and matched -> full (validation), mean PRAUC per
planted group, and for DrFuse the mean attention per group, the planted criteria, the auxiliary
heads' group PRAUC (mean and spread over seeds), and per token its part of the fused logit
(`token_logits` of the best checkpoint): the PRAUC of that part alone and its spread over the
stays, so a token that adds noise to a label it cannot predict shows. With inconsistent labels
(`synth.modal_inconsistency`) it prints each one's attention shift on the validation split and, to
see what the attention learned with several times the positives, on the run's own training stays
(a diagnosis, not a decision: they are not held out). docs/model-diagnostics.md
records what this measured. A variant that trains DrFuse alone takes the uni-modal runs the PRAUC
ratios need from another variant's folder (`--reference`): their runs do not depend on DrFuse's
settings. Note that the matched validation split is small (about a tenth of the matched stays):
judge a variant over several seeds and on both validation sets.

    python benchmarks/model_diagnostics.py --results results --out diagnostics/base \\
        --models drfuse drfuse_paper transformer resnet50 --seeds 0 1 2
    python benchmarks/model_diagnostics.py --results results --out diagnostics/recipe \\
        --models drfuse-warmup drfuse_paper+warmup --reference diagnostics/base --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from drfuse.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
AUX_HEADS = ("aux_ehr", "aux_shared", "aux_cxr")
SPLIT = "val"  # never the test split: see the module docstring


def overrides(sets: list[str]) -> dict:
    """`a.b=value` strings (value parsed as YAML) -> a nested dict."""
    out: dict = {}
    for item in sets:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def variant_config(args) -> dict:
    """The resolved config with the variant's `--set` overrides, checked against the schema."""
    from drfuse import config as config_mod

    return config_mod.check(config_mod.deep_merge(config_mod.load(args.config), overrides(args.set)), "--set")


def run_dir(out: Path, model: str, seed: int) -> Path:
    return out / model / f"seed{seed}"


def describe_run(path: Path) -> dict:
    """`drfuse.evaluate.planted`'s description of a run's predictions, <variant>/<model>/seed<n>/matched.parquet."""
    return {"model": path.parts[-3], "train_set": "matched", "test_set": "matched", "seed": int(path.parts[-2][4:])}


def reference_runs(args, optional: bool = True) -> list[Path]:
    """The matched validation predictions in --reference of the uni-modal models --models leaves out
    (needed) and, with `optional`, of the fusion baselines there (for the inconsistent labels'
    comparison with the best one)."""
    from drfuse.evaluate.inconsistency import FUSION_BASELINES
    from drfuse.evaluate.planted import REFERENCE

    if not args.reference:
        return []
    needed = [
        run_dir(Path(args.reference), m, s) / "matched.parquet"
        for m in REFERENCE.values()
        if m not in args.models
        for s in args.seeds
    ]
    extra = (
        [
            run_dir(Path(args.reference), m, s) / "matched.parquet"
            for m in FUSION_BASELINES
            if m not in args.models
            for s in args.seeds
        ]
        if optional
        else []
    )
    return needed + [path for path in extra if path.is_file()]


def missing_references(args) -> None:
    """UserError naming the first run that --reference lacks."""
    for path in reference_runs(args, optional=False):
        if not path.is_file():
            raise UserError(
                f"--reference: {path} does not exist (a variant run with --models resnet50 transformer "
                "and the same --seeds writes it)"
            )


def train_and_score(args) -> None:
    """One (model, seed): train, predict both validation sets and, for the DrFuse family, keep the
    auxiliary heads' logits of the last epoch and the fused logit's token parts of the best
    checkpoint on the matched validation set (one process)."""
    import torch

    from drfuse.experiments import resolve_run
    from drfuse.models import build_model
    from drfuse.train import checkpoint
    from drfuse.train.data import load_split
    from drfuse.train.engine import BEST, LAST, DeviceData, EngineSettings, predict_outputs
    from drfuse.train.run import predict, train

    torch.set_num_threads(1)
    cfg = variant_config(args)
    cfg["train"]["device"] = "cpu"
    name, cfg = resolve_run(args.models[0], cfg)
    folder = run_dir(Path(args.out), args.models[0], args.seeds[0])
    results = Path(args.results)
    train(name, "matched", args.seeds[0], cfg, results, folder)
    model = build_model(name, cfg["model"])
    for test_set in ("matched", "full") if model.uses_ehr else ("matched",):
        predict(folder, test_set, cfg, results, folder / f"{test_set}.parquet", split=SPLIT)
    if not hasattr(model, "aux_heads"):
        return
    cpu = torch.device("cpu")
    data = load_split(results, SPLIT, "matched")
    device_data, settings = DeviceData(data, cpu, True), EngineSettings.from_cfg(cfg, cpu, 0.0)

    def outputs_of(weights: str, keys: tuple[str, ...]) -> dict:
        model.load_state_dict(checkpoint.load(folder / weights)["model"])
        outputs = predict_outputs(model, model, device_data, settings, keys)
        return {key: outputs[key] for key in keys}

    np.savez(folder / "aux_last.npz", labels=data.labels, **outputs_of(LAST, AUX_HEADS))
    np.savez(folder / "token_logits_best.npz", labels=data.labels, **outputs_of(BEST, ("token_logits",)))
    # the best checkpoint's attention on its own training stays: what the attention learned, with
    # several times the validation split's positives (diagnosis only, never a decision)
    fit = load_split(results, "train", "matched")
    device_data = DeviceData(fit, cpu, True)
    np.savez(
        folder / "attention_train.npz",
        stay_id=fit.stay_id,
        labels=fit.labels,
        has_cxr=fit.has_cxr,
        **outputs_of(BEST, ("attention",)),
    )


def group_means(labels: np.ndarray, groups: dict[str, str], per_label) -> dict[str, np.ndarray]:
    """Planted group -> mean over the group's labels (those with a positive) of `per_label(c)`."""
    from drfuse.phenotypes import PHENOTYPES

    rows: dict[str, list] = {}
    for c, label in enumerate(PHENOTYPES):
        if labels[:, c].any():
            rows.setdefault(groups[label], []).append(per_label(c))
    return {g: np.mean(v, axis=0) for g, v in rows.items()}


def aux_group_prauc(folder: Path, groups: dict[str, str]) -> dict[str, dict[str, float]]:
    """Auxiliary head -> planted group -> mean PRAUC over the group's labels (last epoch)."""
    from drfuse.evaluate.metrics import ap_auroc

    aux = np.load(folder / "aux_last.npz")
    y = aux["labels"]

    def head_prauc(head: str) -> dict[str, float]:
        means = group_means(y, groups, lambda c: ap_auroc(y[:, c], aux[head][:, c])[0])
        return {g: float(v) for g, v in means.items()}

    return {head: head_prauc(head) for head in AUX_HEADS}


def token_parts(folder: Path, groups: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """Planted group -> {'prauc', 'sd'}: per token (EHR distinct, shared, CXR distinct), the mean
    over the group's labels of the PRAUC of that token's part of the fused logit alone
    (`token_logits`), and of the part's standard deviation over the stays; best checkpoint, matched
    validation set."""
    from drfuse.evaluate.metrics import ap_auroc

    saved = np.load(folder / "token_logits_best.npz")
    y, parts = saved["labels"], saved["token_logits"]

    def per_label(c: int) -> list[float]:
        return [float(ap_auroc(y[:, c], parts[:, c, j])[0]) for j in range(3)] + list(parts[:, c].std(0))

    return {g: {"prauc": row[:3], "sd": row[3:]} for g, row in group_means(y, groups, per_label).items()}


def training_shifts(folder: Path, channels) -> dict[str, float]:
    """Inconsistent label -> the attention shift (`drfuse.evaluate.inconsistency.shift_columns`) of
    the best checkpoint on its matched training stays (`attention_train.npz`)."""
    import pandas as pd

    from drfuse.evaluate.inconsistency import shift_columns
    from drfuse.phenotypes import PHENOTYPES
    from drfuse.train.run import ATTENTION_TOKENS

    saved = np.load(folder / "attention_train.npz")
    frame = pd.DataFrame({"stay_id": saved["stay_id"], "has_cxr": saved["has_cxr"]})
    out = {}
    for label, part in channels.groupby("label"):
        c = PHENOTYPES.index(label)
        for j, token in enumerate(ATTENTION_TOKENS):
            frame[f"attn:{label}:{token}"] = saved["attention"][:, c, j]
        out[label] = shift_columns(frame, label, part.set_index("stay_id")["channel"])["attention_shift"]
    return out


def spread(values) -> str:
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():  # a PRAUC ratio without its uni-modal runs
        return "n/a"
    return f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"


def verdict(value: float, passed: bool | None, note: str | None) -> str:
    if passed is None:
        return note + (" (add resnet50 / transformer to --models, or give --reference)" if "not run" in note else "")
    return f"{value:.3f} {'PASS' if passed else 'FAIL'}"


def macro_prauc(path: Path) -> float:
    import polars as pl

    from drfuse.phenotypes import PHENOTYPES
    from drfuse.train.metrics import macro_scores

    frame = pl.read_parquet(path)
    y = frame.select(f"y:{x}" for x in PHENOTYPES).to_numpy()
    p = frame.select(f"p:{x}" for x in PHENOTYPES).to_numpy()
    return macro_scores(y, p)["prauc"]


def summary(args) -> None:
    from drfuse import config as config_mod
    from drfuse.evaluate.planted import MEAN, check
    from drfuse.synth.answer_key import GROUPS, read_channels, read_label_groups

    out, key = Path(args.out), Path(args.answer_key)
    paths = [run_dir(out, m, s) / "matched.parquet" for m in args.models for s in args.seeds] + reference_runs(args)
    paths = list(dict.fromkeys(paths))
    evaluation = config_mod.load(args.config)["evaluation"]
    bootstrap = {k: evaluation[k] for k in ("n_bootstrap", "seed", "ci")}
    labels, groups, all_verdicts = check(paths, key, evaluation["planted"], describe_run, bootstrap)
    label_groups = read_label_groups(key)
    channels = read_channels(key, label_groups).to_pandas()
    groups, verdicts = groups[groups["seed"] != MEAN], all_verdicts[all_verdicts["seed"] != MEAN]
    on_mean = all_verdicts[all_verdicts["seed"] == MEAN]
    present = [g for g in GROUPS if g != "none" and (groups["group"] == g).any()]
    print(f"variant {out.name}: {' '.join(args.set) or '(defaults)'}; scores on the validation split")
    for model in args.models:
        rows = groups[groups["model"] == model]
        line = [f"{model:24s}"]
        for test_set in ("matched", "full"):
            files = [run_dir(out, model, s) / f"{test_set}.parquet" for s in args.seeds]
            if all(f.is_file() for f in files):
                line.append(f"{test_set} {spread([macro_prauc(f) for f in files])}")
        line += [f"{g} {spread(rows[rows['group'] == g]['prauc'])}" for g in present]
        epochs = [json.loads((run_dir(out, model, s) / "run.json").read_text())["best_epoch"] for s in args.seeds]
        print("  ".join(line) + f"  best epochs {epochs}")
        if rows["attn_ehr"].notna().any():
            for g in present:
                att = rows[rows["group"] == g][["attn_ehr", "attn_shared", "attn_cxr"]].mean()
                print(
                    f"    attention on {g:4s} labels: EHR {att['attn_ehr']:.3f} shared {att['attn_shared']:.3f} "
                    f"CXR {att['attn_cxr']:.3f}"
                )
            mixed = labels[(labels["model"] == model) & (labels["seed"] != MEAN) & (labels["group"] == "inconsistent")]
            fit = [training_shifts(run_dir(out, model, s), channels) for s in args.seeds] if len(mixed) else []
            for label, part in mixed.groupby("label", sort=False):
                print(
                    f"    attention shift {label[:40]:40s} {spread(part['attention_shift'])} "
                    f"(positives: {part['n_cxr_channel'].mean():.1f} image, "
                    f"{part['n_ehr_channel'].mean():.1f} series); "
                    f"on its training stays {spread([f[label] for f in fit])}"
                )
            mine = verdicts[verdicts["model"] == model]
            print(
                "    per seed     "
                + "  ".join(f"{c} {spread(mine[mine['criterion'] == c]['value'])}" for c in mine["criterion"].unique())
            )
            mean = on_mean[on_mean["model"] == model]
            print(
                "    on seed mean "
                + "  ".join(f"{r.criterion} {verdict(r.value, r.passed, r.note)}" for r in mean.itertuples())
            )
            aux = [aux_group_prauc(run_dir(out, model, s), label_groups) for s in args.seeds]
            for head in AUX_HEADS:
                print(f"    {head:10s} " + "  ".join(f"{g} {spread([a[head].get(g) for a in aux])}" for g in present))
            parts = [token_parts(run_dir(out, model, s), label_groups) for s in args.seeds]
            for g in [g for g in ("ehr", "cxr") if all(g in p for p in parts)]:
                prauc = np.mean([p[g]["prauc"] for p in parts], 0)
                sd = np.mean([p[g]["sd"] for p in parts], 0)
                print(
                    f"    logit parts on {g:4s} labels (PRAUC alone / sd): "
                    + "  ".join(f"{t} {a:.3f} / {b:.2f}" for t, a, b in zip(("EHR", "shared", "CXR"), prauc, sd))
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results folder with cohort, features, images")
    parser.add_argument("--answer-key", help="label_groups.csv (default: RESULTS/synth/answer_key/label_groups.csv)")
    parser.add_argument("--out", required=True, help="folder of this variant's runs")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["drfuse", "transformer", "resnet50"],
        help="run names: registry models or recipe variants (drfuse-warmup, drfuse_paper+warmup)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="setting override, e.g. train.batch_size=16")
    parser.add_argument(
        "--reference",
        help="a variant's folder whose resnet50 / transformer runs (same seeds) give the "
        "PRAUC ratios' references when --models leaves them out",
    )
    parser.add_argument("--jobs", type=int, default=2, help="trainings side by side (one thread each)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single (model, seed)
    args = parser.parse_args()
    args.answer_key = args.answer_key or str(Path(args.results) / "synth" / "answer_key" / "label_groups.csv")
    if args.one:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        return train_and_score(args)
    try:
        variant_config(args)
        missing_references(args)
    except UserError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    Path(args.out).mkdir(parents=True, exist_ok=True)

    def one(job):
        model, seed = job
        folder = run_dir(Path(args.out), model, seed)
        if (folder / "matched.parquet").is_file():
            return
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--results",
            args.results,
            "--out",
            args.out,
            "--config",
            args.config,
            "--models",
            model,
            "--seeds",
            str(seed),
            *[a for s in args.set for a in ("--set", s)],
        ]
        with open(folder / "log.txt", "w") as log:
            subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
            )

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, [(m, s) for m in args.models for s in args.seeds]))
    summary(args)


if __name__ == "__main__":
    main()
