"""Rule claims: test the paper's claims on the study's evaluation results, as CSV and Markdown."""

from evae.io import write_text
from evae.pipeline_job import pipeline_job
from evae.report.claims import compile_claims, to_markdown

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    results = {kind: list(snakemake.input[kind]) for kind in snakemake.params.kinds}  # noqa: F821
    claims = compile_claims(results, snakemake.input.reported, snakemake.params.profile)  # noqa: F821
    write_text(snakemake.output.csv, claims.to_csv(index=False))  # noqa: F821
    write_text(snakemake.output.md, to_markdown(claims, snakemake.params.profile))  # noqa: F821
