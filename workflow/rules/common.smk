"""Input functions shared by the rules (Snakemake's lint wants functions apart from rules)."""


def train_config(wildcards):
    """The evae.config.TrainConfig of the run a job's wildcards name."""
    return STUDY.train_config(wildcards.dataset, wildcards.architecture, wildcards.prior, wildcards.seed)


def exemplar_run(wildcards):
    """The trained exemplar model that generates the augmented images (none for the baseline)."""
    if wildcards.augment == "none":
        return []
    return f"{STUDY.run_dir(STUDY.exemplar_model(wildcards.dataset))}/summary.json"


def figure_run(wildcards, prior="exemplar"):
    """The run a dataset's figures are drawn from."""
    return f"{STUDY.run_dir(STUDY.figure_model(wildcards.dataset, prior))}/summary.json"
