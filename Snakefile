# DrFuse workflow: raw MIMIC-IV + MIMIC-CXR-JPG (or the built-in synthetic data) -> the paper's
# Tables 1-4, figures and a report. Every rule is a thin call of one `drfuse` subcommand; the
# stages and the files between them are described in docs/architecture.md.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        FINAL_OUTPUTS,
    default_target: True
