"""The VampPrior (Tomczak & Welling, 2018): p(z) = (1/K) sum_k q(z | u_k) over K learned pseudo-inputs.

Pseudo-inputs are kept in [0, 1] by a hard tanh of free parameters initialised N(0.05, 0.01): the
VampPrior code's bias-free linear layer applied to one-hot inputs, whose weight columns are exactly
these parameters (so AdamNormGrad normalises the same single tensor). Each component uses the full
posterior (mean and diagonal variance) of its pseudo-input.

Pseudo-inputs live in the units of the training images: [0, 1] gray levels, or for uint8 images
(CelebA levels 0..255, an extension beyond the paper) the [0, 1] values times 255.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evae.priors import Prior
from evae.priors.base import PriorEvaluation
from evae.priors.mixture import diagonal_mixture_log_prob


class VampPrior(Prior):
    def __init__(
        self, input_dim: int, num_pseudo: int = 500, init_mean: float = 0.05, init_std: float = 0.01, scale: float = 1.0
    ):
        super().__init__()
        self.scale = scale
        self.pseudo_raw = nn.Parameter(torch.randn(num_pseudo, input_dim) * init_std + init_mean)

    @classmethod
    def from_config(cls, cfg, train_images: torch.Tensor) -> "VampPrior":
        scale = 255.0 if train_images.dtype == torch.uint8 else 1.0
        return cls(train_images.shape[1], cfg.pseudo_inputs, scale=scale)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        u = F.hardtanh(self.pseudo_raw, 0.0, 1.0)
        return u if self.scale == 1.0 else u * self.scale

    def describe(self) -> dict:
        return {"num_pseudo": self.pseudo_raw.shape[0]}

    def log_prob(self, z, encoder, index=None):
        """Through matrix products in float64 (``diagonal_mixture_log_prob``), returned in ``z``'s dtype."""
        means, logvars = encoder(self.pseudo_inputs)
        return diagonal_mixture_log_prob(z, means, logvars).to(z.dtype)

    def evaluation_log_prob(self, z, encoder, centre=None, bound=None, posterior_logvar=None):
        """The same density in float64; always exact."""
        means, logvars = encoder(self.pseudo_inputs)
        return PriorEvaluation(diagonal_mixture_log_prob(z, means, logvars))

    @torch.no_grad()
    def sample(self, n, encoder, generator=None, index=None):
        if index is None:
            index = torch.randint(self.pseudo_raw.shape[0], (n,), generator=generator)
        means, logvars = encoder(self.pseudo_inputs[index.to(self.pseudo_raw.device)])
        noise = torch.randn(means.shape, generator=generator).to(means.device)
        return means + torch.exp(0.5 * logvars) * noise
