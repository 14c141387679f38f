# The Exemplar VAE reproduction; the workflow lives in workflow/ and README.md lists its targets.
# (Snakemake takes the default target only from this file, so `all` is defined here.)


include: "workflow/Snakefile"


localrules:
    all,


rule all:
    """Every table and figure of the study."""
    input:
        STUDY.all_targets(),
