"""The study a pipeline config describes: which runs to train and evaluate, and where results land.

The Snakefile asks this module for its targets and for each run's training config, so the plan is
plain Python that tests can check without Snakemake. Paths are relative to the working directory.

Datasets, architectures and priors are the registries' (`evae.data.registry`, `evae.models.registry`,
`evae.priors`). The ``models`` section is one group or a list of groups, each ``{datasets, architectures,
priors, seeds?}``: a group trains every (dataset, architecture, prior, seed) of its lists whose
architecture models the dataset's images (so one group can list 28x28 binary and 64x64 colour datasets
side by side), with the group's ``seeds`` or else the architecture's (``seeds_by_architecture``, then
``seeds``). The study's runs are the union of its groups' runs, each once, in the order first listed.

Each profile owns one results root, so that no profile's run (or test) ever overwrites another's
outputs: the paper protocol writes ``results/{runs,eval,tables,figures}``, every other profile
``results/<profile>/{runs,eval,tables,figures}``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evae.config import ConfigError, TrainConfig
from evae.data.registry import DATASETS, get_spec
from evae.models.registry import ARCHITECTURES, get_architecture
from evae.priors import prior_names

RESULTS = "results"
# Each profile's label in tables and figures
KIND = {"paper": "paper protocol", "mnist_full": "FULL PROTOCOL, MNIST MLP, exemplar kNN-trained",
        "reduced": "REDUCED BUDGET", "smoke": "SMOKE"}
# The profiles that run the paper's protocol, whose numbers can stand beside the paper's
PAPER_PROTOCOL = ("paper", "mnist_full")
# How each profile's numbers stand to the paper's: every table says so at its top (None: the paper's protocol)
NOTICE = {
    "paper": None,
    "mnist_full": "Our numbers follow the paper's protocol, except that the exemplar prior trains in kNN mode (k = 10) "
                  "instead of exact mode with M = N/2 (see `exemplar_training`).",
    "reduced": "Our numbers come from a reduced-budget study (see `epochs_trained`, `n_seeds`, `exemplar_training`) "
               "and are not comparable with the paper's.",
    "smoke": "Our numbers come from a smoke study, tiny budgets on small or stand-in data (see `data_used`, "
             "`epochs_trained`), and are not comparable with the paper's.",
}


# Time requests (``Study.*_runtime_minutes``) are seconds measured on one torch thread on the README's "Speed" host
# (an Intel Xeon KVM guest, 2 cores, AVX-512 and AMX, no GPU: benchmarks/train_epoch.py, benchmarks/nll.py, and
# the job benchmarks of the committed reduced study), times the work of the job, times MARGIN, capped at the
# config's max_runtime_minutes. A GPU runs the same jobs far faster: they end long before their requests.
MAX_RUNTIME_MINUTES = 2880  # the default cap: two days, what many SLURM partitions allow (sinfo -o "%P %l")
MARGIN = 2.0  # the figures are the host's fastest moments; its speed drifts by up to 1.7x
EXPECTED_EPOCHS = 1100  # where early stopping ends a paper run: the authors' MNIST exemplar run stopped at 1088
# The exact exemplar log-prior's seconds per test image at S = 5000 and N = 50,000 (benchmarks/nll.py: 2.6 images/s)
EXEMPLAR_LOG_PRIOR_SECONDS = 0.4
# An epoch of the 784-1024-1024-10 classifier over 50,000 images, without and with exemplar augmentation: the
# fastest augment jobs of the reduced study (results/reduced/benchmarks/augment/: 800 s and 1466 s for 100 epochs,
# other jobs sharing the two cores)
CLASSIFIER_EPOCH_SECONDS = {"none": 8.0, "exemplar": 14.7}


def training_images(cfg: TrainConfig) -> int:
    """The number of training images (exemplars) of a run."""
    images = get_spec(cfg.dataset).split_sizes[0]
    return min(images, cfg.max_train_images or images)


def prior_images_per_step(cfg: TrainConfig) -> float:
    """Images the prior has the encoder encode with gradients in one training step: the VampPrior's pseudo-inputs,
    the distinct retrieved neighbours in kNN mode (at most batch x (k + 1)), the expected distinct exemplars of M
    draws with replacement in exact mode; a prior not named here is charged every training image."""
    n = training_images(cfg)
    if cfg.prior == "gaussian":
        return 0.0
    if cfg.prior == "vampprior":
        return float(cfg.pseudo_inputs)
    if cfg.prior == "exemplar" and cfg.exemplar_mode == "knn":
        return float(min(n, cfg.batch_size * (cfg.exemplar_k + 1)))
    if cfg.prior == "exemplar" and cfg.exemplar_subset < 1:
        drawn = max(2, round(cfg.exemplar_subset * n))  # as ExemplarPrior.from_config
        return n * (1 - (1 - 1 / n) ** drawn)
    return float(n)


def train_epoch_seconds(cfg: TrainConfig) -> float:
    """Seconds of one training epoch of ``cfg`` (steps, refresh, validation) on the measuring host: the
    architecture's Gaussian-prior epoch per training image, plus every image the prior encodes in a step at the
    architecture's measured cost of one."""
    arch = get_architecture(cfg.architecture)
    n = training_images(cfg)
    steps = math.ceil(n / cfg.batch_size)
    ms = n * arch.train_ms_per_image + steps * prior_images_per_step(cfg) * arch.encode_ms_per_image
    return ms * arch.cost_scale(cfg.hidden) / 1000


