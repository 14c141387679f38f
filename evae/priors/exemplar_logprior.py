"""The exemplar prior's test-time log-density for the S importance samples of one image: the NLL hot spot
(``ExemplarPrior.evaluation_log_prob``).

log p(z_s) = log (1/N) sum_n N(z_s; mu_n, s^2 I) over all N exemplar means (no leave-one-out).
Everything is centred on the image's posterior mean c (w_s = z_s - c, v_n = mu_n - c), where the
numbers that matter are small, and split as

    log N(z_s; mu_n, s^2 I) = e_sn - |w_s|^2 / (2 s^2) - D/2 log(2 pi s^2),
    e_sn = (w_s . v_n) / s^2 - |v_n|^2 / (2 s^2).

Exemplars are visited in increasing d_n = |v_n| (exact mode), in tiles of [rows x cols] (samples x
exemplars), each tile gathered from the means on first use (a certified walk rarely needs them all). The
first tile of a row block sets each row's shift m_s (its maximum there: the nearest exemplars);
every later tile is one float32 ``mm`` that yields e_sn - m_s directly (the shift and the bias
-|v_n|^2 / (2 s^2) ride along as two extra columns: ``addmm`` would spend a pass on the bias), then clamp,
exp and a row sum: four passes over the tile, the matmul at full speed.
Row sums are accumulated in float64; a row whose tile holds values above m_s + 79 (which the clamp
would cut) is recomputed with a new shift. Tested against a float64 brute force to 1e-6 relative.

The clamp at m_s - 80 keeps float32 ``exp`` out of its underflow range (20-90x slower there); it adds at
most N e^-80 (< 1e-29) relative to a row's mass, which is >= 1 after its first tile.

Certified mode (``bound`` in nats) stops before the farthest exemplars when a bound proves they cannot
matter. Each row block gets one bound per exemplar, e_sn <= b_n for all its rows s, and the suffix sums
T_k = log sum_{n >= k} exp(b_n) in visiting order (sound in any order; the order sets how early rows
stop). Each row leaves the walk at the first tile where log(1 + exp(T_k) / mass so far) <= bound; the
exact log p(z_s) then lies in [returned, returned + certified], certified <= bound. The rows still walking
are kept compact (copied when some leave), so that a tile costs only theirs. The bounds describe the
float32 offsets the kernels use, with float64 norms.

* Isotropic (triangle inequality): rows sorted by |w_s|; with r = max_s |w_s| over the block,
  |w_s - v_n| >= max(0, d_n - r), so e_sn <= |w_s|^2 / (2 s^2) - max(0, d_n - r)^2 / (2 s^2) (the first
  term per row). Exemplars are visited in increasing d_n.
* Mahalanobis (with the posterior std sigma [D] of the samples, ``posterior_logvar``): rows sorted by
  |w_s / sigma|, R = its maximum over the block. By Cauchy-Schwarz in the sigma-scaled space,
  w_s . v_n = (w_s / sigma) . (sigma v_n) <= R |sigma v_n|, so e_sn <= (R |sigma v_n| - |v_n|^2 / 2) / s^2.
  Where the posterior is narrow (active latent dimensions) and exemplars differ from c, |sigma v_n| is
  much smaller than r |v_n| / R; wide, inactive dimensions, where exemplars agree with c, cost nothing.
  b_n is the smaller of this and the isotropic bound at the block's radius (r^2 for every |w_s|^2), and
  exemplars are visited in decreasing b_n at the median radii. sigma only shapes the bound: R is measured
  on the samples, so any sigma is sound.

In 40 dimensions both bounds are loose when the posterior is wide compared with s (samples and
exemplars sit nearly orthogonally around c, while the bounds assume them aligned): on the trained MNIST
exemplar VAE (all 40 dimensions active, posterior std 0.1-0.4, s = 0.41) both compute ~7% of the kernels,
where the 0.1% largest per row already hold all but 1e-3 of its mass. See benchmarks/nll.py.
"""

from __future__ import annotations

import math
import torch

from evae.distributions import LOG_2PI
from evae.priors.base import PriorEvaluation

