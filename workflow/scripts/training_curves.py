"""Rule training_curves: validation -ELBO against epoch for every run."""

from evae.pipeline_job import pipeline_job
from evae.report.figures import training_curves
from evae.study import figure_label

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    budget = figure_label(snakemake.params.profile)  # noqa: F821
    training_curves(list(snakemake.input.runs), snakemake.output[0], budget=budget)  # noqa: F821
