# Decode the cohort's chest X-rays once into a uint8 cache; unreadable files are reported.


rule images:
    input:
        stays=rules.cohort.output.stays,
        cxr_root=ancient(MIMIC_CXR_DIR),
    output:
        cache=R / "images" / "cxr.u8",
        index=R / "images" / "index.parquet",
        bad=R / "images" / "bad_images.csv",
    params:
        settings=CFG["images"],
        out=R / "images",
    conda:
        CONDA_ENV
    log:
        R / "logs" / "images.log",
    benchmark:
        R / "benchmarks" / "images.tsv"
    threads: workflow.cores
    shell:
        "{DRFUSE} images --stays {input.stays} --cxr-root {input.cxr_root} --out {params.out} > {log} 2>&1"
