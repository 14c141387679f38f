"""What every latent-variable model here provides, and the ELBO built from it.

The compared prior (Gaussian, VampPrior, Exemplar) always sits on the *top* latent: z for the
one-level VAE, z2 for the two-level models. A model reports, for one reparameterised sample, the
pieces of its log-weight other than that prior, so training (ELBO) and evaluation (importance
weighting) share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evae.distributions import PROB_EPS
from evae.layers import he_init
from evae.priors.base import Prior


@dataclass
class Sample:
    """One reparameterised pass through the model for a batch of images (all tensors [B] but ``z``)."""

    z: torch.Tensor  # top latent, [B, D]: where the compared prior is evaluated
    log_px: torch.Tensor  # log p(x | latents)
    log_q: torch.Tensor  # log q(all latents | x)
    log_p_inner: torch.Tensor  # log p(lower latents | z); zero for one-level models

    def log_weight(self, log_prior: torch.Tensor) -> torch.Tensor:
        """log p(x, latents) - log q(latents | x): the importance weight's logarithm."""
        return self.log_px + self.log_p_inner + log_prior - self.log_q


class LatentVariableModel(nn.Module):
    """Base class: subclasses build their networks, then call ``self._finish_init()``."""

    latent_dim: int

    def __init__(self, prior: Prior, image_shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__()
        self.image_shape = image_shape
        self.prior = prior

    def _finish_init(self) -> None:
        he_init(self)

    # -- to implement --
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(top latent | x) for flat images ``x`` [B, 784]."""
        raise NotImplementedError

    def sample_pass(self, x: torch.Tensor) -> Sample:
        """One reparameterised draw of all latents from q(. | x) and the log-densities around it."""
        raise NotImplementedError

    def sample_passes(self, x: torch.Tensor, n: int) -> Sample:
        """``n`` reparameterised passes for ONE flat image ``x`` [P]: ``sample_pass`` on ``x`` repeated ``n`` times
        (the same random numbers); models override it to compute what depends on ``x`` alone once."""
        return self.sample_pass(x.reshape(1, -1).expand(n, -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean image of p(x | top latent ``z``), in [0, 1]: the Bernoulli means for the binary models
        (lower latents drawn from their conditional prior)."""
        raise NotImplementedError

    def as_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images on the scale ``decode`` returns ([0, 1]) as ``encode`` takes them: unchanged for the binary
        models, whose inputs are gray levels in [0, 1]."""
        return images

    def draw_images(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image drawn from p(x | top latent ``z``), in [0, 1]: binary for the Bernoulli decoders."""
        means = self.decode(z)
        return (torch.rand(means.shape, generator=generator).to(means.device) < means).to(means.dtype)

    # -- shared --
    def log_prior(self, z: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.prior.log_prob(z, self.encode, index=index)

    def elbo_terms(self, x: torch.Tensor, index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image reconstruction term and single-sample KL estimate (both [B])."""
        s = self.sample_pass(x)
        kl = s.log_q - s.log_p_inner - self.log_prior(s.z, index)
        return {"rec": s.log_px, "kl": kl}

    def loss(self, x: torch.Tensor, index: torch.Tensor | None = None, beta: float = 1.0):
        """Mean negative beta-ELBO over the batch, plus the mean terms for logging."""
        t = self.elbo_terms(x, index)
        loss = -(t["rec"] - beta * t["kl"]).mean()
        return loss, {"rec": t["rec"].mean().detach(), "kl": t["kl"].mean().detach()}

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None, index: torch.Tensor | None = None,
                 draws: bool = False):
        """Decoder means of ``n`` prior samples (with ``draws``, images drawn from the decoder instead);
        ``index`` picks exemplars / pseudo-inputs where the prior has them.

        ``generator`` drives the prior draw and the image draws; the lower latent of two-level models
        (z1 ~ p(z1 | z2), a sample, as the authors generate) comes from the global torch RNG.
        """
        z = self.prior.sample(n, self.encode, generator=generator, index=index)
        return self.draw_images(z, generator) if draws else self.decode(z)


def bernoulli_means(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits).clamp(PROB_EPS, 1 - PROB_EPS)
