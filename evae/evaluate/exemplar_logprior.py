"""The exemplar prior's test-time log-density for the S importance samples of one image: the NLL hot spot.

log p(z_s) = log (1/N) sum_n N(z_s; mu_n, s^2 I) over all N exemplar means (no leave-one-out).
Everything is centred on the image's posterior mean c (w_s = z_s - c, v_n = mu_n - c), where the
numbers that matter are small, and split as

    log N(z_s; mu_n, s^2 I) = e_sn - |w_s|^2 / (2 s^2) - D/2 log(2 pi s^2),
    e_sn = (w_s . v_n) / s^2 - |v_n|^2 / (2 s^2)        (one float32 ``addmm`` per tile).

Tiles of [rows x cols] (samples x exemplars) are reduced to a row-wise log-sum-exp in float32
(max-shifted, positive terms) and accumulated across tiles in float64. The per-row terms are float64.
Tested against a float64 brute force to 1e-6 relative.

Certified mode (``bound`` in nats): exemplars are visited in increasing d_n = |v_n|, and work is skipped
only where it provably changes no log p(z_s) by more than ``bound``. With K_s the kernel mass summed
so far and U_s an upper bound on the mass skipped so far, a skip is taken only if afterwards
log(1 + U_s / K_s) <= bound for every row; K_s only grows, so the final log p(z_s) lies in
[returned, returned + certified] with certified <= bound. Two kinds of skip:

* the rest of the exemplars, without computing them, by the triangle inequality: with
  r = max_s |w_s| over the row block, |w_s - v_n| >= max(0, d_n - r), so
  e_sn <= |w_s|^2 / (2 s^2) - max(0, d_n - r)^2 / (2 s^2) (summed over the tail in float64);
* the exponentials of one tile, after its ``addmm``, by its exact row maxima:
  sum_{n in tile} exp(e_sn) <= cols * exp(max_n e_sn) (plus a float32 rounding margin).

In 40 dimensions the triangle bound is loose (samples and exemplars sit nearly orthogonally around c),
so on trained models most of the saving comes from the second kind; see benchmarks/nll.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from evae.distributions import LOG_2PI

ROWS, COLS = 512, 2048  # tile shape: [512 x 2048] float32 = 4 MB, about the L2 cache of one core
_U32 = 2.0**-24  # float32 unit roundoff


@dataclass
class MixtureLogDensity:
    """log p(z_s) for every sample of one image, and how it was obtained."""

    log_prob: torch.Tensor  # [S] float64
    certified: float  # nats: exact log p(z_s) lies in [log_prob, log_prob + certified] for every s
    computed_fraction: float  # share of (sample, exemplar) pairs whose e_sn was computed
    summed_fraction: float  # share whose exp(e_sn) entered the sum


def exemplar_log_prior(
    z: torch.Tensor,
    centre: torch.Tensor,
    means: torch.Tensor,
    logvar: torch.Tensor | float,
    bound: float | None = None,
    rows: int = ROWS,
    cols: int = COLS,
) -> MixtureLogDensity:
    """log (1/N) sum_n N(z_s; means_n, exp(logvar) I) for ``z`` [S, D], centred on ``centre`` [D].

    ``bound=None`` sums every kernel; a number (nats, >= 0) allows certified skipping (module docstring).
    """
    if bound is not None and not bound >= 0:
        raise ValueError(f"exemplar bound must be >= 0 nats or None (exact), got {bound}")
    if z.ndim != 2 or means.ndim != 2 or z.shape[1] != means.shape[1] or centre.shape != (z.shape[1],):
        raise ValueError(
            f"expected z [S, D], centre [D], means [N, D]; got {tuple(z.shape)}, {tuple(centre.shape)}, "
            f"{tuple(means.shape)}"
        )
    n, d = means.shape
    var = math.exp(float(logvar))
    c = centre.double()
    w = z.double() - c
    v = means.double() - c
    v_sq = (v * v).sum(1)
    if bound is not None:
        order = torch.argsort(v_sq)
        v, v_sq = v[order], v_sq[order]
    w_scaled32 = (w / var).float()
    v32 = v.float()
    bias32 = (v_sq * (-0.5 / var)).float()
    w_half_sq = (w * w).sum(1) * (0.5 / var)  # |w_s|^2 / (2 s^2), float64

    log_mass = torch.full((len(z),), -math.inf, dtype=torch.float64, device=z.device)
    log_skipped = torch.full_like(log_mass, -math.inf)
    computed = summed = 0
    if bound is None:
        for r0 in range(0, len(z), rows):
            for c0 in range(0, n, cols):
                tile = _tile(w_scaled32[r0 : r0 + rows], v32, bias32, c0, cols)
                log_mass[r0 : r0 + rows] = torch.logaddexp(log_mass[r0 : r0 + rows], _row_log_sum_exp(tile, tile.amax(1)))
        computed = summed = len(z) * n
    else:
        slack = math.log(math.expm1(bound)) if bound > 0 else -math.inf
        dist = v_sq.sqrt()
        for r0 in range(0, len(z), rows):
            sl = slice(r0, r0 + rows)
            c_, s_ = _certified_rows(
                w_scaled32[sl], w_half_sq[sl], v32, bias32, dist, var, slack, log_mass[sl], log_skipped[sl], cols, d
            )
            computed += c_
            summed += s_

    const = 0.5 * d * (LOG_2PI + math.log(var)) + math.log(n)
    certified = float(torch.log1p(torch.exp(log_skipped - log_mass)).max()) if bound is not None else 0.0
    total = len(z) * n
    return MixtureLogDensity(log_mass - w_half_sq - const, certified, computed / total, summed / total)


def _tile(w_scaled32, v32, bias32, c0, cols) -> torch.Tensor:
    """e_sn for the rows given and exemplars [c0, c0 + cols), float32."""
    return torch.addmm(bias32[c0 : c0 + cols], w_scaled32, v32[c0 : c0 + cols].T)


def _row_log_sum_exp(tile: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Row-wise log sum exp of ``tile`` (overwritten) given its row maxima ``top``, returned in float64.

    Shifted values are floored at -80 before ``exp``: float32 ``exp`` is ~20x slower where it underflows
    into subnormals, and the floor adds at most cols * e^-80 (< 1e-30) relative to a row's sum.
    """
    mass = tile.sub_(top.unsqueeze(1)).clamp_min_(-80.0).exp_().sum(1)
    return top.double() + mass.double().log()


