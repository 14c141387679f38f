"""Rule unconditional_samples: prior samples of every trained prior, side by side."""

from evae.pipeline_job import pipeline_job
from evae.report.figures import unconditional_samples
from evae.study import figure_label

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    unconditional_samples(list(snakemake.input.runs), snakemake.output[0], seed=p.seed,  # noqa: F821
                          budget=figure_label(p.profile))
