# Decode the cohort's chest X-rays once into a uint8 cache; unreadable files are reported, and too
# many of them (an incomplete download) fail the stage. Lint: {DRFUSE} as in data.smk.


rule images:
    """Decode the cohort's chest X-rays once into a uint8 cache; list the unreadable ones."""
    input:
        stays=rules.cohort.output.stays,
        cxr_root=ancient(MIMIC_CXR_DIR),
    output:
        cache=R / "images" / "cxr.u8",
        index=R / "images" / "index.parquet",
        bad=R / "images" / "bad_images.csv",
    log:
        R / "logs" / "images.log",
    benchmark:
        R / "benchmarks" / "images.tsv"
    conda:
        CONDA_ENV
    threads: workflow.cores
    params:
        settings=drfuse_config.result_settings(CFG, "images"),
        out=lambda wildcards, output: Path(output.cache).parent,
    shell:
        "{DRFUSE} images --stays {input.stays:q} --cxr-root {input.cxr_root:q} --out {params.out:q}"
        " --threads {threads} > {log:q} 2>&1"
