"""The standard Gaussian prior p(z) = N(0, I)."""

from __future__ import annotations

import torch

from evae.distributions import log_standard_normal
from evae.priors import Prior


class GaussianPrior(Prior):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows the model's device

    @classmethod
    def from_config(cls, cfg, train_images: torch.Tensor) -> "GaussianPrior":
        return cls(cfg.latent_dim)

    def log_prob(self, z, encoder, index=None):
        return log_standard_normal(z)

    @torch.no_grad()
    def sample(self, n, encoder, generator=None, index=None):
        return torch.randn(n, self.latent_dim, generator=generator).to(self._anchor.device)
