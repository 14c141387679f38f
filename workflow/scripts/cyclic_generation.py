"""Rule cyclic_generation: chains of exemplar-conditioned generation from uniform noise."""

from evae.pipeline_job import pipeline_job
from evae.report.figures import cyclic_generation
from evae.study import figure_label

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    cyclic_generation(snakemake.input.run, snakemake.output[0], seed=p.seed,  # noqa: F821
                      budget=figure_label(p.profile))
