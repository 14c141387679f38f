"""AdamNormGrad: Adam applied to gradients divided by their per-tensor L2 norm (+1e-7)."""

from __future__ import annotations

import torch


class AdamNormGrad(torch.optim.Adam):
    NORM_EPS = 1e-7

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norms = torch._foreach_norm(grads)
            torch._foreach_div_(grads, torch._foreach_add(norms, self.NORM_EPS))
        return super().step(closure)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """``adamnormgrad`` (the paper's) or plain ``adam``; betas (0.9, 0.999), eps 1e-8, fused kernels."""
    cls = {"adamnormgrad": AdamNormGrad, "adam": torch.optim.Adam}[name]
    return cls(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
