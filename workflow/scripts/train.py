"""Rule train: train one model into its run folder (resuming from its checkpoint if one exists)."""

from evae.config import TrainConfig
from evae.pipeline_job import pipeline_job
from evae.runs import run_folder
from evae.train.trainer import train

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    cfg = TrainConfig.from_dict(snakemake.params.config)  # noqa: F821
    train(cfg, run_folder(snakemake.output.summary), progress=False)  # noqa: F821
