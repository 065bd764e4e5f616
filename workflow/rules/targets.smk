# Named targets: `snakemake --cores all table2` builds Table 2 and everything it needs; `snakemake
# --list-rules` lists them with the stages. They name outputs of the rules above and run nothing
# themselves. One rule (tables) writes every table, so any table target builds all four. `planted`
# is the planted-structure rule itself (evaluate.smk), present with an answer key.


localrules:
    table1,
    table2,
    table3,
    table4,
    predictions,
    report,


rule table1:
    """Table 1: stays per split, full dataset and matched subset (results/tables/table1.*)."""
    input:
        expand(R / "tables" / "table1.{ext}", ext=("csv", "md", "tex")),


rule table2:
    """Table 2: macro PRAUC of every model, training set and test set (results/tables/table2.*)."""
    input:
        expand(R / "tables" / "table2.{ext}", ext=("csv", "md", "tex")),


rule table3:
    """Table 3: PRAUC per label on the matched test set (results/tables/table3.*)."""
    input:
        expand(R / "tables" / "table3.{ext}", ext=("csv", "md", "tex")),


rule table4:
    """Table 4: the ablations beside DrFuse (results/tables/table4.*)."""
    input:
        expand(R / "tables" / "table4.{ext}", ext=("csv", "md", "tex")),


rule predictions:
    """Every training run and its test-set predictions, nothing evaluated (results/predict/, results/mortality/predict/)."""
    input:
        PREDICTIONS if "phenotyping" in TASKS else [],
        MORTALITY_PREDICTIONS,


rule report:
    """Everything the HTML report bundles; then `snakemake --report results/report.html` writes it."""
    input:
        FINAL_OUTPUTS,
