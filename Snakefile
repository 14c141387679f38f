# The Exemplar VAE reproduction; the workflow lives in workflow/ and README.md lists its targets.
# (Snakemake takes the default target only from this file, so `all` is defined here.)


include: "workflow/Snakefile"


localrules:
    all,


rule all:
    """Every table and figure of the study, and the evaluations they are compiled from: asked for here, an evaluation
    a committed study's config gains is made, and the tables and figures that list it with it (common.smk: kept)."""
    input:
        STUDY.all_targets(),
        STUDY.nll_targets(),
        STUDY.knn_targets(),
        STUDY.augmentation_targets(),
