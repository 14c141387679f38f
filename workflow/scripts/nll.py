"""Rule nll: importance-weighted test NLL of one trained model."""

from evae.evaluate.nll import evaluate_nll
from evae.pipeline_job import pipeline_job

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    evaluate_nll(
        snakemake.input.run,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        samples=p.samples,
        exemplar_bound=p.exemplar_bound,
        max_images=p.max_images,
        progress=False,
    )