ROWS, COLS = 512, 1024  # tile shape: [512 x 1024] float32 = 2 MB, about the L2 cache of one core
CLAMP = 80.0  # exp arguments are clamped to [-CLAMP, CLAMP] around the row shift
_RESHIFT = math.exp(CLAMP - 1)  # a tile row sum this large may hold clamped values: recompute it
SHIFT = -2  # the column of [w_s / s^2, -m_s, 1] that holds -m_s


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
    (any value is sound: it only shapes the bound). The exact mode does not use it.
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
    w = z.double() - centre.double()
    w_half_sq = (w * w).sum(1) * (0.5 / var)  # |w_s|^2 / (2 s^2), float64
    v = means.float() - centre.float()  # the float32 offsets the kernels use (and the bounds describe)
    scale = None if bound is None or posterior_logvar is None else posterior_logvar.double().mul(0.5).exp()
    sq_norms = _square_norms(v, scale)
    v_sq = sq_norms[:, 0]
    if bound is None:
        walk = _Walk(v, v_sq, torch.argsort(v_sq), var, cols)
        log_mass = torch.cat([walk.row_block(_with_shift(w[r0 : r0 + rows], var)) for r0 in range(0, len(z), rows)])
        return PriorEvaluation(log_mass - w_half_sq - _log_const(d, var, n), 0.0, walk.computed / (len(z) * n))

    bounds = _Bounds(w, w_half_sq, v_sq, var, scale, sq_norms[:, 1] if scale is not None else None)
    walk = _Walk(v, v_sq, bounds.order, var, cols)
    slack = math.log(math.expm1(bound)) if bound else -math.inf
    log_mass, log_skipped = torch.empty_like(w_half_sq), torch.empty_like(w_half_sq)
    rows_order = torch.argsort(bounds.radius)  # row blocks of similar radii: a block's largest sets its bound
    for r0 in range(0, len(z), rows):
        block = rows_order[r0 : r0 + rows]
        tails, offset = bounds.block(block, cols)
        log_mass[block], log_skipped[block] = walk.row_block(_with_shift(w[block], var), tails, offset, slack)
    certified = float(torch.log1p(torch.exp(log_skipped - log_mass)).max())
    return PriorEvaluation(log_mass - w_half_sq - _log_const(d, var, n), certified, walk.computed / (len(z) * n))