def expected_epochs(cfg: TrainConfig) -> int:
    """Epochs a run is expected to train: ``max_epochs``, or fewer where early stopping is expected to end it
    (never before warm-up and patience have passed)."""
    return min(cfg.max_epochs, max(EXPECTED_EPOCHS, cfg.warmup_epochs + cfg.patience))


def figure_label(profile: str, in_progress: bool = False) -> str | None:
    """The note figure titles carry for a study of ``profile``, e.g. "REDUCED BUDGET run: not comparable with the
    paper"; None for the paper's finished runs. Only the profiles that follow the paper's protocol (its numbers
    stand beside the paper's) leave out "not comparable"."""
    kind = [] if profile == "paper" else [KIND[profile]]
    if not kind and not in_progress:
        return None
    label = ", ".join(kind + ["IN PROGRESS"] * in_progress) + " run"
    return label if profile in PAPER_PROTOCOL else f"{label}: not comparable with the paper"


def results_root(profile: str) -> str:
    """Where a profile's runs, evaluations, tables, figures and job benchmarks go."""
    return RESULTS if profile == "paper" else f"{RESULTS}/{profile}"


def wildcard_constraints() -> dict[str, str]:
    """The pipeline's name wildcards: exactly the registered datasets, architectures and priors."""
    names = {"dataset": list(DATASETS), "architecture": list(ARCHITECTURES), "prior": prior_names()}
    return {key: "|".join(map(re.escape, values)) for key, values in names.items()}


def load_config(*paths: str | Path) -> dict[str, Any]:
    """The config Snakemake builds from config/config.yaml and ``--configfile`` files: each file merged key
    by key over the ones before it, nested mappings recursively (lists and values replace)."""

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


def model_groups(models: dict | list[dict]) -> list[tuple[str, dict]]:
    """The groups of a ``models`` section (one mapping, or a list of them), each with the name error messages
    give it: ``models`` for a lone mapping, ``models[i]`` for the i-th group of a list (counted from 0)."""
    if isinstance(models, dict):
        return [("models", models)]
    return [(f"models[{i}]", group) for i, group in enumerate(models)]


