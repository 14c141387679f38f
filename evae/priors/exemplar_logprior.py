"""The exemplar prior's test-time log-density for the S importance samples of one image: the NLL hot spot
(``ExemplarPrior.evaluation_log_prob``).

log p(z_s) = log (1/N) sum_n N(z_s; mu_n, s^2 I) over all N exemplar means (no leave-one-out).
Everything is centred on the image's posterior mean c (w_s = z_s - c, v_n = mu_n - c), where the
numbers that matter are small, and split as

    log N(z_s; mu_n, s^2 I) = e_sn - |w_s|^2 / (2 s^2) - D/2 log(2 pi s^2),
    e_sn = (w_s . v_n) / s^2 - |v_n|^2 / (2 s^2).

Exemplars are visited in increasing d_n = |v_n|, in tiles of [rows x cols] (samples x exemplars). The
first tile of a row block sets each row's shift m_s (its maximum there: the nearest exemplars);
every later tile is one float32 ``addmm`` that yields e_sn - m_s directly (the shift rides along as an
extra column), then clamp, exp and a row sum: four passes over the tile, the matmul at full speed.
Row sums are accumulated in float64; a row whose tile holds values above m_s + 79 (which the clamp
would cut) is recomputed with a new shift. Tested against a float64 brute force to 1e-6 relative.

The clamp at m_s - 80 keeps float32 ``exp`` out of its underflow range (20-90x slower there); it adds at
most N e^-80 (< 1e-29) relative to a row's mass, which is >= 1 after its first tile.

Certified mode (``bound`` in nats) stops before the farthest exemplars when the triangle inequality
proves they cannot matter. Rows are first sorted by |w_s|, so that each row block holds samples at
similar distances from c; with r = max_s |w_s| over the block, |w_s - v_n| >= max(0, d_n - r), so
the skipped mass of row s is at most exp(|w_s|^2 / (2 s^2)) sum_{n >= k} exp(-max(0, d_n - r)^2 / (2 s^2)).
Each row leaves the walk at the first tile where log(1 + skipped bound / mass so far) <= bound; the
exact log p(z_s) then lies in [returned, returned + certified], certified <= bound. In 40
dimensions this bound is loose when the posterior is wide compared with s (samples and exemplars sit
nearly orthogonally around c): see benchmarks/nll.py for how much it skips.
"""

from __future__ import annotations

import math
import torch

from evae.distributions import LOG_2PI
from evae.priors.base import PriorEvaluation

ROWS, COLS = 512, 1024  # tile shape: [512 x 1024] float32 = 2 MB, about the L2 cache of one core
CLAMP = 80.0  # exp arguments are clamped to [-CLAMP, CLAMP] around the row shift
_RESHIFT = math.exp(CLAMP - 1)  # a tile row sum this large may hold clamped values: recompute it


def exemplar_log_prior(
    z: torch.Tensor,
    centre: torch.Tensor,
    means: torch.Tensor,
    logvar: torch.Tensor | float,
    bound: float | None = None,
    rows: int = ROWS,
    cols: int = COLS,
) -> PriorEvaluation:
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
    order = torch.argsort(v_sq)
    v, v_sq = v[order], v_sq[order]
    w_half_sq = (w * w).sum(1) * (0.5 / var)  # |w_s|^2 / (2 s^2), float64
    if bound is not None:  # row blocks of similar |w_s|: each block's radius r is then close to its rows' own
        rows_order = torch.argsort(w_half_sq)
        w, w_half_sq = w[rows_order], w_half_sq[rows_order]
    # e_sn - m_s = [w_s / s^2, -m_s] . [v_n, 1] - |v_n|^2 / (2 s^2): the last column of w_aug holds -m_s
    w_aug = torch.cat([(w / var).float(), torch.zeros(len(w), 1, dtype=torch.float32, device=w.device)], 1)
    v_aug = torch.cat([v.float(), torch.ones(n, 1, dtype=torch.float32, device=v.device)], 1)
    bias = (v_sq * (-0.5 / var)).float()

    log_mass = torch.empty(len(z), dtype=torch.float64, device=z.device)
    log_skipped = torch.full_like(log_mass, -math.inf)
    computed = 0
    for r0 in range(0, len(z), rows):
        sl = slice(r0, r0 + rows)
        tail = None
        if bound is not None:
            radius = float(w_half_sq[sl].mul(2 * var).sqrt().max())
            gap = (v_sq.sqrt() - radius).clamp_min(0)
            tail = torch.logcumsumexp((gap * gap * (-0.5 / var)).flip(0), 0).flip(0)
        computed += _row_block(w_aug[sl], v_aug, bias, cols, log_mass[sl], log_skipped[sl], tail, w_half_sq[sl], bound)

    const = 0.5 * d * (LOG_2PI + math.log(var)) + math.log(n)
    log_prob = log_mass - w_half_sq - const
    if bound is None:
        return PriorEvaluation(log_prob, 0.0, computed / (len(z) * n))
    certified = float(torch.log1p(torch.exp(log_skipped - log_mass)).max())
    return PriorEvaluation(log_prob[torch.argsort(rows_order)], certified, computed / (len(z) * n))


def _row_block(w_aug, v_aug, bias, cols, log_mass, log_skipped, tail, w_half_sq, bound) -> int:
    """Fill ``log_mass`` (log sum_n exp(e_sn)) for one block of rows; with ``tail``, stop where certified.

    In certified mode each row leaves the walk at the first tile where its own skipped-mass bound fits
    the budget. Returns the number of kernels computed. ``w_aug``'s shift column is written in place.
    """
    n = len(bias)
    w_aug[:, -1] = 0
    first = torch.addmm(bias[:cols], w_aug, v_aug[:cols].T)
    shift = first.amax(1)
    mass = _exp_sum(first.sub_(shift.unsqueeze(1)))
    w_aug[:, -1] = -shift
    computed = first.numel()
    slack = math.log(math.expm1(bound)) if bound else -math.inf
    active = torch.arange(len(w_aug), device=w_aug.device)  # rows still walking
    for c0 in range(cols, n, cols):
        if tail is not None:
            rest = tail[c0] + w_half_sq[active] - shift[active].double()  # log bound on the rest, vs the shift
            done = rest <= mass[active].log() + slack
            if bool(done.any()):
                log_skipped[active[done]] = rest[done] + shift[active[done]].double()
                active = active[~done]
                if len(active) == 0:
                    break
        rows = w_aug[active]
        tile = torch.addmm(bias[c0 : c0 + cols], rows, v_aug[c0 : c0 + cols].T)  # e_sn - m_s
        computed += tile.numel()
        part = _exp_sum(tile)
        high = part >= _RESHIFT
        if bool(high.any()):  # values above m_s + 79 were clamped: recompute these rows with a larger shift
            again = torch.addmm(bias[c0 : c0 + cols], rows[high], v_aug[c0 : c0 + cols].T)
            top = again.amax(1)
            idx = active[high]
            new_shift = shift[idx] + top
            mass[idx] = mass[idx] * torch.exp(shift[idx].double() - new_shift.double())
            part[high] = _exp_sum(again.sub_((new_shift - shift[idx]).unsqueeze(1)))
            shift[idx] = new_shift
            w_aug[idx, -1] = -new_shift
        mass[active] += part
    log_mass.copy_(shift.double() + mass.log())
    return computed


def _exp_sum(shifted: torch.Tensor) -> torch.Tensor:
    """Row sums of exp(``shifted``) (overwritten), arguments clamped to [-CLAMP, CLAMP]; float64."""
    return shifted.clamp_(-CLAMP, CLAMP).exp_().sum(1).double()
