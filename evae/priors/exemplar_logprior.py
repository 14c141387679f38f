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

Certified mode (``bound`` in nats) stops before the farthest exemplars when a bound proves they cannot
matter. Each row block gets one bound per exemplar, e_sn <= b_n for all its rows s, and the suffix sums
T_k = log sum_{n >= k} exp(b_n) in visiting order (sound in any order; the order sets how early rows
stop). Each row leaves the walk at the first tile where log(1 + exp(T_k) / mass so far) <= bound; the
exact log p(z_s) then lies in [returned, returned + certified], certified <= bound.

* Isotropic (triangle inequality): rows sorted by |w_s|; with r = max_s |w_s| over the block,
  |w_s - v_n| >= max(0, d_n - r), so e_sn <= |w_s|^2 / (2 s^2) - max(0, d_n - r)^2 / (2 s^2) (the first
  term per row). Exemplars are visited in increasing d_n.
* Mahalanobis (with the posterior std sigma [D] of the samples, ``posterior_logvar``): rows sorted by
  |w_s / sigma|, R = its maximum over the block. By Cauchy-Schwarz in the sigma-scaled space,
  w_s . v_n = (w_s / sigma) . (sigma v_n) <= R |sigma v_n|, so e_sn <= (R |sigma v_n| - |v_n|^2 / 2) / s^2.
  Where the posterior is narrow (active latent dimensions) and exemplars differ from c, |sigma v_n| is
  much smaller than r |v_n| / R; wide, inactive dimensions, where exemplars agree with c, cost nothing.
  b_n is the smaller of this and the isotropic bound at the block's radius (r^2 for every |w_s|^2), and
  exemplars are visited in decreasing b_n at the median R. sigma only shapes the bound: R is measured
  on the samples, so any sigma is sound.

In 40 dimensions both bounds are loose when the posterior is wide compared with s (samples and
exemplars sit nearly orthogonally around c): see benchmarks/nll.py for how much they skip.
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
    posterior_logvar: torch.Tensor | None = None,
    rows: int = ROWS,
    cols: int = COLS,
) -> PriorEvaluation:
    """log (1/N) sum_n N(z_s; means_n, exp(logvar) I) for ``z`` [S, D], centred on ``centre`` [D].

    ``bound=None`` sums every kernel; a number (nats, >= 0) allows certified skipping (module docstring),
    tighter with ``posterior_logvar`` [D], the log-variance of the posterior the samples were drawn from
    (any positive scale is sound: it only shapes the bound). The exact mode does not use it.
    """
    if bound is not None and not bound >= 0:
        raise ValueError(f"exemplar bound must be >= 0 nats or None (exact), got {bound}")
    if z.ndim != 2 or means.ndim != 2 or z.shape[1] != means.shape[1] or centre.shape != (z.shape[1],):
        raise ValueError(
            f"expected z [S, D], centre [D], means [N, D]; got {tuple(z.shape)}, {tuple(centre.shape)}, "
            f"{tuple(means.shape)}"
        )
    if posterior_logvar is not None and posterior_logvar.shape != centre.shape:
        raise ValueError(f"expected posterior_logvar [D] like centre, got {tuple(posterior_logvar.shape)}")
    n, d = means.shape
    var = math.exp(float(logvar))
    c = centre.double()
    w = z.double() - c
    v = means.double() - c
    v_sq = (v * v).sum(1)
    w_half_sq = (w * w).sum(1) * (0.5 / var)  # |w_s|^2 / (2 s^2), float64
    scale = None if bound is None or posterior_logvar is None else posterior_logvar.double().mul(0.5).exp()
    if scale is None:
        order = torch.argsort(v_sq)
        row_key = w_half_sq
    else:
        w_norm = (w / scale).norm(dim=1)  # Mahalanobis norms R_s
        v_norm = (v * scale).norm(dim=1)  # |sigma * v_n|
        order = torch.argsort(_mahalanobis_exponent(float(w_norm.median()), v_norm, v_sq, var), descending=True)
        v_norm = v_norm[order]
        row_key = w_norm
    v, v_sq = v[order], v_sq[order]
    if bound is not None:  # row blocks of similar norms: each block's radius is then close to its rows' own
        rows_order = torch.argsort(row_key)
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
        tail = offset = None
        if bound is not None:
            radius = float(w_half_sq[sl].mul(2 * var).sqrt().max())
            gap = (v_sq.sqrt() - radius).clamp_min(0)
            if scale is None:  # e_sn <= |w_s|^2 / (2 s^2) - gap_n^2 / (2 s^2): a per-row offset
                log_bound, offset = gap * gap * (-0.5 / var), w_half_sq[sl]
            else:  # the tighter of the isotropic bound (at the block's radius) and the Mahalanobis one
                isotropic = (radius * radius - gap * gap) * (0.5 / var)
                mahalanobis = _mahalanobis_exponent(float((w[sl] / scale).norm(dim=1).max()), v_norm, v_sq, var)
                log_bound, offset = torch.minimum(isotropic, mahalanobis), torch.zeros_like(w_half_sq[sl])
            tail = torch.logcumsumexp(log_bound.flip(0), 0).flip(0)
        computed += _row_block(w_aug[sl], v_aug, bias, cols, log_mass[sl], log_skipped[sl], tail, offset, bound)

    const = 0.5 * d * (LOG_2PI + math.log(var)) + math.log(n)
    log_prob = log_mass - w_half_sq - const
    if bound is None:
        return PriorEvaluation(log_prob, 0.0, computed / (len(z) * n))
    certified = float(torch.log1p(torch.exp(log_skipped - log_mass)).max())
    return PriorEvaluation(log_prob[torch.argsort(rows_order)], certified, computed / (len(z) * n))


def _mahalanobis_exponent(radius: float, v_norm: torch.Tensor, v_sq: torch.Tensor, var: float) -> torch.Tensor:
    """(R |sigma v_n| - |v_n|^2 / 2) / s^2: the bound on e_sn of every sample with |w_s / sigma| <= R."""
    return (radius * v_norm - 0.5 * v_sq) / var


def _row_block(w_aug, v_aug, bias, cols, log_mass, log_skipped, tail, offset, bound) -> int:
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
            rest = tail[c0] + offset[active] - shift[active].double()  # log bound on the rest, vs the shift
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
