"""The study a pipeline config describes: which runs to train and evaluate, and where results land.

The Snakefile asks this module for its targets and for each run's training config, so the plan is
plain Python that tests can check without Snakemake. Paths are relative to the working directory.

Each profile owns one results root, so that no profile's run (or test) ever overwrites another's
outputs: the paper protocol writes ``results/{runs,eval,tables,figures}``, every other profile
``results/<profile>/{runs,eval,tables,figures}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evae.config import ConfigError, TrainConfig

RESULTS = "results"


def results_root(profile: str) -> str:
    """Where a profile's runs, evaluations, tables, figures and job benchmarks go."""
    return RESULTS if profile == "paper" else f"{RESULTS}/{profile}"

# Stand-in datasets are compared with the paper's column they stand in for (and labelled as such).
PAPER_DATASET = {"mnist_subset": "mnist", "omniglot_raw28": "omniglot", "celeba_standin": "celeba"}
KIND = {"paper": "paper protocol", "reduced": "REDUCED BUDGET", "smoke": "SMOKE"}
# (train, validation, test) images of each dataset, for the resource estimates
SPLIT_SIZES = {
    "mnist": (50_000, 10_000, 10_000),
    "fashion_mnist": (50_000, 10_000, 10_000),
    "omniglot": (23_000, 1_345, 8_070),
    "omniglot_raw28": (23_000, 1_345, 8_115),
    "mnist_subset": (3_000, 1_000, 1_000),
    "celeba": (162_770, 19_867, 19_962),
    "celeba_sample": (24, 4, 4),
    "celeba_standin": (48, 8, 8),
}


def load_config(*paths: str | Path) -> dict[str, Any]:
    """The config Snakemake builds from config/config.yaml and ``--configfile`` files: each file merged key
    by key over the ones before it, nested mappings recursively (``celeba: null`` switches a section off)."""

    def merge(base: dict, over: dict) -> dict:
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                           for k, v in over.items()}}

    config: dict[str, Any] = {}
    for path in paths:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


@dataclass(frozen=True)
class Run:
    """One training run of the study."""

    dataset: str
    architecture: str
    prior: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.architecture}/{self.prior}/seed{self.seed}"


