# In-hospital mortality (experiments.tasks: mortality), MedFuse's second task: its cohort, DrFuse's
# image warm-up on it, its training runs (each predicting its test sets), the bootstrap, the table,
# the attention figure and, with an answer key, the planted check. Its runs live under
# results/mortality/ (train/, predict/, warmup/, eval/), its table and figure beside the
# phenotyping ones. These rules are the phenotyping rules' twins, not the same rules with a task
# wildcard: the phenotyping rules, their paths and params stay as they were, so turning the task on
# or off re-runs nothing of phenotyping, and neither task waits for the other's jobs. A model's
# settings are the same params here, so a changed setting re-trains its runs of both tasks.
# Lint: {DRFUSE} as in data.smk.

MORTALITY_DIR = R / "mortality"
MORTALITY_RUN_DIR = MORTALITY_DIR / "train" / "{model}" / "{train_set}" / "seed{seed}"
MORTALITY_PREDICT_DIR = (
    MORTALITY_DIR / "predict" / "{model}" / "{train_set}" / "seed{seed}"
)
MORTALITY_WARMUP_DIR = MORTALITY_DIR / "warmup" / "seed{seed}"
MORTALITY_PREDICTIONS = [str(R / p) for p in prediction_targets(CFG, "mortality")]

# The planted check of the task: the answer key's mortality.csv (the built-in data's own, or one
# beside data.answer_key's label_groups.csv), on the runs trained and tested on the same set.
if CFG["data"].get("answer_key"):
    MORTALITY_KEY = Path(CFG["data"]["answer_key"]).parent / "mortality.csv"
    MORTALITY_KEY = MORTALITY_KEY if MORTALITY_KEY.is_file() else None
elif BUILTIN:
    MORTALITY_KEY = R / "synth" / "answer_key" / "mortality.csv"
else:
    MORTALITY_KEY = None
MORTALITY_PLANTED_PREDICTIONS = [
    p for p in MORTALITY_PREDICTIONS if Path(p).parts[-3] == Path(p).stem
]