class Study:
    """A validated pipeline config (the dict Snakemake loads from config/*.yaml)."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.profile: str = config["profile"]
        self.label = KIND[self.profile]
        self.root = results_root(self.profile)
        self.groups = model_groups(config["models"])
        self._check_names()
        runs = (
            Run(d, a, p, s)
            for _, group in self.groups
            for d in group["datasets"]
            for a in group["architectures"]
            if ARCHITECTURES[a].models(DATASETS[d])
            for p in group["priors"]
            for s in group.get("seeds", self.seeds(a))
        )
        self.runs = list(dict.fromkeys(runs))  # the union of the groups' runs, each once, first listed first
        by_arch = config["train_by_architecture"]
        self._configs = {run.key: self._build_train_config(run, by_arch.get(run.architecture, {})) for run in self.runs}
        self._check_references()

    def seeds(self, architecture: str) -> list[int]:
        """The training seeds of ``architecture``'s runs in a group that gives none: ``seeds_by_architecture`` where
        it names it, else ``seeds``."""
        return self.config.get("seeds_by_architecture", {}).get(architecture, self.config["seeds"])

    def trained(self, key: str) -> list[str]:
        """The datasets, architectures or priors (``key``) the study trains, each once, in the order of its runs."""
        return list(dict.fromkeys(getattr(run, key) for run in self.runs))

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

    # -- time requests for a scheduler --------------------------------------------------------------

    @property
    def max_runtime_minutes(self) -> int:
        """The cap of every time request: the config's ``max_runtime_minutes`` (default MAX_RUNTIME_MINUTES)."""
        return self.config.get("max_runtime_minutes", MAX_RUNTIME_MINUTES)

    def _time_request(self, seconds: float, attempt: int) -> int:
        """Minutes to ask for attempt ``attempt`` of a job estimated at ``seconds``: ``attempt`` x MARGIN x the
        estimate, at least 10, at most the cap (so that a retry after a time-limit kill gets more time, never
        more than the cap)."""
        return min(self.max_runtime_minutes, max(10, math.ceil(attempt * MARGIN * seconds / 60)))

    def train_runtime_minutes(self, cfg: TrainConfig, attempt: int = 1) -> int:
        """Time request of a training job: its expected epochs at ``train_epoch_seconds``. A run longer than the
        cap continues over several jobs, each resuming from the checkpoint the last one left."""
        return self._time_request(expected_epochs(cfg) * train_epoch_seconds(cfg), attempt)

    def nll_runtime_minutes(self, cfg: TrainConfig, attempt: int = 1) -> int:
        """Time request of the NLL job of a run trained with ``cfg``: S importance samples of every test image at
        the architecture's measured rate, plus the exact exemplar log-prior's share for an exemplar model."""
        nll = self.config["nll"]
        arch = get_architecture(cfg.architecture)
        test_images = get_spec(cfg.dataset).split_sizes[2]
        images = min(test_images, nll["max_images"] or test_images)
        per_image = nll["samples"] * arch.cost_scale(cfg.hidden) / arch.nll_samples_per_second
        if cfg.prior == "exemplar":
            per_image += EXEMPLAR_LOG_PRIOR_SECONDS * nll["samples"] / 5000 * training_images(cfg) / 50_000
        return self._time_request(images * per_image, attempt)

    def augment_runtime_minutes(self, dataset: str, hidden: int, augment: str, attempt: int = 1) -> int:
        """Time request of an augmentation classifier of width ``hidden`` (``augment``: "none" or "exemplar"): the
        measured epoch of the width-1024 classifier, scaled by the training images and the multiply-adds of an
        image's pass through 784-H-H-10."""
        spec = get_spec(dataset)
        pixels = math.prod(spec.image_shape)
        work = lambda h: pixels * h + h * h + 10 * h  # noqa: E731
        epoch = CLASSIFIER_EPOCH_SECONDS[augment] * spec.split_sizes[0] / 50_000 * work(hidden) / work(1024)
        return self._time_request(self.config["augmentation"]["epochs"] * epoch, attempt)

    # -- memory requests for a scheduler ------------------------------------------------------------

    @staticmethod
    def _data_mb(dataset: str) -> int:
        """Memory of a dataset's arrays: float32 gray levels (binary datasets) or uint8 colour levels."""
        spec = get_spec(dataset)
        bytes_per_image = math.prod(spec.image_shape) * (4 if spec.binary else 1)
        return sum(spec.split_sizes) * bytes_per_image // 2**20

    @staticmethod
    def _model_mb(cfg: TrainConfig) -> int:
        arch = get_architecture(cfg.architecture)
        return int(arch.memory_mb * arch.cost_scale(cfg.hidden))

    def data_mem_mb(self, dataset: str) -> int:
        """Peak memory of the job that finds, verifies and decodes a dataset."""
        return 2000 + 2 * self._data_mb(dataset)

    def train_mem_mb(self, cfg: TrainConfig) -> int:
        """Peak memory of a training job: the data (and its validation copy), the model and its activations."""
        return 1000 + 2 * self._data_mb(cfg.dataset) + self._model_mb(cfg)

    def eval_mem_mb(self, cfg: TrainConfig) -> int:
        """Peak memory of an evaluation job of a run trained with ``cfg``."""
        return 1500 + 2 * self._data_mb(cfg.dataset) + self._model_mb(cfg) // 2

    def figure_mem_mb(self, dataset: str, architecture: str) -> int:
        """Peak memory of a figure of ``dataset`` drawn from ``architecture`` (from up to one model per prior)."""
        run = self.figure_model(dataset, architecture)
        return 1000 + self.eval_mem_mb(self.train_config(run.dataset, run.architecture, run.prior, run.seed))

    # -- evaluation ------------------------------------------------------------------------------

    def eval_path(self, run: Run, what: str) -> str:
        return f"{self.root}/eval/{run.key}/{what}.json"

    def nll_targets(self) -> list[str]:
        return [self.eval_path(run, "nll") for run in self.runs]

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

    def figure_architectures(self, dataset: str) -> list[str]:
        """The architectures ``dataset``'s figures are drawn from: those of ``figures.architectures`` that model its
        images and whose exemplar model the study trains with ``figures.seed``, in that order (at least one, else a
        ConfigError)."""
        f = self.config["figures"]
        able = [a for a in f["architectures"] if ARCHITECTURES[a].models(DATASETS[dataset])]
        if not able:
            raise ConfigError(
                f"figures of {dataset}: none of figures.architectures {f['architectures']} models its images; "
                f"add one of {[a for a, arch in ARCHITECTURES.items() if arch.models(DATASETS[dataset])]}"
            )
        trained = {run.key for run in self.runs}
        needed = [Run(dataset, a, "exemplar", f["seed"]).key for a in able]
        drawn = [a for a, key in zip(able, needed) if key in trained]
        if not drawn:
            raise ConfigError(
                f"figures of {dataset} needs the trained model {' or '.join(needed)}, which the study does not "
                "train: add it to models (datasets, architectures, priors) and seeds, or change figures.seed"
            )
        return drawn

    def figure_model(self, dataset: str, architecture: str, prior: str = "exemplar") -> Run:
        """The run of ``prior`` that ``dataset``'s figures of ``architecture`` are drawn from (``figures.seed``)."""
        return Run(dataset, architecture, prior, self.config["figures"]["seed"])

    def figure_path(self, figure: str, dataset: str, architecture: str) -> str:
        """Where ``figure`` of ``dataset`` drawn from ``architecture`` goes: ``{figure}_{dataset}.png`` for the
        dataset's first figure architecture (so that adding an architecture renames no figure),
        ``{figure}_{dataset}_{architecture}.png`` for the others."""
        suffix = "" if architecture == self.figure_architectures(dataset)[0] else f"_{architecture}"
        return f"{self.root}/figures/{figure}_{dataset}{suffix}.png"

    def figure_architecture(self, dataset: str, named: str | None) -> str:
        """The architecture of the figure of ``dataset`` whose file name ends in ``named`` (None: in no
        architecture), as `figure_path` names them; a ConfigError where the study draws no such figure."""
        first, *others = self.figure_architectures(dataset)
        if named is None:
            return first
        if named not in others:
            raise ConfigError(f"no figure of {dataset} is named after {named!r}: its figures of {first} name no "
                              f"architecture, and it has figures of {others or 'no other'} (figures.architectures)")
        return named

    def stand_ins(self) -> dict[str, str]:
        """The study's datasets that stand in for the paper's data, and what they are."""
        return {d: DATASETS[d].stand_in for d in self.trained("dataset") if DATASETS[d].stand_in}

    def figure_priors(self, dataset: str, architecture: str) -> list[str]:
        """The priors whose unconditional samples of ``dataset`` are drawn side by side in its figure of
        ``architecture``: those the study trains with that architecture and ``figures.seed``."""
        seed = self.config["figures"]["seed"]
        return [r.prior for r in self.runs if (r.dataset, r.architecture, r.seed) == (dataset, architecture, seed)]

    # -- outputs ---------------------------------------------------------------------------------

    SAMPLE_FIGURES = ("exemplar_samples", "unconditional_samples", "cyclic_generation")
    PER_DATASET_FIGURES = (*SAMPLE_FIGURES, "interpolations", "tsne", "prior_comparison")
    STUDY_FIGURES = ("training_curves", "knn_error_vs_k")

    def dataset_figures(self, dataset: str) -> tuple[str, ...]:
        """Every figure of a binary dataset; the sample figures (exemplar-conditioned, unconditional, cyclic) of a
        colour one (the paper shows only samples of CelebA, whose images have no classes for a t-SNE)."""
        return self.PER_DATASET_FIGURES if DATASETS[dataset].binary else self.SAMPLE_FIGURES

    @staticmethod
    def nll_table(dataset: str) -> str:
        """The table a run's test NLL goes to: the paper's NLL table (log-likelihood in nats) for a binary
        dataset; for a colour one, a bits-per-dimension table named after its paper column."""
        spec = get_spec(dataset)
        return "nll" if spec.binary else spec.paper_column

    def tables(self) -> dict[str, str]:
        """Each table's name and kind (`evae.report.tables`): the paper's three, then one bits-per-dimension
        NLL table for each colour paper dataset the study trains on (the paper reports none)."""
        colour = dict.fromkeys(self.nll_table(run.dataset) for run in self.runs if not DATASETS[run.dataset].binary)
        return {"nll": "nll", "knn": "knn", "augmentation": "augmentation", **dict.fromkeys(colour, "nll_bits")}

    def table_inputs(self, table: str) -> list[str]:
        """The evaluation JSONs table ``table`` is compiled from."""
        if table == "knn":
            return self.knn_targets()
        if table == "augmentation":
            return self.augmentation_targets()
        return [self.eval_path(run, "nll") for run in self.runs if self.nll_table(run.dataset) == table]

    def table_targets(self) -> list[str]:
        return [f"{self.root}/tables/{t}.{ext}" for t in self.tables() for ext in ("csv", "md")]

    def dataset_figure_targets(self, dataset: str) -> list[str]:
        """The figures drawn of ``dataset``: each of `dataset_figures` from each of its figure architectures."""
        return [self.figure_path(name, dataset, architecture)
                for architecture in self.figure_architectures(dataset) for name in self.dataset_figures(dataset)]

    def claims_inputs(self) -> dict[str, list[str]]:
        """The evaluation JSONs the claims table (`evae.report.claims`) tests the paper's claims on, by kind."""
        return {kind: self.table_inputs(kind) for kind in ("nll", "knn", "augmentation")}

    def claims_targets(self) -> list[str]:
        return [f"{self.root}/tables/claims.{ext}" for ext in ("csv", "md")]

    def figure_targets(self) -> list[str]:
        per_dataset = [t for d in self.config["figures"]["datasets"] for t in self.dataset_figure_targets(d)]
        return per_dataset + [f"{self.root}/figures/{name}.png" for name in self.STUDY_FIGURES]

    def all_targets(self) -> list[str]:
        return self.table_targets() + self.claims_targets() + self.figure_targets()

    # -- consistency -----------------------------------------------------------------------------

    def _check_names(self) -> None:
        """Every dataset, architecture and prior the config names must be registered, and every architecture of a
        group must model one of its datasets and every dataset one of its architectures."""
        c = self.config
        registered = {"dataset": list(DATASETS), "architecture": list(ARCHITECTURES), "prior": prior_names()}
        named = {
            "dataset": [*((f"{g}.datasets", group["datasets"]) for g, group in self.groups),
                        ("knn.datasets", c["knn"]["datasets"]),
                        ("augmentation.datasets", c["augmentation"]["datasets"]),
                        ("figures.datasets", c["figures"]["datasets"])],
            "architecture": [*((f"{g}.architectures", group["architectures"]) for g, group in self.groups),
                             ("knn.architectures", c["knn"]["architectures"]),
                             ("augmentation.exemplar_model.architecture",
                              [c["augmentation"]["exemplar_model"]["architecture"]]),
                             ("figures.architectures", c["figures"]["architectures"]),
                             ("train_by_architecture", list(c["train_by_architecture"])),
                             ("seeds_by_architecture", list(c.get("seeds_by_architecture", {})))],
            "prior": [(f"{g}.priors", group["priors"]) for g, group in self.groups],
        }
        for kind, places in named.items():
            for where, names in places:
                unknown = [n for n in names if n not in registered[kind]]
                if unknown:
                    raise ConfigError(f"{where}: {unknown} not a registered {kind}; registered: {registered[kind]}")
        for g, group in self.groups:
            datasets, architectures = group["datasets"], group["architectures"]
            for d in datasets:
                if not any(ARCHITECTURES[a].models(DATASETS[d]) for a in architectures):
                    able = [a for a, spec in ARCHITECTURES.items() if spec.models(DATASETS[d])]
                    raise ConfigError(f"{g}.datasets: no architecture of {g}.architectures {architectures} models "
                                      f"{d!r}; add one of {able}")
            for a in architectures:
                if not any(ARCHITECTURES[a].models(DATASETS[d]) for d in datasets):
                    raise ConfigError(f"{g}.architectures: {a!r} models none of {g}.datasets {datasets}")

    def _check_references(self) -> None:
        """Every evaluation must point at models the study trains."""
        trained = {run.key for run in self.runs}
        needed = [(f"augmentation of {d}", self.exemplar_model(d)) for d in self.config["augmentation"]["datasets"]]
        for what, run in needed:
            if run.key not in trained:
                raise ConfigError(
                    f"{what} needs the trained model {run.key}, which the study does not train: add it to "
                    "models (datasets, architectures, priors) and seeds, or change the section's model"
                )
        for d in self.config["figures"]["datasets"]:
            self.figure_architectures(d)  # raises where the study trains none
        for key in ("dataset", "architecture"):
            extra = set(self.config["knn"][f"{key}s"]) - set(self.trained(key))
            if extra:
                raise ConfigError(f"knn.{key}s lists {sorted(extra)}, which no group of models trains")
