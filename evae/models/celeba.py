"""The convolutional VAE for 64x64 CelebA (docs/protocol.md section 3; the paper shows samples only).

Inputs are pixel levels 0..255 (the loader's uint8 images, flattened channel-first, any dtype); the
encoder sees them dequantised to (x + 0.5) / 256 and the likelihood is a discretized logistic over
the 256 levels with one learned log-scale per colour channel.

Choices where the paper is silent (the authors' exploratory model leaves them open):

* ``hidden`` is the width of the first convolution: channels hidden, 2, 4, 8 x hidden (the
  authors' 128, 256, 512, 1024 at ``hidden=128``), and the decoder mirrors them.
* Four 4x4 stride-2 convolutions with padding 1 (64 -> 4 pixels), each followed by BatchNorm and
  ELU; linear mean and log-variance (clipped to [-6, 2]) from the flattened 8h x 4 x 4 features.
* Decoder: linear to 8h x 8 x 8 (no normalisation or activation after it), three 4x4 stride-2
  transposed convolutions (padding 1) to 4h, 2h, h channels with BatchNorm and ELU (8 -> 64
  pixels), a 5x5 convolution (padding 2) to the 3 logistic locations, and 0.5 added to them so
  that a zero output sits mid-range. Log-scales start at log(1/16) (about a sixteenth of the range).
* BatchNorm runs in training mode for every encoder call while training, including the exemplar
  and pseudo-input batches that priors encode (their statistics enter the running averages);
  refresh and evaluation use the running averages (``model.eval()``).
* ``decode`` returns the mean level of the discretized logistic divided by 255 (in [0, 1], as the
  data are shown), ``draw_images`` a draw of it on the same scale; ``as_input`` takes such images back
  to levels (times 255) to be encoded again.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from evae.distributions import log_normal_diag, reparameterize
from evae.layers import GaussianHead
from evae.models.base import LatentVariableModel, Sample

LEVELS = 256
LOG_SCALE_INIT = math.log(1 / 16)


def dequantize(levels: torch.Tensor) -> torch.Tensor:
    """Pixel levels 0..255 to bin centres in (0, 1): (x + 0.5) / 256 (float32 unless already floating)."""
    return (_floating(levels) + 0.5) / LEVELS


def _floating(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_floating_point() else t.float()


def log_discretized_logistic(levels: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(levels) under a logistic(loc, exp(log_scale)) on [0, 1] discretized into 256 bins, summed over the last dim.

    Bin x covers [x / 256, (x + 1) / 256]; the first and last bins extend to -inf and +inf, so the
    256 probabilities sum to 1. Interior bins use the exact identity
    log(sigmoid(a) - sigmoid(b)) = a + log(1 - exp(b - a)) - softplus(a) - softplus(b),
    which stays finite where the difference of two sigmoids would round to zero.
    ``levels``, ``loc`` and ``log_scale`` broadcast together.
    """
    x = dequantize(levels)
    inv_scale = torch.exp(-log_scale)
    a = (x + 0.5 / LEVELS - loc) * inv_scale  # upper edge
    b = (x - 0.5 / LEVELS - loc) * inv_scale  # lower edge
    log_width = torch.log(-torch.expm1(-inv_scale / LEVELS))  # log(1 - exp(b - a)), b - a = -1 / (256 s)
    interior = a + log_width - F.softplus(a) - F.softplus(b)
    first = -F.softplus(-a)  # log sigmoid(a)
    last = -F.softplus(b)  # log (1 - sigmoid(b))
    levels = _floating(levels)
    out = torch.where(levels < 0.5, first, torch.where(levels > LEVELS - 1.5, last, interior))
    return out.sum(-1)


def discretized_logistic_mean(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Mean level (0..255) of the discretized logistic of `log_discretized_logistic`, elementwise.

    E[level] = sum over k = 1..255 of P(level >= k), and P(level >= k) = sigmoid((loc - k / 256) / s).
    """
    inv_scale = torch.exp(-log_scale)
    mean = torch.zeros_like(loc)
    for k in range(1, LEVELS):
        mean += torch.sigmoid((loc - k / LEVELS) * inv_scale)
    return mean


def discretized_logistic_draw(loc: torch.Tensor, log_scale: torch.Tensor,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Levels (0..255, float) drawn from the discretized logistic: a logistic draw, binned and clipped."""
    u = torch.rand(loc.shape, generator=generator).to(loc.device).clamp(1e-7, 1 - 1e-7)
    x = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return torch.floor(x * LEVELS).clamp(0, LEVELS - 1)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ELU())


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ELU())


class ConvVAE64(LatentVariableModel):
    """Convolutional VAE for 3 x 64 x 64 images with a discretized-logistic likelihood."""

    def __init__(self, prior, latent_dim: int = 128, hidden: int = 128, image_shape=(3, 64, 64)):
        super().__init__(prior, image_shape)
        c, h, w = image_shape
        if (h, w) != (64, 64):
            raise ValueError(f"ConvVAE64 is built for 64x64 images, got {h}x{w}")
        self.latent_dim = latent_dim
        widths = [hidden, 2 * hidden, 4 * hidden, 8 * hidden]
        self.encoder = nn.Sequential(
            _down(c, widths[0]), _down(widths[0], widths[1]), _down(widths[1], widths[2]), _down(widths[2], widths[3]),
            nn.Flatten(),
        )
        self.q_z = GaussianHead(widths[3] * 4 * 4, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, widths[3] * 8 * 8),
            nn.Unflatten(1, (widths[3], 8, 8)),
            _up(widths[3], widths[2]), _up(widths[2], widths[1]), _up(widths[1], widths[0]),
            nn.Conv2d(widths[0], c, 5, 1, 2),
            nn.Flatten(),
        )
        self.log_scale = nn.Parameter(torch.full((c,), LOG_SCALE_INIT))
        self._finish_init()

    def encode(self, x):
        return self.q_z(self.encoder(dequantize(x).view(-1, *self.image_shape)))

    def _loc(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) + 0.5

    def decode(self, z):
        return discretized_logistic_mean(self._loc(z), self._pixel_log_scale()) / (LEVELS - 1)

    def as_input(self, images):
        return images * (LEVELS - 1)  # pixel levels 0..255

    def draw_images(self, z, generator=None):
        return discretized_logistic_draw(self._loc(z), self._pixel_log_scale(), generator) / (LEVELS - 1)

    def _pixel_log_scale(self) -> torch.Tensor:
        c, h, w = self.image_shape
        return self.log_scale.repeat_interleave(h * w)  # channel-first flattening: [c * h * w]

    def sample_pass(self, x) -> Sample:
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar)
        return Sample(
            z=z,
            log_px=log_discretized_logistic(x, self._loc(z), self._pixel_log_scale()),
            log_q=log_normal_diag(z, mean, logvar),
            log_p_inner=torch.zeros_like(z[:, 0]),
        )
