# DrFuse workflow: raw MIMIC-IV + MIMIC-CXR-JPG (or the built-in synthetic data) -> the paper's
# Tables 1-4, figures and a report. Every rule is a thin call of one `drfuse` subcommand; the
# stages and the files between them are described in docs/architecture.md. The configuration is
# checked against workflow/schemas/config.schema.yaml in common.smk (drfuse.config, shared with
# the CLI).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# `container:` (config.yaml) names the image for `--sdm apptainer`; see README.
container: config.get("container") or None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/mortality.smk"
include: "workflow/rules/targets.smk"


rule all:
    """Everything of experiments.tasks: Tables 1-4, seeds, paired comparison, figures, planted check; mortality's table."""
    default_target: True
    input:
        FINAL_OUTPUTS,
