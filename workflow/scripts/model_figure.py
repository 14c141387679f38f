"""Rule model_figure: one figure drawn from a trained exemplar model."""

from evae.pipeline_job import pipeline_job
from evae.report import figures
from evae.study import figure_label

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    p, figure = snakemake.params, snakemake.wildcards.figure  # noqa: F821
    extra = {"tsne": {"points": p.tsne_points}, "prior_comparison": {"ks": p.ks}}.get(figure, {})
    getattr(figures, figure)(snakemake.input.run, snakemake.output[0], seed=p.seed,  # noqa: F821
                             budget=figure_label(p.profile), **extra)
