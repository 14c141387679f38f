"""Rule knn_error_vs_k: kNN test error against k."""

from evae.pipeline_job import pipeline_job
from evae.report.figures import knn_error_vs_k
from evae.study import figure_label

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    budget = figure_label(snakemake.params.profile)  # noqa: F821
    knn_error_vs_k(list(snakemake.input.results), snakemake.output[0], budget=budget)  # noqa: F821