def _square_norms(v: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """[N, 1]: |v_n|^2, or [N, 2]: also |scale * v_n|^2; float64, as one matrix product of the squares."""
    weights = torch.ones(v.shape[1], 1, dtype=torch.float64, device=v.device)
    if scale is not None:
        weights = torch.cat([weights, (scale * scale).unsqueeze(1).to(v.device)], 1)
    return v.double().square_() @ weights


def _log_const(d: int, var: float, n: int) -> float:
    return 0.5 * d * (LOG_2PI + math.log(var)) + math.log(n)


def _with_shift(w: torch.Tensor, var: float) -> torch.Tensor:
    """[w_s / s^2, -m_s, 1] in float32, the shift column (``SHIFT``) zero until the first tile sets it."""
    extra = torch.tensor([0.0, 1.0], dtype=torch.float32, device=w.device).expand(len(w), 2)
    return torch.cat([(w / var).float(), extra], 1)


class _Bounds:
    """The certified bounds of the module docstring: per row block, the log suffix sums of b_n at tile starts."""

    def __init__(self, w, w_half_sq, v_sq, var, scale, scaled_sq):
        """``scale`` [D] the posterior std sigma (None: the isotropic bound), ``scaled_sq`` [N] |sigma v_n|^2."""
        self.w_half_sq, self.var, self.scale = w_half_sq, var, scale
        self.d = v_sq.sqrt()
        if scale is None:
            self.radius = w_half_sq.mul(2 * var).sqrt()  # |w_s|
            self.order = torch.argsort(v_sq)
        else:
            self.radius = (w / scale).norm(dim=1)  # Mahalanobis norms R_s
            scaled = scaled_sq.sqrt()
            r = float(w_half_sq.median().mul(2 * var).sqrt())  # visiting order: b_n of a typical row block
            self.order = torch.argsort(self._log_bound(r, float(self.radius.median()), scaled), descending=True)
            self.scaled = scaled[self.order]
        self.d = self.d[self.order]

    def _log_bound(self, r: float, big_r: float, scaled: torch.Tensor) -> torch.Tensor:
        """b_n of every sample with |w_s| <= r and |w_s / sigma| <= R (the smaller of the two bounds)."""
        gap = (self.d - r).clamp_min(0)
        isotropic = (r * r - gap * gap) * (0.5 / self.var)
        return torch.minimum(isotropic, (big_r * scaled - 0.5 * self.d * self.d) / self.var)

    def block(self, rows: torch.Tensor, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """T at every tile start [tiles + 1] (T = -inf past the last), and each row's offset: e_sn <= offset_s + b_n."""
        r = float(self.w_half_sq[rows].max().mul(2 * self.var).sqrt())
        if self.scale is None:  # the isotropic bound keeps each row's own |w_s|^2 / (2 s^2) as its offset
            gap = (self.d - r).clamp_min(0)
            log_bound, offset = gap * gap * (-0.5 / self.var), self.w_half_sq[rows]
        else:
            log_bound = self._log_bound(r, float(self.radius[rows].max()), self.scaled)
            offset = torch.zeros(len(rows), dtype=torch.float64, device=rows.device)
        pad = -len(log_bound) % cols
        per_tile = torch.logsumexp(torch.nn.functional.pad(log_bound, (0, pad), value=-math.inf).view(-1, cols), 1)
        tails = torch.logcumsumexp(per_tile.flip(0), 0).flip(0)
        return torch.cat([tails, tails.new_full((1,), -math.inf)]), offset


class _Walk:
    """Exemplars in visiting order, gathered one tile [v_n, 1, -|v_n|^2 / (2 s^2)] at a time on first use (shared
    by the row blocks); ``computed`` counts the kernels."""

    def __init__(self, v, v_sq, order, var, cols):
        self.v, self.v_sq, self.order, self.var, self.cols = v, v_sq, order, var, cols
        self.tiles: list[torch.Tensor] = []  # transposed: [D + 2, cols]
        self.computed = 0

    def tiled(self, w_aug: torch.Tensor, k: int) -> torch.Tensor:
        """e_sn - m_s for the rows of ``w_aug`` and tile k."""
        while len(self.tiles) <= k:
            idx = self.order[len(self.tiles) * self.cols : (len(self.tiles) + 1) * self.cols]
            ones = torch.ones(len(idx), 1, dtype=torch.float32, device=idx.device)
            bias = (self.v_sq[idx] * (-0.5 / self.var)).float().unsqueeze(1)
            self.tiles.append(torch.cat([self.v[idx], ones, bias], 1).T)
        return w_aug @ self.tiles[k]

    def row_block(self, w_aug, tails=None, offset=None, slack=None):
        """log sum_n exp(e_sn) for one block of rows (``w_aug`` from ``_with_shift``, written in place); with
        ``tails``, also each row's log skipped-mass bound: a row leaves the walk at the first tile where its own
        bound fits the budget (``slack`` = log(e^bound - 1)). Active rows are kept compact (copied when some leave).
        """
        first = self.tiled(w_aug, 0)
        self.computed += first.numel()
        shift = first.amax(1)
        mass = _exp_sum(first.sub_(shift.unsqueeze(1)))
        w_aug[:, SHIFT] = -shift
        log_mass = torch.empty(len(w_aug), dtype=torch.float64, device=w_aug.device)
        log_skipped = torch.full_like(log_mass, -math.inf)
        active = torch.arange(len(w_aug), device=w_aug.device)  # rows still walking
        for k in range(1, -(-len(self.order) // self.cols)):
            if tails is not None:
                rest = tails[k] + offset - shift.double()  # log bound on the rest, vs the shift
                done = rest <= mass.log() + slack
                if bool(done.any()):
                    log_skipped[active[done]] = rest[done] + shift[done].double()
                    log_mass[active[done]] = shift[done].double() + mass[done].log()
                    keep = ~done
                    active, w_aug, offset, shift, mass = active[keep], w_aug[keep], offset[keep], shift[keep], mass[keep]
                    if len(active) == 0:
                        break
            tile = self.tiled(w_aug, k)  # e_sn - m_s
            self.computed += tile.numel()
            part = _exp_sum(tile)
            high = part >= _RESHIFT
            if bool(high.any()):  # values above m_s + 79 were clamped: recompute these rows with a larger shift
                again = self.tiled(w_aug[high], k)
                new_shift = shift[high] + again.amax(1)
                mass[high] *= torch.exp(shift[high].double() - new_shift.double())
                part[high] = _exp_sum(again.sub_((new_shift - shift[high]).unsqueeze(1)))
                shift[high] = new_shift
                w_aug[high, SHIFT] = -new_shift
            mass += part
        log_mass[active] = shift.double() + mass.log()
        return log_mass if tails is None else (log_mass, log_skipped)


def _exp_sum(shifted: torch.Tensor) -> torch.Tensor:
    """Row sums of exp(``shifted``) (overwritten), arguments clamped to [-CLAMP, CLAMP]; float64."""
    return shifted.clamp_(-CLAMP, CLAMP).exp_().sum(1).double()
