# Train one model on one training set and seed (one GPU each), then predict both test sets.

# CPU threads of one training job: `train.num_threads`, else up to 4. With small models on a
# laptop, two one-thread jobs side by side beat one two-thread job.
TRAIN_THREADS = CFG["train"]["num_threads"] or min(4, workflow.cores)

TRAIN_INPUTS = dict(
    stays=rules.cohort.output.stays,
    ehr=rules.features.output.ehr,
    feature_index=rules.features.output.index,
    images=rules.images.output.cache,
    image_index=rules.images.output.index,
)


def run_settings(wildcards):
    """The settings a run depends on: a change re-trains only the runs it touches."""
    from drfuse.experiments import resolve_run

    _, cfg = resolve_run(wildcards.model, CFG)
    return {"model": cfg["model"], "train": cfg["train"]}


rule train:
    input:
        **TRAIN_INPUTS,
    output:
        best=R / "train" / "{model}" / "{train_set}" / "seed{seed}" / "best.pt",
        metrics=R / "train" / "{model}" / "{train_set}" / "seed{seed}" / "metrics.csv",
        run=R / "train" / "{model}" / "{train_set}" / "seed{seed}" / "run.json",
    params:
        settings=run_settings,
        out=lambda wc: R / "train" / wc.model / wc.train_set / f"seed{wc.seed}",
    wildcard_constraints:
        train_set="full|matched",
        seed=r"\d+",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "train" / "{model}.{train_set}.seed{seed}.log",
    benchmark:
        R / "benchmarks" / "train" / "{model}.{train_set}.seed{seed}.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=600,
    shell:
        "OMP_NUM_THREADS={threads} {DRFUSE} train --model {wildcards.model} --train-set {wildcards.train_set}"
        " --seed {wildcards.seed} --results {R} --out {params.out} > {log} 2>&1"


rule predict:
    input:
        **TRAIN_INPUTS,
        best=rules.train.output.best,
        run=rules.train.output.run,
    output:
        predictions=R / "predict" / "{model}" / "{train_set}" / "seed{seed}" / "{test_set}.parquet",
        representations=R / "predict" / "{model}" / "{train_set}" / "seed{seed}" / "{test_set}.npz",
    params:
        run=lambda wc: R / "train" / wc.model / wc.train_set / f"seed{wc.seed}",
    wildcard_constraints:
        train_set="full|matched",
        test_set="full|matched",
        seed=r"\d+",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "predict" / "{model}.{train_set}.seed{seed}.{test_set}.log",
    benchmark:
        R / "benchmarks" / "predict" / "{model}.{train_set}.seed{seed}.{test_set}.tsv"
    # mostly process start-up and one pass over the test set: one thread, so predictions overlap
    threads: 1
    resources:
        gpu=1,
    shell:
        "OMP_NUM_THREADS={threads} {DRFUSE} predict --run {params.run} --test-set {wildcards.test_set}"
        " --results {R} --out {output.predictions} > {log} 2>&1"
