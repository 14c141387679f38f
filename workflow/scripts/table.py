"""Rule table: compile one reported-vs-reproduced table as CSV and Markdown."""

from evae.io import write_text
from evae.pipeline_job import pipeline_job
from evae.report.tables import compile_table, to_markdown

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    name, p = snakemake.wildcards.table, snakemake.params  # noqa: F821
    table = compile_table(p.kind, list(snakemake.input.results), snakemake.input.reported, p.profile, name)  # noqa: F821
    write_text(snakemake.output.csv, table.to_csv(index=False))  # noqa: F821
    write_text(snakemake.output.md, to_markdown(table, name, p.profile))  # noqa: F821
