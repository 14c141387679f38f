"""The exemplar prior: p(z | X) = (1/N) sum_n N(z; mu(x_n), s^2 I) over the N training images.

mu is the model's own encoder mean; s^2 is one learned scalar. Three ways to evaluate it
(docs/protocol.md section 1):

* training, ``mode="exact"``: M exemplars drawn with replacement per minibatch (all N if M is
  None), encoded with gradients; each point's own exemplar is left out (LOO), normaliser 1/(M - masked).
* training, ``mode="knn"`` (retrieval-augmented training): the k nearest cached means of every
  point's latent sample (exact L2 search over the means refreshed each epoch), the union over the
  minibatch re-encoded with gradients, LOO-masked, normalised by 1/(N - 1): a lower bound on the
  full leave-one-out mixture, equal to it when k covers every exemplar.
  Choices where the paper is silent: the query is the reparameterised sample z (detached), the
  search covers all N cached means exactly (the authors search a random subset of M), and k + 1
  neighbours are retrieved while training so that leaving oneself out still leaves k. The search
  is one matrix product and ``smallest_k`` in torch: exact, on the model's device, and on one CPU
  thread several times faster than faiss ``IndexFlatL2`` for 100 queries over 50,000 means.
* evaluation (``model.eval()``): all N cached means, no LOO, 1/N, in float64
  (``isotropic_mixture_log_prob``: tiled matrix products, an online log-sum-exp); for the many samples
  of the test NLL, ``evaluation_log_prob`` (``exemplar_logprior``: exact, or certified to a bound in
  nats).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from evae.priors.base import Encoder, Prior, PriorEvaluation
from evae.priors.exemplar_logprior import exemplar_log_prior
from evae.priors.mixture import isotropic_log_kernel, isotropic_mixture_log_prob, uniform_mixture

MODES = ("exact", "knn")


class ExemplarPrior(Prior):
    prunable = True

    def __init__(
        self,
        exemplars: torch.Tensor,
        mode: str = "exact",
        subset: int | None = None,
        k: int = 10,
        encode_batch: int = 2000,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"exemplar prior mode must be one of {MODES}, got {mode!r}")
        if subset is not None and subset < 2:
            raise ValueError(f"exemplar subset size must be >= 2 or None (all), got {subset}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.mode, self.subset, self.k, self.encode_batch = mode, subset, k, encode_batch
        # uint8 images (CelebA levels) stay bytes: 2 GB rather than 8 GB for 162,770 of them
        self.register_buffer("exemplars", exemplars if exemplars.dtype == torch.uint8 else exemplars.float(), persistent=False)
        self.logvar = nn.Parameter(torch.randn(()))  # the authors draw the initial log s^2 from N(0, 1)
        self._means: torch.Tensor | None = None
        self._search: torch.Tensor | None = None  # [D + 1, N]: -2 mu_n over |mu_n|^2, for the kNN search

    @classmethod
    def from_config(cls, cfg, train_images: torch.Tensor) -> "ExemplarPrior":
        n = train_images.shape[0]
        subset = None if cfg.exemplar_subset >= 1 else max(2, round(cfg.exemplar_subset * n))
        return cls(train_images, mode=cfg.exemplar_mode, subset=subset, k=cfg.exemplar_k)

    @property
    def num_exemplars(self) -> int:
        return self.exemplars.shape[0]

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "subset": self.subset,
            "k": self.k,
            "num_exemplars": self.num_exemplars,
            "variance": float(self.logvar.detach().exp()),
        }

    @torch.no_grad()
    def refresh(self, encoder: Encoder) -> None:
        """Re-encode every exemplar (no gradients) into the cache of means used for kNN search and evaluation."""
        self._means = torch.cat(
            [encoder(self.exemplars[i : i + self.encode_batch])[0] for i in range(0, self.num_exemplars, self.encode_batch)]
        )
        sq_norms = (self._means * self._means).sum(-1, keepdim=True)
        self._search = torch.cat([-2 * self._means, sq_norms], 1).T.contiguous()

    @property
    def cached_means(self) -> torch.Tensor:
        if self._means is None:
            raise RuntimeError("the exemplar prior's cache is empty: call prior.refresh(model.encode) first")
        return self._means

    def log_prob(self, z, encoder, index=None):
        if not self.training:
            return isotropic_mixture_log_prob(z, self.cached_means, self.logvar.detach()).to(z.dtype)
        if self.mode == "exact":
            return self._log_prob_exact(z, encoder, index)
        return self._log_prob_knn(z, encoder, index)

    def evaluation_log_prob(self, z, encoder, centre=None, bound=None, posterior_logvar=None) -> PriorEvaluation:
        """All N cached means, centred on ``centre`` (the image's posterior mean), exact or certified to ``bound``
        (tighter with the posterior's ``posterior_logvar``)."""
        if centre is None:
            raise ValueError("the exemplar prior's evaluation is centred on the image's posterior mean: pass centre")
        return exemplar_log_prior(
            z, centre, self.cached_means, self.logvar.detach(), bound=bound, posterior_logvar=posterior_logvar
        )

    def component_scale(self) -> float:
        return float(self.logvar.detach().mul(0.5).exp())

    @torch.no_grad()
    def truncation_gaps(self, z, ks):
        """Exact float64 mixture over all N cached means against its k largest components (the retrieval bound)."""
        log_kernel = isotropic_log_kernel(z.double(), self.cached_means.double(), self.logvar.detach().double())
        log_kernel = log_kernel.sort(dim=-1, descending=True).values
        exact = torch.logsumexp(log_kernel, dim=-1)
        ks = sorted({min(k, self.num_exemplars) for k in ks})
        return {k: exact - torch.logsumexp(log_kernel[:, :k], dim=-1) for k in ks}

    def draw_components(self) -> torch.Tensor:
        """The exemplars one training minibatch uses in exact mode: all N, or ``subset`` drawn uniformly with
        replacement (one draw per minibatch, shared by its points, as the authors do)."""
        n, device = self.num_exemplars, self.exemplars.device
        if self.subset is None:
            return torch.arange(n, device=device)
        return torch.randint(n, (self.subset,), device=device)

    def _log_prob_exact(self, z, encoder, index):
        comp = self.draw_components()
        # each distinct exemplar is encoded once (M = N/2 draws with replacement hold ~0.79 M distinct ones);
        # copies share its mean, and its gradient collects every copy's contribution, as separate encodings would
        # (for encoders with BatchNorm, the ConvVAE64, the batch statistics are those of the distinct exemplars)
        distinct, copy_of = torch.unique(comp, return_inverse=True)
        means = encoder(self.exemplars[distinct])[0][copy_of]
        mask = None if index is None else comp.unsqueeze(0) == index.unsqueeze(1)
        return uniform_mixture(isotropic_log_kernel(z, means, self.logvar), mask)

    def nearest(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Indices [B, k] (unordered) of the k cached means nearest to each row of ``z`` in Euclidean distance."""
        # |z - m|^2 = |z|^2 + (|m|^2 - 2 z.m): the first term does not change the order within a row
        z = z.detach().to(self._search.dtype)
        query = torch.cat([z, torch.ones_like(z[:, :1])], 1)
        return smallest_k(query @ self._search, k)

    def _log_prob_knn(self, z, encoder, index):
        n = self.num_exemplars
        k = min(self.k + (index is not None), n)  # one extra so that leaving oneself out still leaves k
        comp = torch.unique(self.nearest(z, k))
        means = encoder(self.exemplars[comp])[0]
        log_kernel = isotropic_log_kernel(z, means, self.logvar)
        if index is None:
            return torch.logsumexp(log_kernel, dim=-1) - math.log(n)
        mask = comp.unsqueeze(0) == index.unsqueeze(1)
        return torch.logsumexp(log_kernel.masked_fill(mask, -math.inf), dim=-1) - math.log(n - 1)

    @torch.no_grad()
    def sample(self, n, encoder, generator=None, index=None):
        if index is None:
            index = torch.randint(self.num_exemplars, (n,), generator=generator)
        index = index.to(self.exemplars.device)
        means = encoder(self.exemplars[index])[0]
        noise = torch.randn(means.shape, generator=generator).to(means.device)
        return means + torch.exp(0.5 * self.logvar) * noise


def smallest_k(scores: torch.Tensor, k: int, block: int = 64) -> torch.Tensor:
    """Column indices [B, k] (unordered) of the k smallest entries of each row of ``scores`` [B, N]; exact.

    The k smallest entries of a row lie in the blocks (of ``block`` columns) that hold its k smallest block minima:
    those minima are k entries no larger than the k-th of them, so the row's k smallest entries are no larger
    either. One pass of block minima, then ``topk`` over those k blocks: several times faster than ``topk`` over the
    whole row on a CPU when k << N. Columns past the last whole block are always candidates.
    """
    b, n = scores.shape
    whole = n // block * block
    if whole < 4 * k * block:  # too few blocks to gain anything
        return scores.topk(k, dim=1, largest=False, sorted=False).indices
    minima = scores.unfold(1, block, block).amin(2)  # a view of the whole blocks: no copy
    first = minima.topk(k, dim=1, largest=False, sorted=False).indices * block
    columns = (first.unsqueeze(2) + torch.arange(block, device=scores.device)).reshape(b, -1)
    if whole < n:
        columns = torch.cat([columns, torch.arange(whole, n, device=scores.device).expand(b, -1)], 1)
    picked = scores.gather(1, columns).topk(k, dim=1, largest=False, sorted=False).indices
    return columns.gather(1, picked)
