"""`drfuse <stage>`: one subcommand per pipeline stage; Snakemake rules call exactly these.

Each subcommand reads the merged configuration (`--config`, a partial file merged over the
project's config.yaml; plus the built-in overrides when no MIMIC path is set), checked against the
schema before anything runs (`drfuse.config.load`),
imports its stage module lazily (so `drfuse synth` does not pay for torch) and calls one function.
Errors that a user can fix (a missing file, a bad table, a bad setting, a folder that cannot be
written) are reported as one line naming the file or setting at fault, with exit code 1.

The job's resources are flags, not settings: `--threads` (DuckDB threads, image decoders, torch
threads), `--memory-mb` (DuckDB's memory limit) and `--gpus` (a job given a GPU must train on
CUDA). Snakemake passes its `{threads}` and `{resources}`; by hand they default to the machine's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from drfuse import config as config_mod
from drfuse.errors import UserError

log = logging.getLogger("drfuse")


def _cfg(args) -> dict:
    return config_mod.load(args.config)


def cmd_synth(args):
    from drfuse.synth import generate

    cfg = _cfg(args)
    generate(Path(args.out), cfg["synth"], workers=args.threads)


def _with_job_resources(cfg: dict, args) -> dict:
    """Training settings for this job: torch threads from --threads; a job given a GPU (--gpus,
    Snakemake's `gpu` resource from profiles/gpu or profiles/slurm) turns `device: auto` into
    `cuda`, so it fails with a clear message instead of training on the CPU."""
    train_cfg = dict(cfg["train"])
    if args.threads:
        train_cfg["num_threads"] = args.threads
    if args.gpus and train_cfg["device"] == "auto":
        train_cfg["device"] = "cuda"
    return {**cfg, "train": train_cfg}


def cmd_ingest(args):
    from drfuse.data.ingest import ingest

    _cfg(args)  # a broken configuration fails here too, before an hour of loading
    ingest(
        Path(args.mimic_iv),
        Path(args.mimic_cxr) if args.mimic_cxr else None,
        Path(args.db),
        Path(args.manifest),
        threads=args.threads,
        memory_mb=args.memory_mb,
    )


def cmd_cohort(args):
    from drfuse.data.cohort import build_cohort
    from drfuse.data.cxr_files import FILE_NAME, write_cxr_file_list

    out = Path(args.out)
    build_cohort(
        Path(args.db), out, _cfg(args), Path(args.tables) if args.tables else None, args.threads, args.memory_mb
    )
    n = write_cxr_file_list(out / "stays.parquet", out / FILE_NAME)
    log.info("%d CXR image paths the cohort needs: %s", n, out / FILE_NAME)


def cmd_mortality_cohort(args):
    from drfuse.data.mortality import build_mortality_cohort

    cfg = _cfg(args)
    build_mortality_cohort(
        Path(args.db), Path(args.stays), Path(args.out), cfg["cohort"]["hours"], args.threads, args.memory_mb
    )


def cmd_features(args):
    from drfuse.data.features import build_features

    build_features(Path(args.db), Path(args.stays), Path(args.out), _cfg(args), args.threads, args.memory_mb)


def cmd_images(args):
    from drfuse.images.cache import build_cache

    cfg = _cfg(args)["images"]
    build_cache(
        Path(args.stays),
        Path(args.cxr_root),
        Path(args.out),
        size=cfg["cache_size"],
        strict=cfg["strict"],
        workers=args.threads,
        max_missing_share=cfg["max_missing_share"],
    )


def _writable_folder(path: Path, flag: str) -> None:
    """Make `path` and write a file into it now, so that a folder the job cannot write is one line
    before hours of training, not after."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check."):
            pass
    except OSError as exc:
        raise UserError(
            f"{flag} {path}: cannot write there ({exc.strerror or exc}); choose a folder you can write"
        ) from None


def _predict_test_sets(run_dir: Path, test_sets: list[str], cfg: dict, results: Path, out_dir: Path) -> None:
    from drfuse.train.run import predict

    out_dir.mkdir(parents=True, exist_ok=True)
    for test_set in dict.fromkeys(test_sets):
        predict(run_dir, test_set, cfg, results, out_dir / f"{test_set}.parquet")


def cmd_train(args):
    from drfuse.experiments import IMAGE_ONLY_MODELS, resolve_run
    from drfuse.train.run import train

    if bool(args.predict_dir) != bool(args.test_set):
        raise UserError("drfuse train: --predict-dir and --test-set go together (predict the test sets after training)")
    model, cfg = resolve_run(args.model, _cfg(args))
    if model in IMAGE_ONLY_MODELS and set(args.test_set or ()) - {"matched"}:
        raise UserError(f"drfuse train: {model} uses no EHR, so --test-set can only be matched")
    if args.predict_dir:
        _writable_folder(Path(args.predict_dir), "--predict-dir")
    cfg = _with_job_resources(cfg, args)
    warm_start = Path(args.warm_start) if args.warm_start else None
    train(
        model, args.train_set, args.seed, cfg, Path(args.results), Path(args.out), warm_start=warm_start, task=args.task
    )
    if args.predict_dir:
        # in the same process: importing torch and torchvision alone takes seconds per job
        _predict_test_sets(Path(args.out), args.test_set, cfg, Path(args.results), Path(args.predict_dir))


