"""Known answers for the priors: exemplar mixture (evaluation, exact+LOO, kNN), VampPrior, Gaussian, sampling.

References are float64 scipy / torch.distributions computations written out independently of the
implementation (no shared helpers).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from torch import distributions as D
from torch import nn

from baselines.gaussian import GaussianPrior
from baselines.vampprior import VampPrior
from evae.distributions import LOG_2PI
from evae.priors.exemplar import ExemplarPrior, smallest_k
from evae.priors.mixture import isotropic_mixture_log_prob, uniform_mixture

LATENT = 4


def linear_encoder(d_in: int, d_out: int = LATENT, seed: int = 0, logvar: float = 0.0):
    """A small encoder with parameters (so re-encoding with gradients is observable): mean = W x + b."""
    torch.manual_seed(seed)
    lin = nn.Linear(d_in, d_out)
    return lin, lambda x: (lin(x), torch.full((x.shape[0], d_out), logvar))


def reference_log_mixture(z, means, variance, drop=None):
    """log (1/M') sum_m N(z_b; means_m, variance I) per row, float64 scipy; ``drop[b]`` removes those columns."""
    z, means = np.asarray(z, dtype=np.float64), np.asarray(means, dtype=np.float64)
    out = []
    for b in range(len(z)):
        keep = np.ones(len(means), dtype=bool) if drop is None else drop[b]
        logpdf = [stats.multivariate_normal.logpdf(z[b], mean=m, cov=variance * np.eye(z.shape[1])) for m in means[keep]]
        out.append(logsumexp(logpdf) - math.log(keep.sum()))
    return np.array(out)


def exemplar_prior(n=12, d_in=6, mode="exact", subset=None, k=10, logvar=math.log(0.5), seed=0):
    torch.manual_seed(seed)
    prior = ExemplarPrior(torch.rand(n, d_in), mode=mode, subset=subset, k=k)
    with torch.no_grad():
        prior.logvar.fill_(logvar)
    return prior


# --- evaluation mode: all N, no LOO, float64 ---------------------------------------------------------


def float64_log_mixture(z, means, logvar):
    """Brute-force reference: log (1/N) sum_n N(z_b; means_n, exp(logvar) I) in float64, one logsumexp."""
    d2 = torch.cdist(z.double(), means.double()).pow(2)
    d = z.shape[1]
    return torch.logsumexp(-0.5 * d2 / math.exp(logvar), 1) - 0.5 * d * (LOG_2PI + logvar) - math.log(len(means))


def test_evaluation_mode_equals_scipy_mixture_over_all_exemplars():
    prior = exemplar_prior(n=30).eval()
    lin, encode = linear_encoder(6)
    prior.refresh(encode)
    means = lin(prior.exemplars).detach()
    torch.manual_seed(1)
    z = (means[:5] + torch.randn(5, LATENT)).double()
    got = prior.log_prob(z, encode).detach()
    assert got.dtype == torch.float64
    ref = reference_log_mixture(z, means, variance=math.exp(prior.logvar.item()))  # float32 log(0.5), exactly
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-9)
    # tiles of 2 rows x 7 means (the last one short) give the same as one tile
    tiled = isotropic_mixture_log_prob(z, prior.cached_means, prior.logvar.item(), rows=2, cols=7)
    np.testing.assert_allclose(tiled.numpy(), ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("nearest_tile", ["first", "last"])
def test_evaluation_mixture_matches_a_float64_brute_force_on_a_trained_model_like_scene(nearest_tile):
    """40 dimensions, 10 clusters with exemplars ~6 from the centre and s^2 = 0.17, as on the trained MNIST
    exemplar VAE; with the nearest means in the last tile every row's running maximum rises, and the online
    log-sum-exp must rescale its sum."""
    g = torch.Generator().manual_seed(0)
    centres = 0.8 * torch.randn(10, 40, generator=g)
    means = centres[torch.randint(10, (3000,), generator=g)] + 0.7 * torch.randn(3000, 40, generator=g)
    z = means[:200] + 0.3 * torch.randn(200, 40, generator=g)
    order = torch.argsort(torch.cdist(z[:1], means)[0], descending=nearest_tile == "last")
    means, logvar = means[order], math.log(0.17)
    got = isotropic_mixture_log_prob(z, means, logvar, rows=64, cols=256)
    ref = float64_log_mixture(z, means, logvar)
    assert (got - ref).abs().max() <= 1e-9
    assert ref.std() > 1  # the rows differ: not a constant that a wrong formula could hit


def test_evaluation_mode_survives_where_float32_naive_sum_underflows():
    """Far-away z and tiny variance: every kernel is ~exp(-1e7); a float32 mean of exps is 0, log is -inf."""
    prior = exemplar_prior(n=20, logvar=-9.0).eval()
    _, encode = linear_encoder(6)
    prior.refresh(encode)
    means = prior.cached_means.double()
    z = (means[:3] + 50.0).double()
    log_kernel32 = torch.distributions.Normal(means.float(), math.exp(-4.5)).log_prob(z.float().unsqueeze(1)).sum(-1)
    assert torch.isinf(torch.log(torch.exp(log_kernel32).mean(-1))).all()  # the naive way fails here
    got = prior.log_prob(z, encode).detach()
    ref = reference_log_mixture(z, means, variance=math.exp(prior.logvar.item()))
    assert np.all(ref < -1e6)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    # the float32 input path returns float32 of the same float64 value
    np.testing.assert_allclose(prior.log_prob(z.float(), encode).detach().numpy(), ref, rtol=1e-6)


def test_empty_cache_is_a_clear_error():
    prior = exemplar_prior().eval()
    _, encode = linear_encoder(6)
    with pytest.raises(RuntimeError, match="refresh"):
        prior.log_prob(torch.zeros(1, LATENT), encode)


# --- exact training mode with leave-one-out --------------------------------------------------------


def test_exact_mode_all_exemplars_leaves_exactly_own_component_out():
    n, variance = 15, 0.01
    prior = exemplar_prior(n=n, subset=None, logvar=math.log(variance)).train()
    lin, encode = linear_encoder(6)
    means = lin(prior.exemplars).detach()
    index = torch.tensor([0, 7, 14, 3])
    torch.manual_seed(2)
    z = means[index] + 0.05 * torch.randn(4, LATENT)  # near its own exemplar: the LOO term matters
    got = prior.log_prob(z, encode, index=index)
    drop = np.ones((4, n), dtype=bool)
    drop[np.arange(4), index.numpy()] = False
    ref = reference_log_mixture(z.detach(), means, variance, drop=drop)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-5, atol=1e-4)
    # and it differs from the full mixture (so the mask was really applied), normaliser 1/(N-1)
    full = reference_log_mixture(z.detach(), means, variance)
    assert np.all(full - ref > 0.1)
    # gradients flow into the encoder that built the components, and into s^2
    got.sum().backward()
    assert lin.weight.grad.abs().sum() > 0 and prior.logvar.grad.abs() > 0


