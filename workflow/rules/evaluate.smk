# Bootstrap every prediction file with shared resample indices, then tables, figures and report;
# with an answer key, the planted-structure check.
# Tables and the planted-structure check are light: they run on the submit host (localrules). The
# bootstrap and the figures (t-SNE over every test stay) take minutes on MIMIC: cluster jobs.
# Lint: {DRFUSE} as in data.smk.


localrules:
    all,
    tables,
    planted,


rule evaluate:
    """Bootstrap PRAUC / AUROC of every prediction file, on resamples shared between models."""
    input:
        predictions=PREDICTIONS,
    output:
        bootstrap=R / "eval" / "bootstrap.parquet",
        resamples=R / "eval" / "resamples.parquet",
    log:
        R / "logs" / "evaluate.log",
    benchmark:
        R / "benchmarks" / "evaluate.tsv"
    conda:
        CONDA_ENV
    params:
        # what the bootstrap reads: not evaluation.planted (the planted rule's)
        settings={k: v for k, v in CFG["evaluation"].items() if k != "planted"},
    shell:
        "{DRFUSE} evaluate --predictions {input.predictions:q} --out {output.bootstrap:q}"
        " --resamples {output.resamples:q} > {log:q} 2>&1"


rule tables:
    """The paper's Tables 1-4 beside ours, each seed's numbers, the paired comparison, provenance."""
    input:
        bootstrap=rules.evaluate.output.bootstrap,
        resamples=rules.evaluate.output.resamples,
        stays=rules.cohort.output.stays,
        attrition=rules.cohort.output.attrition,
        manifest=rules.ingest.output.manifest,
        images=rules.images.output.cache,
        image_index=rules.images.output.index,
        bad_images=rules.images.output.bad,
    output:
        **table_outputs(),
    log:
        R / "logs" / "tables.log",
    benchmark:
        R / "benchmarks" / "tables.tsv"
    conda:
        CONDA_ENV
    params:
        # the phenotyping tables' settings: not those of the tasks or the mortality runs
        experiments={
            k: v
            for k, v in CFG["experiments"].items()
            if k not in ("tasks", "mortality")
        },
        results=R,
        out=lambda wildcards, output: Path(output.table1_csv).parent,
    shell:
        "{DRFUSE} tables --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"


rule figures:
    """t-SNE of the representations, attention per disease and PR curves."""
    input:
        predictions=PREDICTIONS,
        representations=[p.replace(".parquet", ".npz") for p in PREDICTIONS],
    output:
        tsne=report(
            R / "figures" / "tsne.png",
            caption="../report/tsne.rst",
            category="Figures",
        ),
        attention=report(
            R / "figures" / "attention.png",
            caption="../report/attention.rst",
            category="Figures",
        ),
        pr_curves=report(
            R / "figures" / "pr_curves.png",
            caption="../report/pr_curves.rst",
            category="Figures",
        ),
    log:
        R / "logs" / "figures.log",
    benchmark:
        R / "benchmarks" / "figures.tsv"
    conda:
        CONDA_ENV
    params:
        tsne_seed=CFG["evaluation"]["seed"],
        results=R,
        out=lambda wildcards, output: Path(output.tsne).parent,
    shell:
        "{DRFUSE} figures --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"


if PLANTED:

    rule planted:
        """What each model learned per modality on data with a planted answer (answer key)."""
        input:
            answer_key=ANSWER_KEY,
            # which modality shows each positive of an inconsistent label: the built-in key's own
            # (another key's, when it has such labels, is read beside its label_groups.csv)
            channels=ANSWER_CHANNELS,
            predictions=PLANTED_PREDICTIONS,
        output:
            csv=report(
                R / "tables" / "planted.csv",
                caption="../report/planted.rst",
                category="Tables",
            ),
            md=R / "tables" / "planted.md",
            figure=report(
                R / "figures" / "planted.png",
                caption="../report/planted.rst",
                category="Figures",
            ),
        log:
            R / "logs" / "planted.log",
        benchmark:
            R / "benchmarks" / "planted.tsv"
        conda:
            CONDA_ENV
        params:
            settings=CFG["evaluation"]["planted"],
            # the intervals of the inconsistent labels' comparisons
            bootstrap={k: CFG["evaluation"][k] for k in ("n_bootstrap", "seed", "ci")},
            tables=lambda wildcards, output: Path(output.csv).parent,
        shell:
            "{DRFUSE} planted --answer-key {input.answer_key:q} --predictions {input.predictions:q}"
            " --tables {params.tables:q} --figure {output.figure:q} > {log:q} 2>&1"