def cmd_warmup(args):
    from drfuse.experiments import resolve_run
    from drfuse.train.run import warm_up

    _, cfg = resolve_run("drfuse", _cfg(args))
    warm_up(args.seed, _with_job_resources(cfg, args), Path(args.results), Path(args.out), task=args.task)


def cmd_predict(args):
    cfg = _with_job_resources(_cfg(args), args)
    _predict_test_sets(Path(args.run), args.test_set, cfg, Path(args.results), Path(args.out_dir))


def cmd_evaluate(args):
    from drfuse.evaluate.bootstrap import evaluate

    cfg = _cfg(args)["evaluation"]
    evaluate(
        [Path(p) for p in args.predictions],
        Path(args.out),
        cfg["n_bootstrap"],
        cfg["seed"],
        cfg["ci"],
        resamples_path=Path(args.resamples) if args.resamples else None,
    )


def cmd_planted(args):
    from drfuse.evaluate.planted import write_report

    evaluation = _cfg(args)["evaluation"]
    bootstrap = {k: evaluation[k] for k in ("n_bootstrap", "seed", "ci")}
    if args.task == "mortality":
        from drfuse.evaluate.planted_mortality import write_report as write_mortality_report

        write_mortality_report(
            [Path(p) for p in args.predictions], Path(args.answer_key), evaluation["planted"], Path(args.tables)
        )
        return
    if not args.figure:
        raise UserError("drfuse planted: --figure is required for the phenotyping task")
    write_report(
        [Path(p) for p in args.predictions],
        Path(args.answer_key),
        evaluation["planted"],
        Path(args.tables),
        Path(args.figure),
        bootstrap=bootstrap,
    )


def cmd_tables(args):
    from drfuse import provenance
    from drfuse.evaluate.tables import build_tables

    cfg = _cfg(args)
    if args.task == "mortality":
        from drfuse.evaluate.mortality import build_mortality_tables

        build_mortality_tables(Path(args.results), cfg, Path(args.out))
        return
    build_tables(Path(args.results), cfg, Path(args.out))
    provenance.write_markdown(Path(args.results), config_mod.uses_builtin_data(cfg), Path(args.out) / "provenance.md")


def cmd_figures(args):
    from drfuse.evaluate.figures import build_figures

    if args.task == "mortality":
        from drfuse.evaluate.figures import build_mortality_figures

        build_mortality_figures(Path(args.results), _cfg(args), Path(args.out))
        return
    build_figures(Path(args.results), _cfg(args), Path(args.out))


# Flags shared by several subcommands: (flags, argparse keyword arguments).
_REQUIRED = {"required": True}
_THREADS = (["--threads"], {"type": int, "default": 0, "help": "CPU threads of this job (default 0: all cores)"})
_MEMORY = (["--memory-mb"], {"type": int, "default": 0, "help": "memory of this job in MB (default 0: the machine's)"})
_GPUS = (["--gpus"], {"type": int, "default": 0, "help": "GPUs given to this job; >= 1: train on CUDA or fail"})
_TASK = (
    ["--task"],
    {
        "choices": ["phenotyping", "mortality"],
        "default": "phenotyping",
        "help": "phenotyping (default: the 25 labels) or mortality (in-hospital mortality)",
    },
)


def _add_command(sub, name, func, help_text, *arguments) -> None:
    p = sub.add_parser(name, help=help_text, allow_abbrev=False)
    for flags, kwargs in arguments:
        p.add_argument(*flags, **kwargs)
    p.set_defaults(func=func)


