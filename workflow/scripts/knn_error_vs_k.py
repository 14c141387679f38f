"""Rule knn_error_vs_k: kNN test error against k."""

from evae.pipeline_job import pipeline_job
from evae.report.figures import knn_error_vs_k

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    knn_error_vs_k(list(snakemake.input.results), snakemake.output[0], profile=snakemake.params.profile)  # noqa: F821
