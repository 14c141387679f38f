"""Rule prepare_data: verify (or fetch) one dataset and record what was found (with its checksum record, as
every output of the pipeline)."""

from evae.checksums import write_json
from evae.data import load_dataset
from evae.pipeline_job import pipeline_job

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    data = load_dataset(snakemake.wildcards.dataset)  # noqa: F821
    write_json(snakemake.output[0], {"name": data.name, "sizes": data.sizes(), **data.provenance})  # noqa: F821
