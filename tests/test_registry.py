"""The registries of datasets, architectures and priors: every derived list agrees with them, and a new
prior or dataset needs nothing but a registration (the README's "Where a new ... goes")."""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import pytest
import torch
import yaml

from evae import priors
from evae.config import ConfigError, TrainConfig
from evae.data import ImageDataset, load_dataset
from evae.data import registry as data_registry
from evae.data.registry import BINARY_28, DatasetSpec, register_dataset
from evae.distributions import log_standard_normal
from evae.models.registry import ARCHITECTURES, get_architecture
from evae.priors import Prior, prior_names, register_prior
from evae.study import KIND, Study, wildcard_constraints
from evae.train.trainer import train
from tests.conftest import REPO

DATASETS = data_registry.DATASETS
WORKFLOW_FILES = [REPO / "Snakefile", REPO / "workflow" / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]


def smoke_config() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def tiny(**settings) -> TrainConfig:
    """A training config small enough for a test: 2 epochs of a narrow VAE on a few images."""
    base = dict(dataset="mnist_subset", architecture="vae", latent_dim=4, hidden=32, batch_size=50, warmup_epochs=1,
                max_epochs=2, patience=2, max_train_images=200, max_val_images=100, pseudo_inputs=5, device="cpu")
    return TrainConfig.from_dict({**base, **settings})


# -- derived lists ---------------------------------------------------------------------------------


def test_config_choices_are_the_registered_names():
    for key, registered in (("dataset", list(DATASETS)), ("architecture", list(ARCHITECTURES)),
                            ("prior", prior_names())):
        with pytest.raises(ConfigError, match=re.escape(f"{key}: 'nope' is not one of {registered}")):
            TrainConfig.from_dict({key: "nope"})
    for name, spec in DATASETS.items():
        able = [a for a, arch in ARCHITECTURES.items() if arch.models(spec)]
        assert able, f"no architecture models {name}"
        for arch in ARCHITECTURES:
            if arch in able:
                TrainConfig(dataset=name, architecture=arch)
            else:
                with pytest.raises(ConfigError, match="cannot model"):
                    TrainConfig(dataset=name, architecture=arch)


def test_wildcards_match_exactly_the_registered_names():
    constraints = wildcard_constraints()
    for key, names in (("dataset", DATASETS), ("architecture", ARCHITECTURES), ("prior", prior_names())):
        pattern = re.compile(constraints[key])
        assert all(pattern.fullmatch(name) for name in names)
        assert not any(pattern.fullmatch(name + "x") or pattern.fullmatch("x" + name) for name in names)


def test_the_workflow_names_no_dataset_or_architecture_itself():
    """Rules take names from the registries (wildcards) and the config, never from a literal."""
    names = [*DATASETS, *ARCHITECTURES]
    for path in WORKFLOW_FILES:
        literals = re.findall(r"""["']([a-z_0-9]+)["']""", path.read_text())
        assert not set(literals) & set(names), f"{path.relative_to(REPO)} names {sorted(set(literals) & set(names))}"
    assert "**wildcard_constraints()" in (REPO / "workflow" / "Snakefile").read_text()


def test_the_schema_lists_the_profiles_and_no_registered_names():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["profile"]["enum"] == list(KIND)
    text = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert text.count("enum:") == 1  # the profile's
    assert not set(re.findall(r"[a-z_0-9]+", text)) & {*DATASETS, *ARCHITECTURES, *prior_names()} - {"exemplar"}


@pytest.mark.parametrize("name", [name for name, spec in DATASETS.items() if not spec.files])
def test_each_dataset_without_files_loads_with_the_registered_shape_and_split_sizes(name):
    """(The datasets read from files are checked by tests/test_data.py and tests/test_celeba.py.)"""
    data = load_dataset(name, download=False)
    spec = DATASETS[name]
    assert (data.image_shape, data.binary) == (spec.image_shape, spec.binary)
    assert (len(data.train), len(data.val), len(data.test)) == spec.split_sizes
    assert data.train.shape[1] == np.prod(spec.image_shape)


def test_paper_columns_and_stand_ins_name_registered_datasets():
    for name, spec in DATASETS.items():
        assert spec.paper_column in DATASETS
        if spec.stand_in:
            assert spec.paper_column != name


# -- adding a prior or a dataset through the registry alone ----------------------------------------


