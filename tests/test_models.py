"""Architectures (docs/protocol.md section 3), the ELBO of every architecture x prior, and known answers for the VAE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from evae.config import TrainConfig
from evae.models import build_model
from evae.models.celeba import discretized_logistic_draw, discretized_logistic_mean, log_discretized_logistic

MNIST_ARCHITECTURES = ["vae", "hvae", "convhvae"]
PRIORS = [("gaussian", "exact"), ("vampprior", "exact"), ("exemplar", "exact"), ("exemplar", "knn")]


# --- parameter counts written out from the layer sizes of docs/protocol.md section 3 ---------------


def lin(i, o):
    return i * o + o


def gated(i, o):
    return 2 * lin(i, o)


def conv(ci, co, k):
    return ci * co * k * k + co


def gconv(ci, co, k):
    return 2 * conv(ci, co, k)


def head(i, o=40):
    return 2 * lin(i, o)  # mean and log-variance


P_Z1 = gated(40, 300) + gated(300, 300) + head(300)
EXPECTED = {
    "vae": gated(784, 300) + gated(300, 300) + head(300) + gated(40, 300) + gated(300, 300) + lin(300, 784),
    "hvae": (
        gated(784, 300) + gated(300, 300) + head(300)  # q(z2|x)
        + gated(784, 300) + gated(40, 300) + gated(600, 300) + head(300)  # q(z1|x,z2)
        + P_Z1
        + gated(40, 300) + gated(40, 300) + gated(600, 300) + lin(300, 784)  # p(x|z1,z2)
    ),
    "convhvae": (
        gconv(1, 32, 7) + gconv(32, 32, 3) + gconv(32, 64, 5) + gconv(64, 64, 3) + gconv(64, 6, 3) + head(294)
        + gconv(1, 32, 3) + gconv(32, 32, 3) + gconv(32, 64, 3) + gconv(64, 64, 3) + gconv(64, 6, 3)
        + gated(40, 294) + gated(588, 300) + head(300)
        + P_Z1
        + gated(40, 300) + gated(40, 300) + gated(600, 784)
        + gconv(1, 64, 3) + 3 * gconv(64, 64, 3) + conv(64, 1, 1)
    ),
}


def make(arch, prior="gaussian", mode="exact", n_exemplars=20, seed=0, **cfg):
    torch.manual_seed(seed)
    config = TrainConfig(architecture=arch, prior=prior, exemplar_mode=mode, pseudo_inputs=10, **cfg)
    return build_model(config, torch.rand(n_exemplars, 784))


@pytest.mark.parametrize("arch", MNIST_ARCHITECTURES)
def test_parameter_count_matches_method(arch):
    model = make(arch)
    count = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("prior."))
    assert count == EXPECTED[arch]


def test_prior_parameters():
    assert sum(p.numel() for p in make("vae", "gaussian").prior.parameters()) == 0
    assert sum(p.numel() for p in make("vae", "exemplar").prior.parameters()) == 1  # the shared log s^2
    assert sum(p.numel() for p in make("vae", "vampprior").prior.parameters()) == 10 * 784


def test_convhvae_feature_maps():
    model = make("convhvae")
    img = torch.rand(3, 1, 28, 28)
    assert model.q_z2_net(img).shape == (3, 294)  # 6 x 7 x 7
    assert model.q_z1_x(img).shape == (3, 294)
    h = torch.randn(3, 600)
    decoder = list(model.decoder_out)
    assert decoder[0](h).shape == (3, 784)
    assert torch.nn.Sequential(*decoder[:2])(h).shape == (3, 1, 28, 28)
    assert torch.nn.Sequential(*decoder[:-2])(h).shape == (3, 64, 28, 28)
    assert model.decoder_out(h).shape == (3, 784)


# --- the ELBO of every architecture x prior ------------------------------------------------------


def assert_every_parameter_has_a_gradient(model):
    """Every parameter of the model and its prior (VampPrior pseudo-inputs, the exemplar prior's log s^2) receives
    a finite gradient that is not all zero: the loss reaches all of them."""
    untouched = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not untouched, f"no gradient reaches {untouched}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("arch", MNIST_ARCHITECTURES)
@pytest.mark.parametrize(("prior", "mode"), PRIORS)
def test_elbo_finite_and_differentiable(arch, prior, mode):
    model = make(arch, prior, mode, exemplar_subset=0.5, exemplar_k=3)
    model.prior.refresh(model.encode)
    x = torch.bernoulli(torch.rand(4, 784))
    loss, parts = model.loss(x, index=torch.tensor([0, 5, 7, 19]), beta=0.3)
    assert torch.isfinite(loss) and torch.isfinite(parts["rec"]) and torch.isfinite(parts["kl"])
    loss.backward()
    assert_every_parameter_has_a_gradient(model)
    model.eval()
    with torch.no_grad():
        model.prior.refresh(model.encode)
        terms = model.elbo_terms(x)
        assert torch.isfinite(terms["rec"]).all() and torch.isfinite(terms["kl"]).all()
        means = model.generate(3, generator=torch.Generator().manual_seed(0))
        assert means.shape == (3, 784) and means.min() >= 1e-5 and means.max() <= 1 - 1e-5


@pytest.mark.parametrize("arch", MNIST_ARCHITECTURES)
def test_decoder_means_clamped(arch):
    model = make(arch)
    last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        last.bias.fill_(1e4)
        p_hi = model.decode(torch.randn(2, 40))
        last.bias.fill_(-1e4)
        p_lo = model.decode(torch.randn(2, 40))
    assert torch.all(p_hi == torch.tensor(1 - 1e-5)) and torch.all(p_lo == torch.tensor(1e-5))


# --- known answers for the one-level and two-level sample passes -----------------------------------


def test_vae_sample_pass_matches_torch_distributions():
    model = make("vae")
    x = torch.bernoulli(torch.rand(5, 784))
    torch.manual_seed(11)
    s = model.sample_pass(x)
    torch.manual_seed(11)
    mean, logvar = model.encode(x)
    q = D.Independent(D.Normal(mean, torch.exp(0.5 * logvar)), 1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    torch.testing.assert_close(s.z, z)
    torch.testing.assert_close(s.log_q, q.log_prob(z))
    probs = torch.sigmoid(model.decoder(z)).clamp(1e-5, 1 - 1e-5)
    torch.testing.assert_close(s.log_px, D.Bernoulli(probs=probs).log_prob(x).sum(-1))
    assert torch.all(s.log_p_inner == 0)
    log_prior = D.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(s.log_weight(log_prior), s.log_px + log_prior - s.log_q)


def test_hvae_sample_pass_matches_torch_distributions():
    model = make("hvae")
    x = torch.bernoulli(torch.rand(5, 784))
    torch.manual_seed(12)
    s = model.sample_pass(x)
    torch.manual_seed(12)
    m2, lv2 = model.encode(x)
    z2 = m2 + torch.exp(0.5 * lv2) * torch.randn_like(m2)
    m1, lv1 = model._q_z1(model.q_z1_x(x), z2)
    z1 = m1 + torch.exp(0.5 * lv1) * torch.randn_like(m1)
    pm1, plv1 = model._p_z1(z2)
    normal = lambda m, lv: D.Independent(D.Normal(m, torch.exp(0.5 * lv)), 1)  # noqa: E731
    torch.testing.assert_close(s.z, z2)
    torch.testing.assert_close(s.log_q, normal(m2, lv2).log_prob(z2) + normal(m1, lv1).log_prob(z1))
    torch.testing.assert_close(s.log_p_inner, normal(pm1, plv1).log_prob(z1))
    h = torch.cat([model.p_x_z1(z1), model.p_x_z2(z2)], -1)
    probs = torch.sigmoid(model.decoder_out(h)).clamp(1e-5, 1 - 1e-5)
    torch.testing.assert_close(s.log_px, D.Bernoulli(probs=probs).log_prob(x).sum(-1))


@pytest.mark.parametrize("arch", MNIST_ARCHITECTURES)
def test_sample_passes_of_one_image_are_the_sample_pass_of_the_repeated_image(arch):
    # two-level models share the x-paths across the passes; the random numbers stay those of sample_pass
    model = make(arch).eval()
    x = torch.bernoulli(torch.rand(784, generator=torch.Generator().manual_seed(3)))
    n = 40
    with torch.no_grad():
        torch.manual_seed(14)
        shared = model.sample_passes(x, n)
        torch.manual_seed(14)
        repeated = model.sample_pass(x.expand(n, -1))
        torch.manual_seed(15)
        other_seed = model.sample_passes(x, n)
    for field in ("z", "log_px", "log_q", "log_p_inner"):
        torch.testing.assert_close(getattr(shared, field), getattr(repeated, field), rtol=1e-5, atol=1e-4)
    assert shared.z.shape == (n, 40) and shared.log_px.shape == (n,)
    assert shared.log_q.std() > 1.0 and shared.z.std(0).min() > 0.1  # the n passes differ
    assert (other_seed.log_q - shared.log_q).abs().min() > 1e-3  # another seed: other passes


def test_single_sample_kl_averages_to_closed_form_for_vae_gaussian():
    model = make("vae").eval()
    x = torch.bernoulli(torch.rand(1, 784)).expand(20000, 784)
    torch.manual_seed(13)
    with torch.no_grad():
        kl = model.elbo_terms(x)["kl"].double()
        mean, logvar = (t[0].double() for t in model.encode(x[:1]))
    closed = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum().item()
    se = kl.std().item() / math.sqrt(len(kl))
    assert abs(kl.mean().item() - closed) < 4 * se
    assert se < 0.05 * closed  # the check is tight enough to mean something


# --- the CelebA model: discretized logistic likelihood and ConvVAE64 -----------------------------


@pytest.mark.parametrize(("loc", "log_scale"), [(0.3, -3.0), (0.0, -6.0), (1.2, -1.0), (0.5, 2.0), (0.5, -9.0)])
def test_discretized_logistic_is_a_distribution_over_256_levels(loc, log_scale):
    levels = torch.arange(256, dtype=torch.float64).unsqueeze(-1)
    logp = log_discretized_logistic(levels, torch.tensor(loc, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64))
    assert torch.isfinite(logp).all()
    assert torch.logsumexp(logp, 0).item() == pytest.approx(0.0, abs=1e-12)


def test_discretized_logistic_matches_scipy_cdf_differences():
    rng = np.random.default_rng(0)
    levels = np.array([0, 1, 37, 128, 254, 255], dtype=np.float64)
    loc, log_scale = rng.uniform(0, 1, 6), rng.uniform(-4, 0, 6)
    s = np.exp(log_scale)
    lo = np.where(levels == 0, -np.inf, levels / 256)
    hi = np.where(levels == 255, np.inf, (levels + 1) / 256)
    ref = np.log(stats.logistic.cdf(hi, loc, s) - stats.logistic.cdf(lo, loc, s))
    got = log_discretized_logistic(*(torch.from_numpy(a).unsqueeze(-1) for a in (levels, loc, log_scale)))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9)


@pytest.mark.parametrize(("loc", "log_scale"), [(0.3, -3.0), (0.0, -6.0), (1.2, -1.0), (0.5, 2.0), (-0.1, -4.0)])
def test_discretized_logistic_mean_is_the_mean_level(loc, log_scale):
    levels = torch.arange(256, dtype=torch.float64).unsqueeze(-1)
    loc, log_scale = torch.tensor(loc, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64)
    probs = log_discretized_logistic(levels, loc, log_scale).exp()
    expected = (levels[:, 0] * probs).sum().item()
    assert discretized_logistic_mean(loc, log_scale).item() == pytest.approx(expected, abs=1e-9)


def test_discretized_logistic_draws_follow_its_probabilities():
    loc, log_scale = torch.full((40_000,), 0.3), torch.full((40_000,), -3.0)
    draws = discretized_logistic_draw(loc, log_scale, torch.Generator().manual_seed(0))
    assert draws.min() >= 0 and draws.max() <= 255 and torch.equal(draws, draws.floor())
    probs = log_discretized_logistic(torch.arange(256.0).unsqueeze(-1), torch.tensor(0.3), torch.tensor(-3.0)).exp()
    for level in (0, 76, 90, 255):  # the lower edge bin, the mode, a shoulder, the upper edge bin
        p = probs[level].item()
        assert abs((draws == level).float().mean().item() - p) < 6 * math.sqrt(p * (1 - p) / 40_000) + 1e-6


def test_generated_images_are_decoder_means_unless_draws_are_asked_for():
    model = make("vae").eval()
    with torch.no_grad():
        means = model.generate(5, generator=torch.Generator().manual_seed(3))
        expected = model.decode(torch.randn(5, 40, generator=torch.Generator().manual_seed(3)))
        draws = model.generate(2000, generator=torch.Generator().manual_seed(3), draws=True)
        first = model.decode(torch.randn(2000, 40, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(means, expected)
    assert ((means > 0.01) & (means < 0.99)).any()  # gray levels, not binary pixels
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert abs(draws.mean() - first.mean()) < 6 * math.sqrt(0.25 / draws.numel())


def test_convvae64_shows_the_mean_level_and_draws_levels():
    model = _convvae64().eval()
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loc, log_scale = model._loc(z), model._pixel_log_scale()
        torch.testing.assert_close(model.decode(z), discretized_logistic_mean(loc, log_scale) / 255)
        draws = model.draw_images(z, torch.Generator().manual_seed(0)) * 255
    assert torch.equal(draws, draws.round()) and draws.min() >= 0 and draws.max() <= 255


def _convvae64(prior="gaussian", mode="exact", hidden=8, latent=16, n=12):
    torch.manual_seed(0)
    cfg = TrainConfig(dataset="celeba_sample", architecture="convvae64", prior=prior, exemplar_mode=mode,
                      hidden=hidden, latent_dim=latent, pseudo_inputs=5, exemplar_k=3)
    return build_model(cfg, torch.randint(0, 256, (n, 3 * 64 * 64), dtype=torch.uint8), (3, 64, 64))


def test_convvae64_layer_sizes_and_parameter_count():
    h, d = 8, 16
    model = _convvae64(hidden=h, latent=d)
    x = torch.randint(0, 256, (2, 12288)).float()
    assert model.encoder(x.view(2, 3, 64, 64)).shape == (2, 8 * h * 4 * 4)
    assert model.decoder(torch.randn(2, d)).shape == (2, 12288)
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias)
    convt = lambda ci, co, k: ci * co * k * k + co  # noqa: E731
    expected = (
        conv(3, h, 4) + bn(h) + conv(h, 2 * h, 4) + bn(2 * h) + conv(2 * h, 4 * h, 4) + bn(4 * h)
        + conv(4 * h, 8 * h, 4) + bn(8 * h) + head(8 * h * 16, d)
        + lin(d, 8 * h * 64) + convt(8 * h, 4 * h, 4) + bn(4 * h) + convt(4 * h, 2 * h, 4) + bn(2 * h)
        + convt(2 * h, h, 4) + bn(h) + conv(h, 3, 5) + 3  # per-channel log-scales
    )
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("prior.")) == expected


@pytest.mark.parametrize(("prior", "mode"), PRIORS)
def test_convvae64_elbo_finite_with_every_prior(prior, mode):
    model = _convvae64(prior, mode)
    model.eval()
    model.prior.refresh(model.encode)
    model.train()
    x = torch.randint(0, 256, (4, 12288), dtype=torch.uint8)
    loss, _ = model.loss(x.float(), index=torch.tensor([0, 3, 5, 11]), beta=1.0)
    assert torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_has_a_gradient(model)
    model.eval()
    with torch.no_grad():
        model.prior.refresh(model.encode)
        assert torch.isfinite(model.elbo_terms(x)["kl"]).all()
        images = model.generate(2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 12288) and images.min() >= 0 and images.max() <= 1
