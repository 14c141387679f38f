"""Rule model_figure: one figure drawn from a trained exemplar model."""

from pathlib import Path

from evae.pipeline_job import pipeline_job
from evae.report import figures

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    p, figure = snakemake.params, snakemake.wildcards.figure  # noqa: F821
    run_dir, out = Path(snakemake.input.run).parent, snakemake.output[0]  # noqa: F821
    extra = {"tsne": {"points": p.tsne_points}, "prior_comparison": {"ks": p.ks}}.get(figure, {})
    getattr(figures, figure)(run_dir, out, seed=p.seed, profile=p.profile, **extra)
