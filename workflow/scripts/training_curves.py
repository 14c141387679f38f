"""Rule training_curves: validation -ELBO against epoch for every run."""

from evae.pipeline_job import pipeline_job
from evae.report.figures import training_curves

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    training_curves(list(snakemake.input.runs), snakemake.output[0], profile=snakemake.params.profile)  # noqa: F821
