"""Input and params functions shared by the rules (Snakemake's lint wants functions apart from rules)."""

import os

from evae.data.registry import get_spec
from evae.provenance import uses_cuda


def kept(paths):
    """Inputs of a profile whose results are committed to git count as up to date whatever their
    modification times (git keeps none): an existing output is only redone by --forceall or a
    --forcerun of its own rule, or when it is missing; a rerun of the job upstream does not reach it
    (so --forcerun train redoes the trainings alone: to continue a study after raising max_epochs,
    --forceall resumes every run from its checkpoint and redoes the rest). An input that does not exist
    yet (a concrete path, not a rule's pattern) stays an ordinary one, so that a run added to a committed
    study's config is trained, evaluated and brought into the tables that list it (a missing ancient
    input does not make them stale). Other profiles use the modification times as usual."""
    if not COMMITTED:
        return paths
    if isinstance(paths, str):
        pattern = "{" in paths  # a rule's output pattern: its wildcards are filled job by job, so it stays ancient
        return ancient(paths) if pattern or os.path.exists(paths) else paths
    return [kept(p) for p in paths]


def train_config(wildcards):
    """The evae.config.TrainConfig of the run a job's wildcards name."""
    return STUDY.train_config(wildcards.dataset, wildcards.architecture, wildcards.prior, wildcards.seed)


def exemplar_run(wildcards):
    """The trained exemplar model that generates the augmented images (none for the baseline)."""
    if wildcards.augment == "none":
        return []
    return kept(f"{STUDY.run_dir(STUDY.exemplar_model(wildcards.dataset))}/summary.json")


def figure_architecture(wildcards):
    """The architecture a figure is drawn from: the one its file name ends in, else the dataset's first figure
    architecture (Study.figure_path)."""
    return STUDY.figure_architecture(wildcards.dataset, wildcards.get("architecture"))


def figure_run(wildcards, prior="exemplar"):
    """The run of ``prior`` a figure is drawn from."""
    run = STUDY.figure_model(wildcards.dataset, figure_architecture(wildcards), prior)
    return kept(f"{STUDY.run_dir(run)}/summary.json")


def figure_runs(wildcards):
    """The runs an unconditional-samples figure sets side by side: one per prior trained with its architecture."""
    priors = STUDY.figure_priors(wildcards.dataset, figure_architecture(wildcards))
    return [figure_run(wildcards, prior) for prior in priors]


def figure_mem_mb(wildcards):
    """The memory request of a figure's job."""
    return STUDY.figure_mem_mb(wildcards.dataset, figure_architecture(wildcards))


def stand_in(wildcards):
    """What a dataset's images are when they only stand in for the paper's (the registry's ``stand_in``; None
    for the paper's own data): the figures' captions say so."""
    return get_spec(wildcards.dataset).stand_in


def gpus(cfg):
    """The ``gpu`` resource of a job that runs a model trained with ``cfg`` (evaluations compute on the device
    of the run's config): 1 where it computes on CUDA, else 0 (workflow/Snakefile's docstring)."""
    return int(uses_cuda(cfg.device))


def figure_config(wildcards):
    """The training config of the exemplar run a figure is drawn from."""
    run = STUDY.figure_model(wildcards.dataset, figure_architecture(wildcards))
    return STUDY.train_config(run.dataset, run.architecture, run.prior, run.seed)


def augment_config(wildcards):
    """The training config of the exemplar model that augments a dataset (the classifier computes on its device;
    the baseline, without a model, on ``auto``'s)."""
    run = STUDY.exemplar_model(wildcards.dataset)
    return STUDY.train_config(run.dataset, run.architecture, run.prior, run.seed)
