"""The architecture registry: every model a study can name, with the images it models and its costs.

An `ArchitectureSpec` models the datasets of one image kind (`evae.data.registry`): the same image
shape, and binarised gray levels or colour levels. The config's architecture choices, the
pipeline's wildcards, which (dataset, architecture) pairs a study trains, and the scheduler's time and
memory requests are all read from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from evae.data.registry import BINARY_28, COLOUR_64, DatasetSpec
from evae.models.base import LatentVariableModel
from evae.models.celeba import ConvVAE64
from evae.models.hvae import HVAE, ConvHVAE
from evae.models.vae import VAE
from evae.registry import Registry


@dataclass(frozen=True, kw_only=True)
class ArchitectureSpec:
    """A model class and what a scheduler needs to know about it.

    The costs are generous CPU figures for one thread with the Gaussian prior (``evae.study`` adds the
    exemplar prior's share): training milliseconds per image, peak memory of the model and its
    activations, and importance samples scored per second (benchmarks/). With ``cost_width`` they hold
    at ``hidden == cost_width`` and scale linearly with ``hidden``; without, they are fixed.
    """

    name: str
    model: type[LatentVariableModel]
    image_shape: tuple[int, int, int]
    binary: bool
    train_ms_per_image: float
    memory_mb: int
    nll_samples_per_second: float
    cost_width: int | None = None

    def models(self, dataset: DatasetSpec) -> bool:
        """Whether this architecture can be trained on ``dataset``."""
        return (dataset.image_shape, dataset.binary) == (self.image_shape, self.binary)

    def cost_scale(self, hidden: int) -> float:
        return hidden / self.cost_width if self.cost_width else 1.0


ARCHITECTURES: Registry[ArchitectureSpec] = Registry("architecture")
register_architecture = ARCHITECTURES.register
get_architecture = ARCHITECTURES.spec


_BINARY = dict(image_shape=BINARY_28, binary=True)
register_architecture(ArchitectureSpec(name="vae", model=VAE, **_BINARY, train_ms_per_image=0.3, memory_mb=500,
                                       nll_samples_per_second=100_000))
register_architecture(ArchitectureSpec(name="hvae", model=HVAE, **_BINARY, train_ms_per_image=0.6, memory_mb=800,
                                       nll_samples_per_second=18_000))
register_architecture(ArchitectureSpec(name="convhvae", model=ConvHVAE, **_BINARY, train_ms_per_image=10.0,
                                       memory_mb=2500, nll_samples_per_second=250))
register_architecture(ArchitectureSpec(name="convvae64", model=ConvVAE64, image_shape=COLOUR_64, binary=False,
                                       train_ms_per_image=64.0, memory_mb=6000, nll_samples_per_second=20,
                                       cost_width=128))
