"""Log-densities used throughout; each sums over the last dimension."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)
PROB_EPS = 1e-5  # Bernoulli means are clamped to [PROB_EPS, 1 - PROB_EPS]


def log_normal_diag(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def log_bernoulli(x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """log p(x) of binary ``x`` under Bernoulli means ``probs`` (already clamped away from 0 and 1)."""
    return (x * torch.log(probs) + (1 - x) * torch.log1p(-probs)).sum(-1)


def logmeanexp(a: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
