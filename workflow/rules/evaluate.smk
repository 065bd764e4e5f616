# Bootstrap every prediction file with shared resample indices, then tables, figures and report;
# with an answer key, the planted-structure check.


rule evaluate:
    input:
        predictions=PREDICTIONS,
    output:
        bootstrap=R / "eval" / "bootstrap.parquet",
        resamples=R / "eval" / "resamples.parquet",
    params:
        settings=CFG["evaluation"],
    conda:
        CONDA_ENV
    log:
        R / "logs" / "evaluate.log",
    benchmark:
        R / "benchmarks" / "evaluate.tsv"
    shell:
        "{DRFUSE} evaluate --predictions {input.predictions} --out {output.bootstrap}"
        " --resamples {output.resamples} > {log} 2>&1"


rule tables:
    input:
        bootstrap=rules.evaluate.output.bootstrap,
        resamples=rules.evaluate.output.resamples,
        stays=rules.cohort.output.stays,
        attrition=rules.cohort.output.attrition,
        image_index=rules.images.output.index,
    output:
        **{
            f"table{i}_{ext}": report(
                R / "tables" / f"table{i}.{ext}",
                caption=f"../report/table{i}.rst",
                category="Tables",
            )
            if ext == "csv"
            else R / "tables" / f"table{i}.{ext}"
            for i in (1, 2, 3, 4)
            for ext in ("csv", "md", "tex")
        },
        seeds_csv=report(R / "tables" / "seeds.csv", caption="../report/seeds.rst", category="Tables"),
        seeds_md=R / "tables" / "seeds.md",
        paired_csv=report(R / "tables" / "paired.csv", caption="../report/paired.rst", category="Tables"),
        paired_md=R / "tables" / "paired.md",
        **({"grid": R / "tables" / "grid_search.csv"} if CFG["experiments"]["grid_search"]["enabled"] else {}),
    params:
        experiments=CFG["experiments"],
        out=R / "tables",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "tables.log",
    benchmark:
        R / "benchmarks" / "tables.tsv"
    shell:
        "{DRFUSE} tables --results {R} --out {params.out} > {log} 2>&1"


rule figures:
    input:
        predictions=PREDICTIONS,
        representations=[p.replace(".parquet", ".npz") for p in PREDICTIONS],
    output:
        tsne=report(R / "figures" / "tsne.png", caption="../report/tsne.rst", category="Figures"),
        attention=report(R / "figures" / "attention.png", caption="../report/attention.rst", category="Figures"),
        pr_curves=report(R / "figures" / "pr_curves.png", caption="../report/pr_curves.rst", category="Figures"),
    params:
        out=R / "figures",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "figures.log",
    benchmark:
        R / "benchmarks" / "figures.tsv"
    shell:
        "{DRFUSE} figures --results {R} --out {params.out} > {log} 2>&1"


if PLANTED:

    rule planted:
        input:
            answer_key=ANSWER_KEY,
            predictions=PLANTED_PREDICTIONS,
        output:
            csv=report(R / "tables" / "planted.csv", caption="../report/planted.rst", category="Tables"),
            md=R / "tables" / "planted.md",
            figure=report(R / "figures" / "planted.png", caption="../report/planted.rst", category="Figures"),
        params:
            settings=CFG["evaluation"]["planted"],
            tables=R / "tables",
        conda:
            CONDA_ENV
        log:
            R / "logs" / "planted.log",
        benchmark:
            R / "benchmarks" / "planted.tsv"
        shell:
            "{DRFUSE} planted --answer-key {input.answer_key} --predictions {input.predictions}"
            " --tables {params.tables} --figure {output.figure} > {log} 2>&1"
