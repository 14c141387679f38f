"""Gated layers and initialisation of the paper's networks (method.md section 3)."""

from __future__ import annotations

import torch
from torch import nn

LOGVAR_MIN, LOGVAR_MAX = -6.0, 2.0


class GatedDense(nn.Module):
    """``A x * sigmoid(B x)``, with A and B stored as one linear map of twice the width (one matmul)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, g = self.linear(x).chunk(2, dim=-1)
        return h * torch.sigmoid(g)


class GatedConv2d(nn.Module):
    """``conv_a(x) * sigmoid(conv_b(x))``, both convolutions computed as one with twice the channels."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, 2 * c_out, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, g = self.conv(x).chunk(2, dim=1)
        return h * torch.sigmoid(g)


class GaussianHead(nn.Module):
    """Linear mean and log-variance heads; the log-variance is hard-clipped to [-6, 2]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.mean = nn.Linear(n_in, n_out)
        self.logvar = nn.Linear(n_in, n_out)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(h), self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)


def he_init(module: nn.Module) -> None:
    """He-normal weights (std sqrt(2 / fan_in)) and zero biases for every linear layer, as the authors do."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