def test_exact_mode_subset_with_replacement_masks_every_copy_and_counts_kept():
    n = 6
    prior = exemplar_prior(n=n, subset=6).train()
    lin, encode = linear_encoder(6)
    means = lin(prior.exemplars).detach()
    comp = torch.tensor([2, 0, 2, 5, 1, 4])  # exemplar 2 drawn twice, 3 not drawn
    prior.draw_components = lambda: comp
    index = torch.tensor([2, 3, 5])
    torch.manual_seed(3)
    z = means[index] + 0.3 * torch.randn(3, LATENT)
    got = prior.log_prob(z, encode, index=index).detach().numpy()
    comp_means = means[comp]
    keep = (comp.unsqueeze(0) != index.unsqueeze(1)).numpy()
    assert keep.sum(1).tolist() == [4, 6, 5]  # both copies of 2 masked; nothing masked for 3
    ref = reference_log_mixture(z.detach(), comp_means, 0.5, drop=keep)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    # explicit: row 0 is log of the mean over the 4 kept components
    kern = [stats.multivariate_normal.logpdf(z[0].detach().numpy(), means[c].numpy(), 0.5 * np.eye(LATENT)) for c in (0, 5, 1, 4)]
    assert got[0] == pytest.approx(logsumexp(kern) - math.log(4), abs=1e-4)


def test_exact_mode_gradient_counts_every_copy_of_a_repeated_exemplar():
    prior = exemplar_prior(n=6, subset=6).train()
    lin, encode = linear_encoder(6)
    comp = torch.tensor([2, 0, 2, 5, 1, 4])
    prior.draw_components = lambda: comp
    torch.manual_seed(4)
    z = torch.randn(3, LATENT)
    prior.log_prob(z, encode).sum().backward()
    got = lin.weight.grad.clone()
    lin.weight.grad = None
    # reference: every drawn copy encoded on its own, the mixture written out with torch.distributions
    means = lin(prior.exemplars[comp])
    kernel = D.Independent(D.Normal(means, torch.exp(0.5 * prior.logvar.detach())), 1).log_prob(z.unsqueeze(1))
    (torch.logsumexp(kernel, 1) - math.log(6)).sum().backward()
    torch.testing.assert_close(got, lin.weight.grad)


