"""The interface every prior implements: a log-density, sampling, a per-epoch refresh hook, and the
evaluation-time density (with the certificate of a pruned mixture).

Priors that are built from the model's own encoder (VampPrior, Exemplar) receive it as an argument
rather than holding it, so the model owns its prior and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class PriorEvaluation:
    """log p(z) for every sample of an evaluation, and how it was obtained."""

    log_prob: torch.Tensor  # [S] float64
    certified: float = 0.0  # nats: exact log p(z_s) lies in [log_prob, log_prob + certified] for every s
    computed_fraction: float = 1.0  # share of the mixture's (sample, component) kernels computed


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

    prunable = False  # whether evaluation_log_prob can skip components within a certified ``bound``

    def evaluation_log_prob(
        self,
        z: torch.Tensor,
        encoder: Encoder,
        centre: torch.Tensor | None = None,
        bound: float | None = None,
        posterior_logvar: torch.Tensor | None = None,
    ) -> PriorEvaluation:
        """log p(z) in float64 for the many samples ``z`` [S, D] of one image's evaluation (no leave-one-out).

        ``centre`` and ``posterior_logvar`` [D] are the image's posterior mean and log-variance; ``bound``
        (nats) lets a ``prunable`` prior skip components certified to change log p(z) by at most that much
        (the posterior's shape tightens the certificate). Default: ``log_prob``, exact, the rest unused.
        """
        return PriorEvaluation(self.log_prob(z, encoder).double())

    def component_scale(self) -> float | None:
        """The standard deviation s of isotropic components N(mu(x_n), s^2 I) around training images, for
        priors built of them (what generative augmentation perturbs encoder means by); None otherwise."""
        return None

    def truncation_gaps(self, z: torch.Tensor, ks) -> dict[int, torch.Tensor]:
        """Per row of ``z``, the nats log p(z) loses when only its k largest components are kept (the mixture's
        1/N normaliser unchanged), for each k of ``ks``. Only for mixtures over training images."""
        raise ValueError(f"{type(self).__name__} is not a mixture over training images: it has no k-nearest truncation")

    @torch.no_grad()
    def refresh(self, encoder: Encoder) -> None:
        """Called after every training epoch (before validation) and before evaluation. Default: nothing."""

    def describe(self) -> dict:
        """Settings and learned scalars worth logging with every number."""
        return {}
