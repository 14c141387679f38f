"""The importance-weighted NLL of a two-level model against its closed-form marginal, and the reproducibility of
the NLL (its seed, the caller's global RNG, the bound it records)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from baselines.gaussian import GaussianPrior
from evae.config import TrainConfig
from evae.evaluate.nll import estimate_image, evaluate_nll, iw_estimates
from evae.models import Sample
from evae.models.base import LatentVariableModel
from evae.runs import load_run
from evae.train import trainer
from evae.train.trainer import train

# --- a two-level linear-Gaussian model: p(x) and p(z1, z2 | x) in closed form ----------------------------


def log_normal(v: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(v)


class TwoLevelLinearGaussian(LatentVariableModel):
    """z2 ~ N(0, I) (the compared prior), z1 | z2 ~ N(C z2 + c, tau^2 I), x | z1, z2 ~ N(W z1 + V z2 + b, sigma^2 I).
    The proposal is the exact posterior p(z1, z2 | x) (full covariance), or it shifted by ``offset``. float64."""

    def __init__(self, p=5, d1=3, d2=2, tau=0.7, sigma=0.4, offset=0.0, seed=0):
        super().__init__(GaussianPrior(d2))
        g = torch.Generator().manual_seed(seed)
        randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
        self.d1, self.tau, self.sigma, self.offset = d1, tau, sigma, offset
        self.C, self.c, self.W, self.V, self.b = randn(d1, d2), randn(d1), randn(p, d1), randn(p, d2), randn(p)
        # the latents u = (z1, z2) a priori: N(m, S); x = H u + b + sigma * noise
        self.m = torch.cat([self.c, torch.zeros(d2, dtype=torch.float64)])
        top = torch.cat([self.C @ self.C.T + tau**2 * torch.eye(d1, dtype=torch.float64), self.C], 1)
        self.S = torch.cat([top, torch.cat([self.C.T, torch.eye(d2, dtype=torch.float64)], 1)])
        self.H = torch.cat([self.W, self.V], 1)
        self.post_cov = torch.linalg.inv(torch.linalg.inv(self.S) + self.H.T @ self.H / sigma**2)

    def posterior_mean(self, x):
        return (torch.linalg.solve(self.S, self.m) + (x - self.b) @ self.H / self.sigma**2) @ self.post_cov + self.offset

    def encode(self, x):  # q(z2 | x): the top latent's marginal
        return self.posterior_mean(x)[:, self.d1 :], self.post_cov.diagonal()[self.d1 :].log().expand(len(x), -1)

    def sample_pass(self, x):
        mean = self.posterior_mean(x)
        u = mean + torch.randn(mean.shape, dtype=torch.float64) @ torch.linalg.cholesky(self.post_cov).T
        z1, z2 = u[:, : self.d1], u[:, self.d1 :]
        eye = lambda d: torch.eye(d, dtype=torch.float64)  # noqa: E731
        return Sample(z=z2, log_px=log_normal(x, u @ self.H.T + self.b, self.sigma**2 * eye(len(self.b))),
                      log_q=log_normal(u, mean, self.post_cov),
                      log_p_inner=log_normal(z1, z2 @ self.C.T + self.c, self.tau**2 * eye(self.d1)))

    def exact_log_px(self, x):
        cov = self.H @ self.S @ self.H.T + self.sigma**2 * torch.eye(len(self.b), dtype=torch.float64)
        return stats.multivariate_normal(self.H @ self.m + self.b, cov.numpy()).logpdf(x.numpy())

    def draw_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        u = self.m + torch.randn(n, len(self.m), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(self.S).T
        return u @ self.H.T + self.b + self.sigma * torch.randn(n, len(self.b), generator=g, dtype=torch.float64)


@pytest.mark.parametrize(("samples", "chunk"), [(1, 1), (7, 3)])
def test_two_level_estimate_with_the_true_posterior_is_the_exact_marginal(samples, chunk):
    """Every log-weight log p(x, z1, z2) - log p(z1, z2 | x) equals log p(x): the estimate is exact at any S,
    through the two-level path (``sample_passes`` chunk by chunk, the inner prior p(z1 | z2) included)."""
    model = TwoLevelLinearGaussian()
    xs = model.draw_x(6)
    torch.manual_seed(0)
    got = [estimate_image(model, x, samples, chunk) for x in xs]
    np.testing.assert_allclose([e.log_px for e in got], model.exact_log_px(xs), rtol=0, atol=1e-9)
    np.testing.assert_allclose([e.elbo for e in got], model.exact_log_px(xs), rtol=0, atol=1e-9)
    # with a shifted proposal the weights vary: the test can tell a right estimate from a wrong one
    shifted = TwoLevelLinearGaussian(offset=0.5)
    off = [estimate_image(shifted, x, samples, chunk).log_px for x in xs]
    assert np.min(np.abs(np.array(off) - model.exact_log_px(xs))) > 0.05


def test_elbo_terms_compose_the_log_weight():
    """rec - kl of ``elbo_terms`` is ``Sample.log_weight`` with the compared prior: with the true posterior, the
    exact log p(x) for every image (one sample each)."""
    model = TwoLevelLinearGaussian()
    xs = model.draw_x(8)
    torch.manual_seed(1)
    t = model.elbo_terms(xs)
    np.testing.assert_allclose((t["rec"] - t["kl"]).numpy(), model.exact_log_px(xs), rtol=0, atol=1e-9)
    torch.manual_seed(1)
    s = model.sample_pass(xs)
    torch.testing.assert_close(t["rec"] - t["kl"], s.log_weight(model.log_prior(s.z)), rtol=0, atol=1e-12)


# --- evaluate_nll: reproducible from its seed, the caller's RNG untouched, the bound recorded honestly ------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A Gaussian-prior and an exemplar-prior run, one short epoch each on the embedded subset."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "gemm_gflops", lambda threads: 0.0)  # the segment's GEMM rate: seconds, unused here
        for prior in ("gaussian", "exemplar"):
            out[prior] = tmp_path_factory.mktemp(prior)
            cfg = TrainConfig(dataset="mnist_subset", prior=prior, max_train_images=200, max_val_images=50, hidden=32,
                              max_epochs=1, warmup_epochs=1)
            train(cfg, out[prior], progress=False)
    return out


def per_image(run, out, seed, bound=None):
    result = evaluate_nll(run, out, samples=20, max_images=5, exemplar_bound=bound, seed=seed, progress=False)
    return result, np.load(out.with_name(out.stem + ".per_image.npz"))["nll"]


def test_nll_is_reproducible_from_its_seed_whatever_the_global_rng(runs, tmp_path):
    torch.manual_seed(123)
    _, first = per_image(runs["gaussian"], tmp_path / "a.json", seed=0)
    torch.manual_seed(999)
    _, again = per_image(runs["gaussian"], tmp_path / "b.json", seed=0)
    _, other = per_image(runs["gaussian"], tmp_path / "c.json", seed=1)
    assert np.array_equal(first, again)
    assert np.all(first != other)


def test_the_estimates_leave_the_global_rng_as_they_found_it(runs):
    run = load_run(runs["exemplar"])
    images = torch.from_numpy(run.data.test_binary[:3])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    iw_estimates(run.model, images, samples=20, chunk=20, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream goes on as if nothing ran


def test_exemplar_bound_is_recorded_only_for_a_prior_that_can_prune(runs, tmp_path):
    gaussian, _ = per_image(runs["gaussian"], tmp_path / "g.json", seed=0, bound=1e-3)
    assert gaussian["exemplar_bound"] is None and gaussian["certified_bound"] is None  # ignored: nothing to prune
    exemplar, _ = per_image(runs["exemplar"], tmp_path / "e.json", seed=0, bound=1e-3)
    assert exemplar["exemplar_bound"] == 1e-3 and exemplar["certified_bound"]["max"] <= 1e-3