def test_exact_mode_subset_draws_are_uniform_with_replacement():
    n, m = 20, 1000
    prior = exemplar_prior(n=n, subset=m)
    torch.manual_seed(4)
    draws = torch.cat([prior.draw_components() for _ in range(50)])
    assert draws.shape == (50 * m,)
    counts = np.bincount(draws.numpy(), minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_subset_fraction_from_config():
    class Cfg:
        exemplar_subset, exemplar_mode, exemplar_k = 0.5, "exact", 10

    assert ExemplarPrior.from_config(Cfg, torch.rand(50, 3)).subset == 25
    Cfg.exemplar_subset = 1.0
    assert ExemplarPrior.from_config(Cfg, torch.rand(50, 3)).subset is None


def test_all_components_masked_is_an_error():
    with pytest.raises(ValueError, match="masked"):
        uniform_mixture(torch.zeros(2, 1), torch.tensor([[True], [False]]))


# --- kNN (retrieval-augmented) mode -----------------------------------------------------------------


def _knn_and_exact(k):
    n = 40
    exact = exemplar_prior(n=n, subset=None, seed=5).train()
    knn = exemplar_prior(n=n, mode="knn", k=k, seed=5).train()
    lin, encode = linear_encoder(6)
    knn.refresh(encode)
    means = lin(knn.exemplars).detach()
    index = torch.tensor([1, 9, 22, 39, 17])
    torch.manual_seed(6)
    z = means[index] + 0.5 * torch.randn(5, LATENT)
    return knn.log_prob(z, encode, index=index), exact.log_prob(z, encode, index=index), knn, z, encode


def test_knn_mode_equals_exact_loo_when_k_covers_every_exemplar():
    got, ref, knn, z, encode = _knn_and_exact(k=40)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    # without LOO (no index) it is the full mixture, normaliser 1/N
    knn_full = knn.log_prob(z, encode)
    ref_full = reference_log_mixture(z.detach(), knn.cached_means, 0.5)
    np.testing.assert_allclose(knn_full.detach().numpy(), ref_full, rtol=1e-5, atol=1e-4)


def test_nearest_cached_means_are_the_exact_euclidean_neighbours():
    prior = exemplar_prior(n=200, mode="knn", seed=10)
    _, encode = linear_encoder(6, seed=10)
    prior.refresh(encode)
    torch.manual_seed(10)
    z = torch.randn(7, LATENT)
    got = np.sort(prior.nearest(z, 5).numpy(), axis=1)
    ref = np.sort(np.argsort(cdist(z.double().numpy(), prior.cached_means.double().numpy()), axis=1)[:, :5], axis=1)
    np.testing.assert_array_equal(got, ref)


def test_knn_mode_is_a_lower_bound_for_small_k():
    got, ref, *_ = _knn_and_exact(k=2)
    assert torch.all(got <= ref + 1e-5)
    assert torch.any(got < ref - 1e-3)


def test_knn_mode_reencodes_neighbours_with_gradients():
    n = 40
    knn = exemplar_prior(n=n, mode="knn", k=3).train()
    lin, encode = linear_encoder(6)
    knn.refresh(encode)
    z = lin(knn.exemplars[:4]).detach()
    knn.log_prob(z, encode, index=torch.arange(4)).sum().backward()
    assert lin.weight.grad.abs().sum() > 0 and knn.logvar.grad.abs() > 0


@pytest.mark.parametrize("n", [64 * 200, 64 * 200 + 37])  # whole blocks only, and a remainder
def test_smallest_k_finds_the_same_columns_as_a_full_sort(n):
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(6, n, generator=g)
    scores[1, 640:651] -= 10  # row 1: all eleven in one block
    scores[2, -11:] -= 10  # row 2: all in the last columns (the remainder, when there is one)
    scores[3, ::997] -= 10  # row 3: one in each of many blocks
    for k in (1, 11, 40):
        got = smallest_k(scores, k)
        ref = scores.argsort(dim=1)[:, :k]
        assert got.shape == (6, k)
        assert [set(r) for r in got.tolist()] == [set(r) for r in ref.tolist()]


# --- VampPrior and Gaussian ---------------------------------------------------------------------------


def test_vampprior_equals_torch_mixture_of_pseudo_input_posteriors():
    torch.manual_seed(7)
    prior = VampPrior(input_dim=12, num_pseudo=9)
    mean_net, logvar_net = nn.Linear(12, LATENT), nn.Linear(12, LATENT)

    def encode(x):
        return mean_net(x), logvar_net(x).clamp(-6, 2)

    z = torch.randn(5, LATENT, requires_grad=True)
    got = prior.log_prob(z, encode)
    assert got.dtype == torch.float32
    grads = torch.autograd.grad(got.sum(), [z, prior.pseudo_raw, mean_net.weight, logvar_net.weight])
    assert grads[1].abs().sum() > 0  # pseudo-inputs are learned
    # the reference: torch's mixture of the pseudo-inputs' posteriors, in float64, and its gradients
    means, logvars = (t.double() for t in encode(prior.pseudo_inputs))
    mixture = D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(9, dtype=torch.float64)),
        D.Independent(D.Normal(means, torch.exp(0.5 * logvars)), 1),
    )
    ref = mixture.log_prob(z.double())
    torch.testing.assert_close(got, ref.float())
    ref_grads = torch.autograd.grad(ref.sum(), [z, prior.pseudo_raw, mean_net.weight, logvar_net.weight])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r.float(), rtol=1e-4, atol=1e-6)


