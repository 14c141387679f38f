"""Training configuration: one flat, validated record. Unknown keys and bad values are errors.

Datasets, architectures and priors are checked against their registries (`evae.data.registry`,
`evae.models.registry`, `evae.priors`), so a newly registered one is a valid choice at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from evae.data import registry as data_registry
from evae.models import registry as model_registry
from evae.priors import prior_names

OPTIMIZERS = ("adamnormgrad", "adam")
DEVICES = ("auto", "cpu", "cuda")
# Name lists of the built-in datasets and architectures, for older imports (the registries are the truth)
DATASETS = tuple(data_registry.DATASETS)
ARCHITECTURES = tuple(model_registry.ARCHITECTURES)
COLOUR_DATASETS = tuple(name for name, spec in data_registry.DATASETS.items() if not spec.binary)


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says which and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the paper's protocol (docs/protocol.md sections 1-4)."""

    dataset: str = "mnist"
    architecture: str = "vae"
    prior: str = "exemplar"
    latent_dim: int = 40
    hidden: int = 300
    pseudo_inputs: int = 500  # VampPrior K
    exemplar_mode: str = "exact"  # "exact" (M sampled exemplars) or "knn" (retrieval-augmented)
    exemplar_subset: float = 0.5  # M / N in exact mode (unused in kNN mode); 1.0 = every exemplar at every step
    exemplar_k: int = 10  # neighbours per point in kNN mode
    optimizer: str = "adamnormgrad"
    lr: float = 5e-4
    batch_size: int = 100
    warmup_epochs: int = 100
    max_epochs: int = 2000
    patience: int = 50
    seed: int = 0
    split_seed: int = 0
    binarize_seed: int = 777
    max_train_images: int | None = None  # keep only the first n training images (reduced budgets)
    max_val_images: int | None = None  # validate on the first n validation images only (smoke runs)
    threads: int = 1
    device: str = "auto"
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        choices = {
            "dataset": list(data_registry.DATASETS),
            "architecture": list(model_registry.ARCHITECTURES),
            "prior": prior_names(),
            "exemplar_mode": ("exact", "knn"),
            "optimizer": OPTIMIZERS,
            "device": DEVICES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not one of {list(allowed)}")
        positive = ("latent_dim", "hidden", "pseudo_inputs", "exemplar_k", "batch_size", "max_epochs", "patience",
                    "threads", "eval_batch_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs: must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr: must be in (0, 1), got {self.lr}")
        if not 0 < self.exemplar_subset <= 1:
            raise ConfigError(f"exemplar_subset: must be a fraction in (0, 1], got {self.exemplar_subset}")
        if self.max_train_images is not None and self.max_train_images < 2:
            raise ConfigError(f"max_train_images: must be >= 2 or null, got {self.max_train_images}")
        dataset = data_registry.get_spec(self.dataset)
        if not model_registry.get_architecture(self.architecture).models(dataset):
            able = [name for name, arch in model_registry.ARCHITECTURES.items() if arch.models(dataset)]
            raise ConfigError(
                f"architecture {self.architecture!r} cannot model dataset {self.dataset!r} "
                f"({image_kind(dataset)} images); architectures that can: {able}"
            )
        if self.max_val_images is not None and self.max_val_images < 1:
            raise ConfigError(f"max_val_images: must be >= 1 or null, got {self.max_val_images}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
        values = {}
        for key, value in data.items():
            values[key] = _coerce(key, value, known[key].type)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values")
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def replace(self, **changes: Any) -> "TrainConfig":
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of every setting that changes the trained model (not threads or device)."""
        return self._hash(("threads", "device", "eval_batch_size"))

    def trajectory_digest(self) -> str:
        """Like ``digest`` but also without ``max_epochs``: runs that agree on it follow the same path epoch by
        epoch, so a finished run can be resumed with ``max_epochs`` raised."""
        return self._hash(("threads", "device", "eval_batch_size", "max_epochs"))

    def _hash(self, ignore: tuple[str, ...]) -> str:
        relevant = {k: v for k, v in self.to_dict().items() if k not in ignore}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def image_kind(spec) -> str:
    """How a dataset's or architecture's images read in a message, e.g. "binary 1x28x28"."""
    return f"{'binary' if spec.binary else 'colour'} {'x'.join(map(str, spec.image_shape))}"


def _coerce(key: str, value: Any, type_name: str) -> Any:
    """Accept YAML's natural spellings (1e-4 parses as a string in YAML 1.1; ints for floats)."""
    base = type_name.replace(" | None", "")
    if value is None:
        if "None" in type_name:
            return None
        raise ConfigError(f"{key}: must not be null")
    try:
        if base == "int" and not isinstance(value, bool) and float(value) == int(float(value)):
            return int(float(value))
        if base == "float" and not isinstance(value, bool):
            return float(value)
        if base == "str" and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{key}: expected {base}, got {value!r}")
