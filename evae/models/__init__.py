"""Model and prior construction from a training config."""

from __future__ import annotations

import torch

from evae.models.base import LatentVariableModel, Sample
from evae.models.celeba import ConvVAE64
from evae.models.hvae import HVAE, ConvHVAE
from evae.models.registry import ARCHITECTURES, ArchitectureSpec, get_architecture, register_architecture
from evae.models.vae import VAE
from evae.priors import prior_class

__all__ = [
    "ARCHITECTURES", "ArchitectureSpec", "ConvHVAE", "ConvVAE64", "HVAE", "LatentVariableModel", "Sample", "VAE",
    "build_model", "get_architecture", "prior_class", "register_architecture",
]


def build_model(cfg, train_images: torch.Tensor, image_shape=(1, 28, 28)) -> LatentVariableModel:
    """Build ``cfg.architecture`` with ``cfg.prior``; ``train_images`` are the exemplars [N, pixels]
    (gray levels in [0, 1] for the binary datasets, uint8 levels for the colour ones)."""
    prior = prior_class(cfg.prior).from_config(cfg, train_images)
    model = get_architecture(cfg.architecture).model
    return model(prior, latent_dim=cfg.latent_dim, hidden=cfg.hidden, image_shape=image_shape)
