"""Model and prior construction from a training config."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch

from evae.models.base import LatentVariableModel, Sample
from evae.models.celeba import ConvVAE64
from evae.models.hvae import HVAE, ConvHVAE
from evae.models.vae import VAE

ARCHITECTURES = {"vae": VAE, "hvae": HVAE, "convhvae": ConvHVAE, "convvae64": ConvVAE64}

__all__ = [
    "ARCHITECTURES", "ConvHVAE", "ConvVAE64", "HVAE", "LatentVariableModel", "Sample", "VAE", "build_model", "prior_class",
]


def prior_class(name: str) -> type:
    """The prior registered under ``name`` in the ``evae.priors`` entry-point group."""
    found = {ep.name: ep for ep in entry_points(group="evae.priors")}
    if name not in found:
        raise KeyError(
            f"unknown prior {name!r}; registered priors: {sorted(found)} (is the package installed with pip install -e .?)"
        )
    return found[name].load()


def build_model(cfg, train_images: torch.Tensor, image_shape=(1, 28, 28)) -> LatentVariableModel:
    """Build ``cfg.architecture`` with ``cfg.prior``; ``train_images`` are the exemplars [N, pixels]
    (gray levels in [0, 1] for the binary datasets, uint8 levels for CelebA)."""
    prior = prior_class(cfg.prior).from_config(cfg, train_images)
    return ARCHITECTURES[cfg.architecture](prior, latent_dim=cfg.latent_dim, hidden=cfg.hidden, image_shape=image_shape)
