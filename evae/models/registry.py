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

    The costs are CPU figures for one torch thread, measured where a comment says so on the README's "Speed"
    host (benchmarks/; ``evae.study`` turns them into requests): milliseconds of a Gaussian-prior training
    epoch per training image (steps, refresh and validation), milliseconds each image a prior encodes with
    gradients in a step adds (pseudo-inputs, retrieved neighbours, exemplars), importance samples scored per
    second, and the peak memory of the model and its activations. With ``cost_width`` they hold at
    ``hidden == cost_width`` and scale linearly with ``hidden``; without, they are fixed.
    """

    name: str
    model: type[LatentVariableModel]
    image_shape: tuple[int, int, int]
    binary: bool
    train_ms_per_image: float
    encode_ms_per_image: float
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
# Measured (README "Speed", 1 thread, MNIST, batch 100): train_ms_per_image is the Gaussian-prior epoch over 50,000
# images; encode_ms_per_image the largest of (prior epoch - Gaussian epoch) / (500 steps x images encoded a step)
# over the VampPrior, kNN and exact rows; nll_samples_per_second the whole Gaussian-model estimate at S = 5000.
# vae: 5.4 s an epoch; kNN from trained weights 52.6 s encoding 1,087 a step; 19.8 test images/s
register_architecture(ArchitectureSpec(name="vae", model=VAE, **_BINARY, train_ms_per_image=0.108,
                                       encode_ms_per_image=0.087, memory_mb=500, nll_samples_per_second=99_000))
# hvae: 17.6 s an epoch; kNN 40.4 s encoding 654 a step; 6.2 test images/s
register_architecture(ArchitectureSpec(name="hvae", model=HVAE, **_BINARY, train_ms_per_image=0.352,
                                       encode_ms_per_image=0.070, memory_mb=800, nll_samples_per_second=31_000))
# convhvae: 735 s an epoch; exact mode 56x that, encoding ~19,700 a step; 0.05 test images/s
register_architecture(ArchitectureSpec(name="convhvae", model=ConvHVAE, **_BINARY, train_ms_per_image=14.7,
                                       encode_ms_per_image=4.2, memory_mb=2500, nll_samples_per_second=250))
# convvae64: not measured; from its multiply-adds (~5 GFLOP a 64x64 image forward and backward, the encoder half)
register_architecture(ArchitectureSpec(name="convvae64", model=ConvVAE64, image_shape=COLOUR_64, binary=False,
                                       train_ms_per_image=64.0, encode_ms_per_image=32.0, memory_mb=6000,
                                       nll_samples_per_second=20, cost_width=128))
