"""Rule knn: kNN classification error on a trained model's encoder means."""

from evae.evaluate.knn import knn_probe
from evae.pipeline_job import pipeline_job

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    knn_probe(snakemake.input.run, snakemake.output[0], ks=tuple(snakemake.params.ks))  # noqa: F821