class Study:
    """A validated pipeline config (the dict Snakemake loads from config/*.yaml)."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.profile: str = config["profile"]
        self.root = results_root(self.profile)
        models = config["models"]
        self.runs = [
            Run(d, a, p, s)
            for d in models["datasets"]
            for a in models["architectures"]
            for p in models["priors"]
            for s in config["seeds"]
        ]
        by_arch = config["train_by_architecture"]
        self._configs = {run.key: self._build_train_config(run, by_arch.get(run.architecture, {})) for run in self.runs}
        self.celeba_runs = []
        if config.get("celeba"):
            c = config["celeba"]
            self.celeba_runs = [Run(c["dataset"], "convvae64", p, s) for p in c["priors"] for s in c["seeds"]]
            self._configs.update({run.key: self._build_train_config(run, c["train"]) for run in self.celeba_runs})
        self._check_references()

    @property
    def all_runs(self) -> list[Run]:
        return self.runs + self.celeba_runs

    # -- training --------------------------------------------------------------------------------

    def _build_train_config(self, run: Run, overrides: dict) -> TrainConfig:
        values = {
            **self.config["train"],
            **overrides,
            "dataset": run.dataset,
            "architecture": run.architecture,
            "prior": run.prior,
            "seed": run.seed,
        }
        try:
            return TrainConfig.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"config for run {run.key}: {err}") from None

    def train_config(self, dataset: str, architecture: str, prior: str, seed: int | str) -> TrainConfig:
        key = Run(dataset, architecture, prior, int(seed)).key
        if key not in self._configs:
            raise ConfigError(f"run {key} is not part of the {self.profile!r} study (check config: models, seeds)")
        return self._configs[key]

    def run_dir(self, run: Run) -> str:
        return f"{self.root}/runs/{run.key}"

    def train_runtime_minutes(self, cfg: TrainConfig) -> int:
        """A generous wall-time estimate for a scheduler (CPU, 1 thread; a GPU is far faster)."""
        images = SPLIT_SIZES[cfg.dataset][0]
        images = min(images, cfg.max_train_images or images)
        per_image_ms = {"vae": 0.3, "hvae": 0.6, "convhvae": 10.0, "convvae64": 0.5 * cfg.hidden}[cfg.architecture]
        if cfg.prior == "exemplar":
            per_image_ms *= 3 if cfg.exemplar_mode == "knn" else max(1.0, 2 * cfg.exemplar_subset * images / 100)
        epoch_minutes = images * per_image_ms / 60_000 + 0.2
        return max(10, math.ceil(2 * cfg.max_epochs * epoch_minutes))

    def _data_mb(self, cfg: TrainConfig) -> int:
        """Memory of the dataset's arrays: float32 gray levels, or uint8 levels for CelebA."""
        images = sum(SPLIT_SIZES[cfg.dataset])
        bytes_per_image = 3 * 64 * 64 if cfg.dataset.startswith("celeba") else 784 * 4
        return images * bytes_per_image // 2**20

    def _model_mb(self, cfg: TrainConfig) -> int:
        return {"vae": 500, "hvae": 800, "convhvae": 2500, "convvae64": 6000 * cfg.hidden // 128}[cfg.architecture]

    def train_mem_mb(self, cfg: TrainConfig) -> int:
        """Peak memory of a training job: the data (and its validation copy), the model and its activations."""
        return 1000 + 2 * self._data_mb(cfg) + self._model_mb(cfg)

    def eval_mem_mb(self, cfg: TrainConfig) -> int:
        """Peak memory of an evaluation or figure job of a run trained with ``cfg``."""
        return 1500 + 2 * self._data_mb(cfg) + self._model_mb(cfg) // 2

    # Importance samples scored per second on one CPU thread (benchmarks/nll.py; a GPU is far faster),
    # and the exemplar log-prior's extra seconds per test image at S = 5000 and N = 50,000.
    _SAMPLES_PER_SECOND = {"vae": 100_000, "hvae": 18_000, "convhvae": 250, "convvae64": 20}
    _EXEMPLAR_SECONDS = 0.5

    def nll_runtime_minutes(self, cfg: TrainConfig) -> int:
        """A generous wall-time estimate of the NLL job of a run trained with ``cfg``."""
        nll = self.config["nll"]
        images = nll["max_images"] or SPLIT_SIZES[cfg.dataset][2]
        per_image = nll["samples"] / self._SAMPLES_PER_SECOND[cfg.architecture]
        if cfg.prior == "exemplar":
            per_image += self._EXEMPLAR_SECONDS * nll["samples"] / 5000
        return max(10, math.ceil(2 * images * per_image / 60))

    # -- evaluation ------------------------------------------------------------------------------

    def eval_path(self, run: Run, what: str) -> str:
        return f"{self.root}/eval/{run.key}/{what}.json"

    def nll_targets(self) -> list[str]:
        return [self.eval_path(run, "nll") for run in self.runs]

    def celeba_nll_targets(self) -> list[str]:
        return [self.eval_path(run, "nll") for run in self.celeba_runs]

    def knn_targets(self) -> list[str]:
        knn = self.config["knn"]
        return [
            self.eval_path(run, "knn")
            for run in self.runs
            if run.dataset in knn["datasets"] and run.architecture in knn["architectures"]
        ]

    def augmentation_path(self, dataset: str, hidden: int, augment: str, seed: int) -> str:
        return f"{self.root}/eval/augmentation/{dataset}/mlp{hidden}-{augment}/seed{seed}.json"

    def augmentation_targets(self) -> list[str]:
        aug = self.config["augmentation"]
        return [
            self.augmentation_path(d, h, augment, s)
            for d in aug["datasets"]
            for h in aug["hidden"]
            for augment in ("none", "exemplar")
            for s in aug["seeds"]
        ]

    def exemplar_model(self, dataset: str) -> Run:
        """The trained exemplar model whose samples augment ``dataset``'s classifier."""
        m = self.config["augmentation"]["exemplar_model"]
        return Run(dataset, m["architecture"], "exemplar", m["seed"])

    def figure_model(self, dataset: str, prior: str = "exemplar") -> Run:
        if self.celeba_runs and dataset == self.celeba_runs[0].dataset:
            return Run(dataset, "convvae64", prior, self.config["celeba"]["seeds"][0])
        f = self.config["figures"]
        return Run(dataset, f["architecture"], prior, f["seed"])

    def figure_priors(self, dataset: str) -> list[str]:
        """The priors whose unconditional samples are drawn side by side for ``dataset``."""
        if self.celeba_runs and dataset == self.celeba_runs[0].dataset:
            return self.config["celeba"]["priors"]
        return self.config["models"]["priors"]

    # -- outputs ---------------------------------------------------------------------------------

    TABLES = ("nll", "knn", "augmentation")
    CELEBA_FIGURES = ("exemplar_samples", "unconditional_samples")
    PER_DATASET_FIGURES = ("exemplar_samples", "unconditional_samples", "interpolations", "tsne", "prior_comparison")
    STUDY_FIGURES = ("training_curves", "knn_error_vs_k")

    def tables(self) -> list[str]:
        return list(self.TABLES) + (["celeba"] if self.celeba_runs else [])

    def table_targets(self) -> list[str]:
        return [f"{self.root}/tables/{t}.{ext}" for t in self.tables() for ext in ("csv", "md")]

    def figure_targets(self) -> list[str]:
        per_dataset = [
            f"{self.root}/figures/{name}_{d}.png" for d in self.config["figures"]["datasets"] for name in self.PER_DATASET_FIGURES
        ]
        if self.celeba_runs:
            d = self.celeba_runs[0].dataset
            per_dataset += [f"{self.root}/figures/{name}_{d}.png" for name in self.CELEBA_FIGURES]
        return per_dataset + [f"{self.root}/figures/{name}.png" for name in self.STUDY_FIGURES]

    def all_targets(self) -> list[str]:
        return self.table_targets() + self.figure_targets()

    # -- consistency -----------------------------------------------------------------------------

    def _check_references(self) -> None:
        """Every evaluation must point at models the study trains."""
        trained = {run.key for run in self.all_runs}
        needed = [(f"augmentation of {d}", self.exemplar_model(d)) for d in self.config["augmentation"]["datasets"]]
        needed += [(f"figures of {d}", self.figure_model(d)) for d in self.config["figures"]["datasets"]]
        if self.celeba_runs:
            needed.append(("CelebA figures", self.figure_model(self.celeba_runs[0].dataset)))
        for what, run in needed:
            if run.key not in trained:
                raise ConfigError(
                    f"{what} needs the trained model {run.key}, which the study does not train: add it to "
                    "models (datasets, architectures, priors) and seeds, or change the section's model"
                )
        for key in ("datasets", "architectures"):
            extra = set(self.config["knn"][key]) - set(self.config["models"][key])
            if extra:
                raise ConfigError(f"knn.{key} lists {sorted(extra)}, which models.{key} does not train")
