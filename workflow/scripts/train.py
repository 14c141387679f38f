"""Rule train: train one model into its run folder (resuming from its checkpoint if one exists)."""

from pathlib import Path

from evae.config import TrainConfig
from evae.pipeline_job import pipeline_job
from evae.train.trainer import train

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    cfg = TrainConfig.from_dict(snakemake.params.config)  # noqa: F821
    train(cfg, Path(snakemake.output.summary).parent, progress=False)  # noqa: F821
