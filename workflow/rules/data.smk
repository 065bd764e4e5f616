# Data stages: synthetic data (only without MIMIC paths), DuckDB ingest, cohort, features.


if BUILTIN:

    rule synth:
        output:
            mimic_iv=directory(R / "synth" / "mimic-iv"),
            mimic_cxr=directory(R / "synth" / "mimic-cxr-jpg"),
            answer_key=R / "synth" / "answer_key" / "label_groups.csv",
            latent_labels=R / "synth" / "answer_key" / "latent_labels.parquet",
        params:
            settings=CFG["synth"],
            out=R / "synth",
        conda:
            CONDA_ENV
        log:
            R / "logs" / "synth.log",
        benchmark:
            R / "benchmarks" / "synth.tsv"
        shell:
            "{DRFUSE} synth --out {params.out} > {log} 2>&1"


rule ingest:
    input:
        mimic_iv=ancient(MIMIC_IV_DIR),
        mimic_cxr=ancient(MIMIC_CXR_DIR),
    output:
        db=R / "mimiciv.duckdb",
        manifest=R / "ingest" / "manifest.json",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "ingest.log",
    benchmark:
        R / "benchmarks" / "ingest.tsv"
    resources:
        mem_mb=16000,
    shell:
        "{DRFUSE} ingest --mimic-iv {input.mimic_iv} --mimic-cxr {input.mimic_cxr}"
        " --db {output.db} --manifest {output.manifest} > {log} 2>&1"


rule cohort:
    input:
        db=rules.ingest.output.db,
    output:
        stays=R / "cohort" / "stays.parquet",
        attrition=R / "cohort" / "attrition.csv",
        label_mapping=R / "cohort" / "label_mapping.json",
    params:
        cohort=CFG["cohort"],
        split=CFG["split"],
        out=R / "cohort",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "cohort.log",
    benchmark:
        R / "benchmarks" / "cohort.tsv"
    shell:
        "{DRFUSE} cohort --db {input.db} --out {params.out} > {log} 2>&1"


rule features:
    input:
        db=rules.ingest.output.db,
        stays=rules.cohort.output.stays,
    output:
        hourly=R / "features" / "hourly.parquet",
        ehr=R / "features" / "ehr.npy",
        index=R / "features" / "index.parquet",
        normalizer=R / "features" / "normalizer.json",
        counts=R / "features" / "counts.json",
    params:
        hours=CFG["cohort"]["hours"],
        settings=CFG["features"],
        out=R / "features",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "features.log",
    benchmark:
        R / "benchmarks" / "features.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
    shell:
        "{DRFUSE} features --db {input.db} --stays {input.stays} --out {params.out} > {log} 2>&1"
