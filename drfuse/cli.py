"""`drfuse <stage>`: one subcommand per pipeline stage; Snakemake rules call exactly these.

Each subcommand reads the merged configuration (`config.yaml` plus the built-in overrides when no
MIMIC path is set), imports its stage module lazily (so `drfuse synth` does not pay for torch) and
calls one function. Errors that a user can fix (a missing file, a bad table) are reported as one
line naming the file or setting at fault, with exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from drfuse import config as config_mod
from drfuse.errors import UserError

log = logging.getLogger("drfuse")


def _cfg(args) -> dict:
    return config_mod.load(args.config)


def cmd_synth(args):
    from drfuse.synth import generate

    cfg = _cfg(args)
    generate(Path(args.out), cfg["synth"])


def cmd_ingest(args):
    from drfuse.data.ingest import ingest

    ingest(Path(args.mimic_iv), Path(args.mimic_cxr) if args.mimic_cxr else None, Path(args.db), Path(args.manifest))


def cmd_cohort(args):
    from drfuse.data.cohort import build_cohort

    build_cohort(Path(args.db), Path(args.out), _cfg(args))


def cmd_features(args):
    from drfuse.data.features import build_features

    build_features(Path(args.db), Path(args.stays), Path(args.out), _cfg(args))


def cmd_images(args):
    from drfuse.images.cache import build_cache

    cfg = _cfg(args)["images"]
    build_cache(
        Path(args.stays),
        Path(args.cxr_root),
        Path(args.out),
        size=cfg["cache_size"],
        strict=cfg["strict"],
        workers=cfg["workers"],
    )


def cmd_train(args):
    from drfuse.experiments import resolve_run
    from drfuse.train.run import train

    model, cfg = resolve_run(args.model, _cfg(args))
    train(model, args.train_set, args.seed, cfg, Path(args.results), Path(args.out))


def cmd_predict(args):
    from drfuse.train.run import predict

    predict(Path(args.run), args.test_set, _cfg(args), Path(args.results), Path(args.out))


def cmd_evaluate(args):
    from drfuse.evaluate.bootstrap import evaluate

    cfg = _cfg(args)["evaluation"]
    evaluate([Path(p) for p in args.predictions], Path(args.out), cfg["n_bootstrap"], cfg["seed"], cfg["ci"],
             resamples_path=Path(args.resamples) if args.resamples else None)


def cmd_planted(args):
    from drfuse.evaluate.planted import write_report

    settings = _cfg(args)["evaluation"]["planted"]
    write_report([Path(p) for p in args.predictions], Path(args.answer_key), settings, Path(args.tables), Path(args.figure))


def cmd_tables(args):
    from drfuse.evaluate.tables import build_tables

    build_tables(Path(args.results), _cfg(args), Path(args.out))


def cmd_figures(args):
    from drfuse.evaluate.figures import build_figures

    build_figures(Path(args.results), _cfg(args), Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drfuse", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml", help="configuration file (default: config.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_text, *arguments):
        p = sub.add_parser(name, help=help_text)
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=func)

    req = {"required": True}
    add("synth", cmd_synth, "generate the built-in MIMIC-shaped dataset", (["--out"], req))
    add(
        "ingest",
        cmd_ingest,
        "load MIMIC-IV (+ MIMIC-CXR-JPG metadata) into one DuckDB file",
        (["--mimic-iv"], req),
        (["--mimic-cxr"], {"default": None}),
        (["--db"], req),
        (["--manifest"], req),
    )
    add("cohort", cmd_cohort, "cohort, labels, CXR matching, splits", (["--db"], req), (["--out"], req))
    add(
        "features",
        cmd_features,
        "17 variables binned hourly, then the 76-column matrix",
        (["--db"], req),
        (["--stays"], req),
        (["--out"], req),
    )
    add(
        "images",
        cmd_images,
        "decode the cohort's chest X-rays once into a uint8 cache",
        (["--stays"], req),
        (["--cxr-root"], req),
        (["--out"], req),
    )
    add(
        "train",
        cmd_train,
        "train one model on one training set",
        (["--model"], req),
        (["--train-set"], {"required": True, "choices": ["full", "matched"]}),
        (["--seed"], {"type": int, "default": 0}),
        (["--results"], {"default": "results"}),
        (["--out"], req),
    )
    add(
        "predict",
        cmd_predict,
        "predict a test set with a run's best checkpoint",
        (["--run"], req),
        (["--test-set"], {"required": True, "choices": ["full", "matched"]}),
        (["--results"], {"default": "results"}),
        (["--out"], req),
    )
    add(
        "evaluate",
        cmd_evaluate,
        "bootstrap PRAUC / AUROC of prediction files",
        (["--predictions"], {"nargs": "+", "required": True}),
        (["--out"], req),
        (["--resamples"], {"default": None, "help": "also write every resample's macro values here (tables need them)"}),
    )
    add(
        "planted",
        cmd_planted,
        "PRAUC and attention per planted modality group, against an answer key",
        (["--answer-key"], {"required": True, "help": "label_groups.csv (drfuse.synth.answer_key)"}),
        (["--predictions"], {"nargs": "+", "required": True}),
        (["--tables"], {"required": True, "help": "folder for planted.csv and planted.md"}),
        (["--figure"], {"required": True, "help": "path of planted.png"}),
    )
    add("tables", cmd_tables, "the paper's Tables 1-4 beside ours", (["--results"], {"default": "results"}), (["--out"], req))
    add("figures", cmd_figures, "t-SNE, attention and PR-curve figures", (["--results"], {"default": "results"}), (["--out"], req))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        args.func(args)
    except (UserError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