def _certified_rows(w_scaled32, w_half_sq, v32, bias32, dist, var, slack, log_mass, log_skipped, cols, d):
    """Certified skipping for one block of rows; updates ``log_mass`` and ``log_skipped`` in place."""
    n = len(dist)
    w_norm = w_half_sq.mul(2 * var).sqrt()  # |w_s|, float64
    radius = float(w_norm.max())
    # log of the triangle-inequality bound on sum_{n >= k} exp(e_sn), without the row term |w_s|^2/(2 s^2)
    gap = (dist - radius).clamp_min(0)
    tail = torch.logcumsumexp((gap * gap * (-0.5 / var)).flip(0), 0).flip(0)
    budget = lambda: log_mass + slack  # noqa: E731  (log of (e^bound - 1) K_s)
    computed = summed = 0
    for c0 in range(0, n, cols):
        rest = tail[c0] + w_half_sq
        if bool((torch.logaddexp(log_skipped, rest) <= budget()).all()):
            log_skipped.copy_(torch.logaddexp(log_skipped, rest))
            break
        tile = _tile(w_scaled32, v32, bias32, c0, cols)
        top = tile.amax(1)
        width = tile.shape[1]
        computed += tile.numel()
        # float32 rounding of e_sn: |error| <= (D + 6) u (|w_s| |v_n| / s^2 + |v_n|^2 / (2 s^2)) for the tile's largest |v_n|
        v_max = float(dist[c0 : c0 + cols].max())
        margin = (d + 6) * _U32 * (w_norm * v_max / var + v_max * v_max * (0.5 / var))
        upper = top.double() + margin + math.log(width)
        if bool((torch.logaddexp(log_skipped, upper) <= budget()).all()):
            log_skipped.copy_(torch.logaddexp(log_skipped, upper))
            continue
        log_mass.copy_(torch.logaddexp(log_mass, _row_log_sum_exp(tile, top)))
        summed += tile.numel()
    return computed, summed