def test_vampprior_evaluation_form_equals_scipy_where_variances_are_small():
    """The matrix-product form (evaluation) against a float64 scipy mixture, with posterior variances down to
    e^-9 and samples a few posterior widths from the nearest component, where the expanded terms cancel."""
    g = torch.Generator().manual_seed(3)
    k, d = 50, 40
    means = torch.randn(k, d, generator=g) * 2
    logvars = -9 + 7 * torch.rand(k, d, generator=g)
    z = means[torch.randint(k, (300,), generator=g)] + 0.05 * torch.randn(300, d, generator=g)
    prior = VampPrior(input_dim=3, num_pseudo=k)
    evaluation = prior.evaluation_log_prob(z, lambda x: (means, logvars), centre=z[0], bound=1.0)
    got = evaluation.log_prob
    assert got.dtype == torch.float64 and (evaluation.certified, evaluation.computed_fraction) == (0.0, 1.0)
    kernels = np.stack([
        stats.multivariate_normal(means[j].double().numpy(), np.diag(np.exp(logvars[j].double().numpy()))).logpdf(
            z.double().numpy())
        for j in range(k)
    ], axis=1)
    np.testing.assert_allclose(got.numpy(), logsumexp(kernels, axis=1) - math.log(k), rtol=0, atol=1e-6)
    assert torch.equal(got.float(), prior.log_prob(z, lambda x: (means, logvars)))  # training: the same, in float32


def test_vampprior_pseudo_inputs_init_and_range():
    torch.manual_seed(8)
    prior = VampPrior(input_dim=784, num_pseudo=500)
    raw = prior.pseudo_raw.detach()
    assert raw.mean().item() == pytest.approx(0.05, abs=1e-3) and raw.std().item() == pytest.approx(0.01, rel=0.02)
    with torch.no_grad():
        prior.pseudo_raw[0, :3] = torch.tensor([-1.0, 0.5, 2.0])
    assert prior.pseudo_inputs[0, :3].tolist() == [0.0, 0.5, 1.0]


def test_gaussian_prior_equals_standard_normal():
    prior = GaussianPrior(LATENT)
    z = torch.randn(7, LATENT) * 3
    torch.testing.assert_close(prior.log_prob(z, None), D.Normal(0.0, 1.0).log_prob(z).sum(-1))
    s = prior.sample(20000, None, generator=torch.Generator().manual_seed(0))
    assert s.shape == (20000, LATENT)
    assert s.mean(0).abs().max() < 5 / math.sqrt(20000) and (s.var(0) - 1).abs().max() < 5 * math.sqrt(2 / 20000)


# --- sampling ------------------------------------------------------------------------------------


def _recover_components(samples, means):
    dist = torch.cdist(samples.double(), means.double())
    nearest = dist.argmin(1)
    assert dist.min(1).values.max() < 1e-2  # tiny variance: each sample sits on its component
    return nearest.numpy()


def test_exemplar_prior_samples_components_uniformly():
    prior = exemplar_prior(n=10, logvar=-20.0).eval()
    _, encode = linear_encoder(6)
    samples = prior.sample(20000, encode, generator=torch.Generator().manual_seed(0))
    counts = np.bincount(_recover_components(samples, encode(prior.exemplars)[0].detach()), minlength=10)
    assert counts.min() > 0
    assert stats.chisquare(counts).pvalue > 1e-3