def _add_data_commands(sub) -> None:
    """The stages from raw data to the cohort, its features and its image cache."""
    req, threads, memory = _REQUIRED, _THREADS, _MEMORY
    _add_command(sub, "synth", cmd_synth, "generate the built-in MIMIC-shaped dataset", (["--out"], req), threads)
    _add_command(
        sub,
        "ingest",
        cmd_ingest,
        "load MIMIC-IV (+ MIMIC-CXR-JPG metadata) into one DuckDB file",
        (["--mimic-iv"], req),
        (["--mimic-cxr"], {"default": None}),
        (["--db"], req),
        (["--manifest"], req),
        threads,
        memory,
    )
    _add_command(
        sub,
        "cohort",
        cmd_cohort,
        "cohort, labels, CXR matching, splits; the list of CXR files it needs",
        (["--db"], req),
        (["--out"], req),
        (["--tables"], {"default": None, "help": "folder of label_modes.{csv,md,tex} (default: --out)"}),
        threads,
        memory,
    )
    _add_command(
        sub,
        "mortality-cohort",
        cmd_mortality_cohort,
        "the in-hospital mortality cohort and label (stays of at least cohort.hours): cohort/mortality.parquet",
        (["--db"], req),
        (["--stays"], req),
        (["--out"], req),
        threads,
        memory,
    )
    _add_command(
        sub,
        "features",
        cmd_features,
        "17 variables binned hourly, then the 76-column matrix",
        (["--db"], req),
        (["--stays"], req),
        (["--out"], req),
        threads,
        memory,
    )
    _add_command(
        sub,
        "images",
        cmd_images,
        "decode the cohort's chest X-rays once into a uint8 cache",
        (["--stays"], req),
        (["--cxr-root"], req),
        (["--out"], req),
        threads,
    )


def _add_model_commands(sub) -> None:
    """Training, the image warm-up and prediction."""
    req, task, threads, gpus = _REQUIRED, _TASK, _THREADS, _GPUS
    _add_command(
        sub,
        "train",
        cmd_train,
        "train one model on one training set (and predict its test sets)",
        (["--model"], req),
        (["--train-set"], {"required": True, "choices": ["full", "matched"]}),
        (["--seed"], {"type": int, "default": 0}),
        (["--results"], {"default": "results"}),
        (["--out"], req),
        (
            ["--predict-dir"],
            {"default": None, "help": "then predict --test-set with the best checkpoint into this folder"},
        ),
        (["--test-set"], {"nargs": "+", "choices": ["full", "matched"], "default": None}),
        (
            ["--warm-start"],
            {"default": None, "help": "DrFuse family: start after this `drfuse warmup` result (warmup.pt)"},
        ),
        task,
        threads,
        gpus,
    )
    _add_command(
        sub,
        "warmup",
        cmd_warmup,
        "DrFuse's image warm-up alone, once for the family's runs of a seed (train --warm-start)",
        (["--seed"], {"type": int, "default": 0}),
        (["--results"], {"default": "results"}),
        (["--out"], req),
        task,
        threads,
        gpus,
    )
    _add_command(
        sub,
        "predict",
        cmd_predict,
        "predict test sets with a run's best checkpoint: OUT_DIR/{test_set}.parquet (+ .npz)",
        (["--run"], req),
        (["--test-set"], {"required": True, "nargs": "+", "choices": ["full", "matched"]}),
        (["--results"], {"default": "results"}),
        (["--out-dir"], req),
        threads,
        gpus,
    )


def _add_report_commands(sub) -> None:
    """Bootstrap, the planted-structure check, tables and figures."""
    req, task = _REQUIRED, _TASK
    _add_command(
        sub,
        "evaluate",
        cmd_evaluate,
        "bootstrap PRAUC / AUROC of prediction files",
        (["--predictions"], {"nargs": "+", "required": True}),
        (["--out"], req),
        (
            ["--resamples"],
            {"default": None, "help": "also write every resample's macro values here (tables need them)"},
        ),
    )
    _add_command(
        sub,
        "planted",
        cmd_planted,
        "PRAUC and attention per planted modality group, against an answer key",
        (
            ["--answer-key"],
            {
                "required": True,
                "help": "label_groups.csv, or mortality.csv for --task mortality (drfuse.synth.answer_key)",
            },
        ),
        (["--predictions"], {"nargs": "+", "required": True}),
        (
            ["--tables"],
            {"required": True, "help": "folder for planted.{csv,md} (mortality: planted_mortality.{csv,md})"},
        ),
        (["--figure"], {"default": None, "help": "path of planted.png (phenotyping)"}),
        task,
    )
    _add_command(
        sub,
        "tables",
        cmd_tables,
        "the paper's Tables 1-4 beside ours (--task mortality: tables/mortality.*)",
        (["--results"], {"default": "results"}),
        (["--out"], req),
        task,
    )
    _add_command(
        sub,
        "figures",
        cmd_figures,
        "t-SNE, attention and PR-curve figures (--task mortality: DrFuse's attention on it)",
        (["--results"], {"default": "results"}),
        (["--out"], req),
        task,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drfuse", allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default="config.yaml",
        help="configuration file (default: config.yaml); a partial one, holding only the settings that change (like "
        f"`snakemake --configfile`), is merged over the project's config.yaml ({config_mod.PROJECT_CONFIG})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_model_commands(sub)
    _add_report_commands(sub)
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
    except UserError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # a folder that cannot be written, a disk that is full, a missing file
        where = exc.filename if exc.filename is not None else "(no path)"
        log.error("%s: %s (check the path, its permissions and free space)", where, exc.strerror or exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
