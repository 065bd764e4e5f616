# Train one model on one training set and seed, then predict its test sets with the best checkpoint
# in the same job: a separate prediction job would import torch again and, on a cluster, be a second
# GPU job per run for seconds of work (docs/performance.md). `drfuse predict` re-predicts a finished
# run by hand.
#
# GPUs: a job that trains on a GPU when there is one (its run's `train.device` is not cpu) declares
# gpu=1 wherever Snakemake counts GPUs: `--resources gpu=N` (command line or profiles/gpu) caps how
# many run at once, and inside a cluster job Snakemake passes the job's own resources the same way.
# Such a job is given a GPU: `--gpus {resources.gpu}` makes it train on CUDA or fail, never silently
# on the CPU. Without a count (`snakemake --cores all`) nothing limits GPU jobs, they declare 0 and
# `train.device: auto` decides (CUDA when it works, else the CPU with a warning in the log), so a
# laptop without a GPU runs the same command (`gpus` in common.smk). A cluster profile asks for the
# GPU itself (profiles/slurm: set-resources gpu: 1). Lint: {DRFUSE} as in data.smk.

# CPU threads of one local training job: `train.num_threads`, else up to 4 (a cluster profile sets
# its own with set-threads). With small models on a laptop, two one-thread jobs side by side beat
# one two-thread job.
TRAIN_THREADS = CFG["train"]["num_threads"] or min(4, workflow.cores)

TRAIN_INPUTS = dict(
    stays=rules.cohort.output.stays,
    ehr=rules.features.output.ehr,
    feature_index=rules.features.output.index,
    images=rules.images.output.cache,
    image_index=rules.images.output.index,
)
RUN_DIR = R / "train" / "{model}" / "{train_set}" / "seed{seed}"
PREDICT_DIR = R / "predict" / "{model}" / "{train_set}" / "seed{seed}"
WARMUP_DIR = R / "warmup" / "seed{seed}"


# DrFuse's image warm-up (train.cxr_warmup_epochs), once per seed: the family's runs with its
# warm-up settings (drfuse.experiments.shares_warmup: in the default config DrFuse on both
# training sets and the three ablations) start after it (--warm-start), bit-identical to doing
# it themselves, instead of each repeating it.
rule warmup:
    """DrFuse's image warm-up, once per seed for the family's runs (results/warmup/seed{n}/)."""
    input:
        **TRAIN_INPUTS,
    output:
        warmup=WARMUP_DIR / "warmup.pt",
        metrics=WARMUP_DIR / "metrics.csv",
    log:
        R / "logs" / "warmup" / "seed{seed}.log",
    benchmark:
        R / "benchmarks" / "warmup" / "seed{seed}.tsv"
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
        "OMP_NUM_THREADS={threads} {DRFUSE} warmup --seed {wildcards.seed} --results {params.results:q}"
        " --out {params.out:q} --threads {threads} --gpus {resources.gpu} > {log:q} 2>&1"


rule train:
    """Train one model on one training set and seed, then predict both test sets with its best.pt."""
    input:
        unpack(warm_start),
        **TRAIN_INPUTS,
    output:
        best=RUN_DIR / "best.pt",
        metrics=RUN_DIR / "metrics.csv",
        run=RUN_DIR / "run.json",
        full=PREDICT_DIR / "full.parquet",
        full_representations=PREDICT_DIR / "full.npz",
        matched=PREDICT_DIR / "matched.parquet",
        matched_representations=PREDICT_DIR / "matched.npz",
    log:
        R / "logs" / "train" / "{model}.{train_set}.seed{seed}.log",
    benchmark:
        R / "benchmarks" / "train" / "{model}.{train_set}.seed{seed}.tsv"
    wildcard_constraints:
        model=EHR_RUN,
    # the longest runs first (drfuse.experiments.run_priority): no long run left to run alone at the end
    priority: lambda wildcards: run_priority(wildcards.model, wildcards.train_set)
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        gpu=lambda wildcards: gpus(wildcards.model),
        mem_mb=16000,
        runtime=600,
    params:
        # only the settings this run's model declares (drfuse.models.MODELS), per_model and grid
        # points merged in: a changed setting re-trains only the runs that read it
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
        "OMP_NUM_THREADS={threads} {DRFUSE} train --model {wildcards.model} --train-set {wildcards.train_set}"
        " --seed {wildcards.seed} --results {params.results:q} --out {params.out:q}"
        " --predict-dir {params.predict_dir:q} --test-set {params.test_sets} {params.warm_start}"
        " --threads {threads} --gpus {resources.gpu} > {log:q} 2>&1"


# Image-only models see no EHR: the matched test set only.
use rule train as train_image_only with:
    """Train an image-only model (ResNet50) on the matched set and seed; predict the matched test set."""
    output:
        best=RUN_DIR / "best.pt",
        metrics=RUN_DIR / "metrics.csv",
        run=RUN_DIR / "run.json",
        matched=PREDICT_DIR / "matched.parquet",
        matched_representations=PREDICT_DIR / "matched.npz",
    wildcard_constraints:
        model=IMAGE_ONLY_RUN,
    params:
        settings=lambda wildcards: run_params(wildcards.model, CFG),
        results=R,
        out=lambda wildcards, output: Path(output.best).parent,
        predict_dir=lambda wildcards, output: Path(output.matched).parent,
        test_sets="matched",
