"""The one-level MLP VAE: 784 -> G300 -> G300 -> z (40) -> G300 -> G300 -> 784."""

from __future__ import annotations

import torch
from torch import nn

from evae.distributions import log_bernoulli_logits, log_normal_diag, reparameterize
from evae.layers import GatedDense, GaussianHead
from evae.models.base import LatentVariableModel, Sample, bernoulli_means


class VAE(LatentVariableModel):
    def __init__(self, prior, latent_dim: int = 40, hidden: int = 300, image_shape=(1, 28, 28)):
        super().__init__(prior, image_shape)
        d = image_shape[0] * image_shape[1] * image_shape[2]
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(GatedDense(d, hidden), GatedDense(hidden, hidden))
        self.q_z = GaussianHead(hidden, latent_dim)
        self.decoder = nn.Sequential(GatedDense(latent_dim, hidden), GatedDense(hidden, hidden), nn.Linear(hidden, d))
        self._finish_init()

    def encode(self, x):
        return self.q_z(self.encoder(x))

    def decode(self, z):
        return bernoulli_means(self.decoder(z))

    def sample_pass(self, x) -> Sample:
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar)
        return Sample(
            z=z,
            log_px=log_bernoulli_logits(x, self.decoder(z)),
            log_q=log_normal_diag(z, mean, logvar),
            log_p_inner=torch.zeros_like(z[:, 0]),
        )