class MixtureOfGaussians(Prior):
    """A toy prior: an equal mixture of unit Gaussians around learned means."""

    def __init__(self, latent_dim: int, components: int = 4):
        super().__init__()
        self.means = torch.nn.Parameter(0.5 * torch.randn(components, latent_dim))

    @classmethod
    def from_config(cls, cfg, train_images: torch.Tensor) -> "MixtureOfGaussians":
        return cls(cfg.latent_dim)

    def log_prob(self, z, encoder, index=None):
        per_component = log_standard_normal(z[:, None, :] - self.means[None])
        return torch.logsumexp(per_component, dim=1) - np.log(len(self.means))

    @torch.no_grad()
    def sample(self, n, encoder, generator=None, index=None):
        pick = torch.randint(len(self.means), (n,), generator=generator)
        return self.means[pick] + torch.randn(n, self.means.shape[1], generator=generator)


def load_toy(spec: DatasetSpec, split_seed: int, **_) -> ImageDataset:
    """A toy dataset's loader: seeded random strokes on 28x28 gray images, two classes."""
    rng = np.random.default_rng(split_seed)
    n = sum(spec.split_sizes)
    images = (rng.random((n, 784)) < 0.1).astype(np.float32)
    labels = rng.integers(0, 2, n)
    cut = np.cumsum(spec.split_sizes)[:-1]
    (x_tr, x_va, x_te), (y_tr, y_va, y_te) = np.split(images, cut), np.split(labels, cut)
    return ImageDataset(name=spec.name, image_shape=spec.image_shape, train=x_tr, train_labels=y_tr, val=x_va,
                        val_labels=y_va, test=x_te, test_labels=y_te, provenance={"split": "toy"})


@pytest.fixture
def registries():
    """Registrations made in a test are undone after it."""
    saved = [(registry, dict(registry)) for registry in (priors._REGISTERED, DATASETS)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


def test_a_registered_prior_trains_and_enters_a_study(registries, tmp_path):
    register_prior("toy_mog", MixtureOfGaussians)
    assert "toy_mog" in prior_names() and re.fullmatch(wildcard_constraints()["prior"], "toy_mog")
    summary = train(tiny(prior="toy_mog"), tmp_path / "run", progress=False)
    assert summary["epochs_trained"] == 2 and np.isfinite(summary["best_val_loss"])
    config = smoke_config()
    config["models"]["priors"].append("toy_mog")
    study = Study(config)
    assert "results/smoke/runs/mnist_subset/vae/toy_mog/seed0" in [study.run_dir(r) for r in study.runs]


def test_registering_a_prior_checks_it(registries):
    with pytest.raises(TypeError, match="not a Prior subclass"):
        register_prior("toy", dict)
    with pytest.raises(ValueError, match="'gaussian' is already registered"):
        register_prior("gaussian", MixtureOfGaussians)


def test_a_registered_dataset_loads_trains_and_enters_a_study(registries, tmp_path):
    spec = register_dataset(DatasetSpec(name="toy_strokes", loader="tests.test_registry:load_toy",
                                        image_shape=BINARY_28, binary=True, split_sizes=(100, 50, 50),
                                        paper_dataset="mnist", stand_in="random strokes, not MNIST"))
    data = load_dataset("toy_strokes")
    assert (len(data.train), len(data.val), len(data.test)) == spec.split_sizes
    summary = train(tiny(dataset="toy_strokes", prior="gaussian", max_epochs=1), tmp_path / "run", progress=False)
    assert summary["epochs_trained"] == 1
    config = copy.deepcopy(smoke_config())
    for section in ("models", "knn", "augmentation", "figures"):
        config[section]["datasets"] = ["toy_strokes"]
    config["models"]["architectures"].remove("convvae64")
    study = Study(config)
    assert {r.dataset for r in study.runs} == {"toy_strokes"} and study.stand_ins() == {"toy_strokes": spec.stand_in}
    assert "results/smoke/figures/tsne_toy_strokes.png" in study.all_targets()
    cfg = study.train_config("toy_strokes", "vae", "exemplar", 0)
    assert study.train_runtime_minutes(cfg) >= 10 and study.train_mem_mb(cfg) > 1000


def test_a_name_is_registered_once_and_an_unknown_one_lists_the_known(registries):
    spec = DATASETS["mnist_subset"]
    assert register_dataset(spec) is spec  # the same spec again is harmless
    with pytest.raises(ValueError, match="dataset 'mnist_subset' is already registered with another spec"):
        register_dataset(dataclasses.replace(spec, split_sizes=(1, 1, 1)))
    with pytest.raises(KeyError, match=r"unknown architecture 'resnet'; known architectures: \['convhvae', "):
        get_architecture("resnet")
