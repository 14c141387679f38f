"""Gated layers and initialisation of the paper's networks (docs/protocol.md section 3).

A gated layer keeps its two maps A (``h``) and B (``g``) as separate modules, as the authors' code
does: AdamNormGrad normalises each parameter tensor by its own norm, so merging A and B into one
tensor of twice the width would change the optimiser (measured: no speed gain on CPU either).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOGVAR_MIN, LOGVAR_MAX = -6.0, 2.0


class GatedDense(nn.Module):
    """``h(x) * sigmoid(g(x))`` with two linear maps ``h`` and ``g`` (no activation on ``h``)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.h = nn.Linear(n_in, n_out)
        self.g = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConv2d(nn.Module):
    """``h(x) * sigmoid(g(x))`` with two convolutions of the same shape."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.h = nn.Conv2d(c_in, c_out, kernel, stride, padding)
        self.g = nn.Conv2d(c_in, c_out, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GaussianHead(nn.Module):
    """Linear mean and log-variance heads; the log-variance is hard-clipped to [-6, 2].

    The clip is ``clamp`` (the authors use ``Hardtanh``: same values, same zero gradient outside).
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.mean = nn.Linear(n_in, n_out)
        self.logvar = nn.Linear(n_in, n_out)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(h), self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)


@torch.no_grad()
def he_init(module: nn.Module) -> None:
    """He-normal weights N(0, 2 / fan_in) for every ``nn.Linear`` inside ``module``, as the authors do.

    Like the authors' code, biases and convolutions keep PyTorch's default initialisation
    (docs/protocol.md section 3 prescribes only the linear weights).
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, math.sqrt(2.0 / m.in_features))