def test_vampprior_samples_components_uniformly():
    torch.manual_seed(9)
    prior = VampPrior(input_dim=12, num_pseudo=8)
    with torch.no_grad():
        prior.pseudo_raw.uniform_(0, 1)
    _, encode = linear_encoder(12, logvar=-20.0)
    samples = prior.sample(16000, encode, generator=torch.Generator().manual_seed(1))
    counts = np.bincount(_recover_components(samples, encode(prior.pseudo_inputs)[0].detach()), minlength=8)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_exemplar_conditioned_samples_have_mean_mu_and_variance_s2():
    variance, n = 0.3, 20000
    prior = exemplar_prior(n=10, logvar=math.log(variance)).eval()
    _, encode = linear_encoder(6)
    samples = prior.sample(n, encode, generator=torch.Generator().manual_seed(2), index=torch.full((n,), 3))
    mu = encode(prior.exemplars[3:4])[0].detach()[0]
    se_mean = math.sqrt(variance / n)
    assert (samples.mean(0) - mu).abs().max() < 5 * se_mean
    # per-dimension sample variance has relative standard error sqrt(2 / (n - 1))
    assert ((samples.var(0) / variance) - 1).abs().max() < 5 * math.sqrt(2 / (n - 1))


def test_fast_logsumexp_equals_torch_far_into_the_tail():
    from evae.priors.mixture import fast_logsumexp

    logits = torch.tensor([[0.0, -1.0, -710.0, -5000.0], [3.0, 3.0, -800.0, 2.0], [-1e4, -1e4 - 0.5, -2e4, -3e4]],
                          dtype=torch.float64)
    torch.testing.assert_close(fast_logsumexp(logits), torch.logsumexp(logits, -1), rtol=0, atol=1e-15)


# --- the evaluation interface: value and certificate, from every prior ---------------------------------


def test_exemplar_evaluation_log_prob_is_the_mixture_over_all_cached_means_with_its_certificate():
    prior = exemplar_prior(n=40).eval()
    lin, encoder = linear_encoder(6)
    prior.refresh(encoder)
    z = torch.randn(30, LATENT, generator=torch.Generator().manual_seed(1))
    ref = reference_log_mixture(z.numpy(), prior.cached_means.detach().numpy(), 0.5)
    exact = prior.evaluation_log_prob(z, encoder, centre=z.mean(0))
    np.testing.assert_allclose(exact.log_prob.numpy(), ref, rtol=1e-6)
    assert (exact.certified, exact.computed_fraction) == (0.0, 1.0) and prior.prunable
    pruned = prior.evaluation_log_prob(z, encoder, centre=z.mean(0), bound=0.5)
    assert pruned.certified <= 0.5 and np.all(ref - pruned.log_prob.numpy() <= pruned.certified + 1e-6)
    with pytest.raises(ValueError, match="pass centre"):
        prior.evaluation_log_prob(z, encoder)


def test_gaussian_evaluation_is_exact_and_ignores_centre_and_bound():
    prior = GaussianPrior(LATENT)
    z = torch.randn(10, LATENT)
    got = prior.evaluation_log_prob(z, None, centre=z[0], bound=1.0)
    np.testing.assert_allclose(got.log_prob.numpy(), stats.multivariate_normal(np.zeros(LATENT)).logpdf(z.numpy()),
                               rtol=1e-6)
    assert got.log_prob.dtype == torch.float64 and (got.certified, got.computed_fraction) == (0.0, 1.0)
    assert not prior.prunable and prior.component_scale() is None
    with pytest.raises(ValueError, match="no k-nearest truncation"):
        prior.truncation_gaps(z, [1])


def test_exemplar_truncation_gaps_against_the_k_largest_components():
    prior = exemplar_prior(n=25).eval()
    _, encoder = linear_encoder(6)
    prior.refresh(encoder)
    assert prior.component_scale() == pytest.approx(math.sqrt(0.5))
    z = torch.randn(8, LATENT, generator=torch.Generator().manual_seed(2))
    means = prior.cached_means.detach().double().numpy()
    kernels = np.stack([stats.multivariate_normal(m, 0.5 * np.eye(LATENT)).logpdf(z.double().numpy()) for m in means], 1)
    top = -np.sort(-kernels, axis=1)
    gaps = prior.truncation_gaps(z, [1, 5, 100])
    assert sorted(gaps) == [1, 5, 25]  # k is capped at N
    for k, gap in gaps.items():
        # the float64 expansion |z|^2 - 2 z.m + |m|^2 rounds to ~1e-9 nats against scipy's direct distances
        np.testing.assert_allclose(gap.numpy(), logsumexp(kernels, 1) - logsumexp(top[:, :k], 1), rtol=0, atol=1e-7)
    assert np.all(gaps[25].numpy() == 0) and np.all(gaps[1].numpy() >= gaps[5].numpy())