if "mortality" in TASKS:

    # light: on the submit host, as the phenotyping tables and planted check
    localrules:
        tables_mortality,

    rule mortality_cohort:
        """The in-hospital mortality cohort and label: the cohort's stays of at least cohort.hours."""
        input:
            db=rules.ingest.output.db,
            stays=rules.cohort.output.stays,
        output:
            cohort=R / "cohort" / "mortality.parquet",
            attrition=R / "cohort" / "mortality_attrition.csv",
        log:
            R / "logs" / "mortality_cohort.log",
        benchmark:
            R / "benchmarks" / "mortality_cohort.tsv"
        conda:
            CONDA_ENV
        threads: workflow.cores
        resources:
            mem_mb=8000,
        params:
            hours=CFG["cohort"]["hours"],
            out=lambda wildcards, output: Path(output.cohort).parent,
        shell:
            "{DRFUSE} mortality-cohort --db {input.db:q} --stays {input.stays:q} --out {params.out:q}"
            " --threads {threads} --memory-mb {resources.mem_mb} > {log:q} 2>&1"

    MORTALITY_TRAIN_INPUTS = dict(
        **TRAIN_INPUTS, mortality=rules.mortality_cohort.output.cohort
    )

    rule warmup_mortality:
        """DrFuse's image warm-up on the mortality label, once per seed (results/mortality/warmup/seed{n}/)."""
        input:
            **MORTALITY_TRAIN_INPUTS,
        output:
            warmup=MORTALITY_WARMUP_DIR / "warmup.pt",
            metrics=MORTALITY_WARMUP_DIR / "metrics.csv",
        log:
            R / "logs" / "mortality" / "warmup" / "seed{seed}.log",
        benchmark:
            R / "benchmarks" / "mortality" / "warmup" / "seed{seed}.tsv"
        priority: WARMUP_PRIORITY
        conda:
            CONDA_ENV
        threads: TRAIN_THREADS
        resources:
            gpu=gpus("drfuse"),
            mem_mb=16000,
            runtime=600,
        params:
            settings=warmup_settings(*resolve_run("drfuse", CFG)),
            results=R,
            out=lambda wildcards, output: Path(output.warmup).parent,
        shell:
            "OMP_NUM_THREADS={threads} {DRFUSE} warmup --task mortality --seed {wildcards.seed} --results {params.results:q}"
            " --out {params.out:q} --threads {threads} --gpus {resources.gpu} > {log:q} 2>&1"

    rule train_mortality:
        """Train one model on in-hospital mortality (one training set and seed), then predict both test sets."""
        input:
            unpack(mortality_warm_start),
            **MORTALITY_TRAIN_INPUTS,
        output:
            best=MORTALITY_RUN_DIR / "best.pt",
            metrics=MORTALITY_RUN_DIR / "metrics.csv",
            run=MORTALITY_RUN_DIR / "run.json",
            full=MORTALITY_PREDICT_DIR / "full.parquet",
            full_representations=MORTALITY_PREDICT_DIR / "full.npz",
            matched=MORTALITY_PREDICT_DIR / "matched.parquet",
            matched_representations=MORTALITY_PREDICT_DIR / "matched.npz",
        log:
            R / "logs" / "mortality" / "train" / "{model}.{train_set}.seed{seed}.log",
        benchmark:
            R
            / "benchmarks"
            / "mortality"
            / "train"
            / "{model}.{train_set}.seed{seed}.tsv"
        wildcard_constraints:
            model=EHR_RUN,
        priority: lambda wildcards: run_priority(wildcards.model, wildcards.train_set)
        conda:
            CONDA_ENV
        threads: TRAIN_THREADS
        resources:
            gpu=lambda wildcards: gpus(wildcards.model),
            mem_mb=16000,
            runtime=600,
        params:
            # the model's settings, as the phenotyping run's: a changed setting re-trains both tasks' runs
            settings=lambda wildcards: run_params(wildcards.model, CFG),
            results=R,
            out=lambda wildcards, output: Path(output.best).parent,
            predict_dir=lambda wildcards, output: Path(output.matched).parent,
            test_sets=" ".join(TEST_SETS),
            warm_start=lambda wildcards, input: (
                f"--warm-start {shlex.quote(input.warmup)}"
                if "warmup" in input.keys()
                else ""
            ),
        shell:
            "OMP_NUM_THREADS={threads} {DRFUSE} train --task mortality --model {wildcards.model}"
            " --train-set {wildcards.train_set} --seed {wildcards.seed} --results {params.results:q} --out {params.out:q}"
            " --predict-dir {params.predict_dir:q} --test-set {params.test_sets} {params.warm_start}"
            " --threads {threads} --gpus {resources.gpu} > {log:q} 2>&1"

    use rule train_mortality as train_image_only_mortality with:
        """Train an image-only model (ResNet50) on in-hospital mortality, matched set; predict the matched test set."""
        output:
            best=MORTALITY_RUN_DIR / "best.pt",
            metrics=MORTALITY_RUN_DIR / "metrics.csv",
            run=MORTALITY_RUN_DIR / "run.json",
            matched=MORTALITY_PREDICT_DIR / "matched.parquet",
            matched_representations=MORTALITY_PREDICT_DIR / "matched.npz",
        wildcard_constraints:
            model=IMAGE_ONLY_RUN,
        params:
            settings=lambda wildcards: run_params(wildcards.model, CFG),
            results=R,
            out=lambda wildcards, output: Path(output.best).parent,
            predict_dir=lambda wildcards, output: Path(output.matched).parent,
            test_sets="matched",

    rule evaluate_mortality:
        """Bootstrap AUPRC / AUROC of every in-hospital mortality prediction file, on shared resamples."""
        input:
            predictions=MORTALITY_PREDICTIONS,
        output:
            bootstrap=MORTALITY_DIR / "eval" / "bootstrap.parquet",
            resamples=MORTALITY_DIR / "eval" / "resamples.parquet",
        log:
            R / "logs" / "mortality" / "evaluate.log",
        benchmark:
            R / "benchmarks" / "mortality" / "evaluate.tsv"
        conda:
            CONDA_ENV
        params:
            # what the bootstrap reads: not evaluation.planted (the planted rules')
            settings={k: v for k, v in CFG["evaluation"].items() if k != "planted"},
        shell:
            "{DRFUSE} evaluate --predictions {input.predictions:q} --out {output.bootstrap:q}"
            " --resamples {output.resamples:q} > {log:q} 2>&1"

    rule tables_mortality:
        """In-hospital mortality: AUROC and AUPRC of every run beside MedFuse's, and DrFuse minus each (paired)."""
        input:
            bootstrap=rules.evaluate_mortality.output.bootstrap,
            resamples=rules.evaluate_mortality.output.resamples,
            cohort=rules.mortality_cohort.output.cohort,
            stays=rules.cohort.output.stays,
            manifest=rules.ingest.output.manifest,
            image_index=rules.images.output.index,
            bad_images=rules.images.output.bad,
        output:
            csv=report(
                R / "tables" / "mortality.csv",
                caption="../report/mortality.rst",
                category="Tables",
            ),
            md=R / "tables" / "mortality.md",
            tex=R / "tables" / "mortality.tex",
            paired_csv=R / "tables" / "mortality_paired.csv",
            paired_md=R / "tables" / "mortality_paired.md",
        log:
            R / "logs" / "mortality" / "tables.log",
        benchmark:
            R / "benchmarks" / "mortality" / "tables.tsv"
        conda:
            CONDA_ENV
        params:
            experiments={
                k: CFG["experiments"][k]
                for k in ("seeds", "recipes", "select_on", "mortality")
            },
            results=R,
            out=lambda wildcards, output: Path(output.csv).parent,
        shell:
            "{DRFUSE} tables --task mortality --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"

    rule figures_mortality:
        """DrFuse's attention on in-hospital mortality, its one disease (figures/attention_mortality.png)."""
        input:
            predictions=MORTALITY_PREDICTIONS,
        output:
            attention=report(
                R / "figures" / "attention_mortality.png",
                caption="../report/attention_mortality.rst",
                category="Figures",
            ),
        log:
            R / "logs" / "mortality" / "figures.log",
        benchmark:
            R / "benchmarks" / "mortality" / "figures.tsv"
        conda:
            CONDA_ENV
        params:
            results=R,
            out=lambda wildcards, output: Path(output.attention).parent,
        shell:
            "{DRFUSE} figures --task mortality --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"

    FINAL_OUTPUTS += [
        *rules.tables_mortality.output,
        *rules.figures_mortality.output,
    ]
    if MORTALITY_KEY is not None and MORTALITY_PLANTED_PREDICTIONS:

        localrules:
            planted_mortality,

        rule planted_mortality:
            """What each model learned of in-hospital mortality on data with a planted answer (answer key)."""
            input:
                answer_key=MORTALITY_KEY,
                predictions=MORTALITY_PLANTED_PREDICTIONS,
            output:
                csv=report(
                    R / "tables" / "planted_mortality.csv",
                    caption="../report/planted_mortality.rst",
                    category="Tables",
                ),
                md=R / "tables" / "planted_mortality.md",
            log:
                R / "logs" / "mortality" / "planted.log",
            benchmark:
                R / "benchmarks" / "mortality" / "planted.tsv"
            conda:
                CONDA_ENV
            params:
                settings=CFG["evaluation"]["planted"],
                tables=lambda wildcards, output: Path(output.csv).parent,
            shell:
                "{DRFUSE} planted --task mortality --answer-key {input.answer_key:q} --predictions {input.predictions:q}"
                " --tables {params.tables:q} > {log:q} 2>&1"

        FINAL_OUTPUTS += [*rules.planted_mortality.output]
