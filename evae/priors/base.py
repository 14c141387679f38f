"""The interface every prior implements: a log-density, sampling, and a per-epoch refresh hook.

Priors that are built from the model's own encoder (VampPrior, Exemplar) receive it as an argument
rather than holding it, so the model owns its prior and never the other way round.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Prior(nn.Module):
    """p(z) over the model's top latent."""

    def log_prob(self, z: torch.Tensor, encoder: Encoder, index: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z) for each row of ``z`` [B, D]. ``index`` gives each row's position in the training set
        (the exemplar prior leaves that exemplar out while training); other priors ignore it."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        encoder: Encoder,
        generator: torch.Generator | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` draws from p(z). Mixture priors pick components uniformly, or those in ``index``."""
        raise NotImplementedError

    def evaluation_log_prob(self, z: torch.Tensor, encoder: Encoder) -> torch.Tensor:
        """log p(z) in float64 for the many samples of an evaluation (no leave-one-out). Default: ``log_prob``."""
        return self.log_prob(z, encoder).double()

    @torch.no_grad()
    def refresh(self, encoder: Encoder) -> None:
        """Called after every training epoch (before validation) and before evaluation. Default: nothing."""

    def describe(self) -> dict:
        """Settings and learned scalars worth logging with every number."""
        return {}
