# Data stages: synthetic data (only without MIMIC paths), DuckDB ingest, cohort, features.
#
# Lint: every rule's shell starts with {DRFUSE}, the command prefix (interpreter, package path and
# the resolved config file, see common.smk). It is kept out of params on purpose: the config
# file's name changes with any setting, and params decide what re-runs (settings that change a
# stage's results are its params).


if BUILTIN:

    rule synth:
        """The built-in MIMIC-shaped synthetic data and its answer key (only without MIMIC paths)."""
        output:
            mimic_iv=directory(R / "synth" / "mimic-iv"),
            mimic_cxr=directory(R / "synth" / "mimic-cxr-jpg"),
            answer_key=R / "synth" / "answer_key" / "label_groups.csv",
            latent_labels=R / "synth" / "answer_key" / "latent_labels.parquet",
            channels=R / "synth" / "answer_key" / "channels.parquet",
            mortality=R / "synth" / "answer_key" / "mortality.csv",
            mortality_evidence=R / "synth" / "answer_key" / "mortality_evidence.parquet",
        log:
            R / "logs" / "synth.log",
        benchmark:
            R / "benchmarks" / "synth.tsv"
        conda:
            CONDA_ENV
        # processes drawing the images (the output does not depend on them)
        threads: workflow.cores
        params:
            settings=CFG["synth"],
            out=lambda wildcards, output: Path(output.mimic_iv).parent,
        shell:
            "{DRFUSE} synth --out {params.out:q} --threads {threads} > {log:q} 2>&1"


rule ingest:
    """Load MIMIC-IV (and MIMIC-CXR-JPG's metadata) into one DuckDB file; detect the release."""
    input:
        mimic_iv=ancient(MIMIC_IV_DIR),
        mimic_cxr=ancient(MIMIC_CXR_DIR),
    output:
        db=R / "mimiciv.duckdb",
        manifest=R / "ingest" / "manifest.json",
    log:
        R / "logs" / "ingest.log",
    benchmark:
        R / "benchmarks" / "ingest.tsv"
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        mem_mb=16000,
    params:
        # each MIMIC file's size and mtime: one changed, added or removed in place re-runs ingest
        # (the folders are ancient(), their mtimes say nothing about the files in them); the
        # built-in data's files are the synth rule's outputs, which Snakemake tracks itself
        sources={} if BUILTIN else source_files(MIMIC_IV_DIR, MIMIC_CXR_DIR),
    shell:
        "{DRFUSE} ingest --mimic-iv {input.mimic_iv:q} --mimic-cxr {input.mimic_cxr:q}"
        " --db {output.db:q} --manifest {output.manifest:q}"
        " --threads {threads} --memory-mb {resources.mem_mb} > {log:q} 2>&1"


rule cohort:
    """The cohort: stays, 25 phenotype labels, CXR match, split, attrition; the CXR files it needs."""
    input:
        db=rules.ingest.output.db,
    output:
        stays=R / "cohort" / "stays.parquet",
        attrition=R / "cohort" / "attrition.csv",
        label_mapping=R / "cohort" / "label_mapping.json",
        cxr_files=R / "cohort" / "cxr_files.txt",
        split=R / "cohort" / "split.json",
        # computed from the cohort's diagnoses, so it is there before any training
        label_modes=report(
            R / "tables" / "label_modes.csv",
            caption="../report/label_modes.rst",
            category="Tables",
        ),
        label_modes_md=R / "tables" / "label_modes.md",
        label_modes_tex=R / "tables" / "label_modes.tex",
    log:
        R / "logs" / "cohort.log",
    benchmark:
        R / "benchmarks" / "cohort.tsv"
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        mem_mb=8000,
    params:
        cohort=drfuse_config.result_settings(CFG, "cohort"),
        split=drfuse_config.result_settings(CFG, "split"),
        out=lambda wildcards, output: Path(output.stays).parent,
        tables=lambda wildcards, output: Path(output.label_modes).parent,
    shell:
        "{DRFUSE} cohort --db {input.db:q} --out {params.out:q} --tables {params.tables:q}"
        " --threads {threads} --memory-mb {resources.mem_mb} > {log:q} 2>&1"


rule features:
    """The 17 variables binned hourly over the first 48 hours, then the 48 x 76 model input."""
    input:
        db=rules.ingest.output.db,
        stays=rules.cohort.output.stays,
    output:
        hourly=R / "features" / "hourly.parquet",
        ehr=R / "features" / "ehr.npy",
        index=R / "features" / "index.parquet",
        normalizer=R / "features" / "normalizer.json",
        counts=R / "features" / "counts.json",
    log:
        R / "logs" / "features.log",
    benchmark:
        R / "benchmarks" / "features.tsv"
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        mem_mb=8000,
    params:
        hours=CFG["cohort"]["hours"],
        settings=drfuse_config.result_settings(CFG, "features"),
        out=lambda wildcards, output: Path(output.ehr).parent,
    shell:
        "{DRFUSE} features --db {input.db:q} --stays {input.stays:q} --out {params.out:q}"
        " --threads {threads} --memory-mb {resources.mem_mb} > {log:q} 2>&1"
