"""Rule unconditional_samples: prior samples of every trained prior, side by side."""

from pathlib import Path

from evae.pipeline_job import pipeline_job
from evae.report.figures import unconditional_samples

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    runs = [Path(p).parent for p in snakemake.input.runs]  # noqa: F821
    unconditional_samples(runs, snakemake.output[0], seed=snakemake.params.seed, profile=snakemake.params.profile)  # noqa: F821
