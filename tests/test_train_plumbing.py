"""How training feeds the model and the prior, checked against what the protocol says (docs/protocol.md sections 1
and 4), each with a spy or an independent reference: an epoch's minibatches and leave-one-out indices, the
validation ELBO, the kNN (retrieval-augmented) training prior, and a resumed run that had stopped early."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from baselines.gaussian import GaussianPrior
from evae.config import TrainConfig
from evae.models import VAE, build_model
from evae.priors.exemplar import ExemplarPrior
from evae.train import loop, trainer
from evae.train.trainer import train

# --- one training epoch: what reaches the model and the prior -----------------------------------------

CODE_BITS = 8  # pixels 0-7 of training image i spell i in binary (0 and 1 exactly: binarisation keeps them)


def coded_images(n: int) -> torch.Tensor:
    """Gray training images [n, 784] that name their own index: the first CODE_BITS pixels are the bits of i,
    every other pixel the gray level 0.5 (a fair coin under binarisation)."""
    bits = (torch.arange(n).unsqueeze(1) >> torch.arange(CODE_BITS)) & 1
    return torch.cat([bits.float(), torch.full((n, 784 - CODE_BITS), 0.5)], 1)


def decode_index(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :CODE_BITS].long() << torch.arange(CODE_BITS)).sum(1)


class SpyPrior(GaussianPrior):
    """The Gaussian prior, recording the training-set indices each call hands it."""

    def __init__(self, latent_dim):
        super().__init__(latent_dim)
        self.indices = []

    def log_prob(self, z, encoder, index=None):
        self.indices.append(None if index is None else index.clone())
        return super().log_prob(z, encoder, index)


class SpyVAE(VAE):
    """A VAE recording the images and indices of every loss it is asked for."""

    def __init__(self):
        super().__init__(SpyPrior(4), latent_dim=4, hidden=8)
        self.batches = []

    def loss(self, x, index=None, beta=1.0):
        self.batches.append((x.clone(), index.clone()))
        return super().loss(x, index, beta)


def test_each_minibatch_reaches_the_prior_with_its_own_indices_and_freshly_binarised_images():
    n, batch = 250, 100  # not a multiple of the batch: the last minibatch holds 50
    train_x = coded_images(n)
    torch.manual_seed(0)
    model = SpyVAE()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    shuffle = torch.Generator().manual_seed(1)
    epochs = []
    for epoch in (1, 2):
        model.batches.clear()
        model.prior.indices.clear()
        loop.train_epoch(model, optimizer, train_x, batch, 1.0, shuffle, epoch)
        assert [len(index) for _, index in model.batches] == [100, 100, 50]
        for (x, index), prior_index in zip(model.batches, model.prior.indices, strict=True):
            assert torch.equal(prior_index, index)  # the prior leaves out exactly this minibatch's images
            assert torch.equal(decode_index(x), index)  # the images are those of the indices, in the same order
            assert set(x.unique().tolist()) == {0.0, 1.0}  # binarised
        order = torch.cat([index for _, index in model.batches])
        assert sorted(order.tolist()) == list(range(n))  # every training image exactly once, the short batch too
        epochs.append((order, torch.cat([x for x, _ in model.batches])))

    (order1, x1), (order2, x2) = epochs
    assert not torch.equal(order1, order2)  # reshuffled every epoch
    gray1, gray2 = x1[order1.argsort(), CODE_BITS:], x2[order2.argsort(), CODE_BITS:]  # by image index
    for gray in (gray1, gray2):  # Bernoulli(0.5) draws: the mean within 6 standard errors
        assert abs(float(gray.mean()) - 0.5) < 6 * math.sqrt(0.25 / gray.numel())
    # drawn afresh: an image's pixels agree between epochs only by chance (half of them), as do two images'
    assert abs(float((gray1 == gray2).float().mean()) - 0.5) < 6 * math.sqrt(0.25 / gray1.numel())
    assert abs(float((gray1[0] == gray1[1]).float().mean()) - 0.5) < 0.1


# --- validation: the evaluation prior over all N exemplars, in eval mode, after the refresh --------------


def test_validation_is_the_elbo_under_the_all_n_mixture_of_the_refreshed_means(monkeypatch):
    """run_epoch's val_loss against an independent reference: the model's own one-sample terms with the prior
    (1/N) sum_n N(z; mu(x_n), s^2 I) over all N exemplars, the means encoded afresh with the weights the steps
    left, no leave-one-out, summed in float64 over explicit distances."""
    n_train, n_val, batch, eval_batch = 60, 30, 20, 16
    g = torch.Generator().manual_seed(0)
    train_x = torch.rand(n_train, 784, generator=g)
    val_x = (torch.rand(n_val, 784, generator=g) < 0.4).float()
    torch.manual_seed(0)
    cfg = TrainConfig(prior="exemplar", exemplar_mode="exact", exemplar_subset=0.5, hidden=16, latent_dim=6)
    model = build_model(cfg, train_x)
    assert model.prior.subset == n_train // 2  # training mixes over M = N/2 drawn exemplars, with LOO
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.prior.refresh(model.encode)  # as the trainer does before its first epoch
    stale = model.prior.cached_means.clone()

    seen = {}
    evaluate = loop.evaluate_elbo

    def spy(model_, x, batch_size):
        seen.update(training=(model_.training, model_.prior.training), rng=torch.get_rng_state(),
                    means=model_.prior.cached_means.clone())
        return evaluate(model_, x, batch_size)

    monkeypatch.setattr(loop, "evaluate_elbo", spy)
    row, _ = loop.run_epoch(model, optimizer, train_x, val_x, batch, eval_batch, 0.5, torch.Generator().manual_seed(1), 1)

    assert seen["training"] == (False, False)  # eval mode: no exemplar subset, no leave-one-out
    with torch.no_grad():
        fresh = model.encode(train_x)[0]  # the means the steps' weights give
        assert not torch.allclose(fresh, stale, atol=1e-4)  # the steps moved them: a stale cache would show
        torch.testing.assert_close(seen["means"], fresh)
        model.eval()
        torch.set_rng_state(seen["rng"])  # the same reparameterisation draws, batch by batch
        samples = [model.sample_pass(val_x[i : i + eval_batch]) for i in range(0, n_val, eval_batch)]
    z = torch.cat([s.z for s in samples]).double().numpy()
    rest = torch.cat([s.log_px - s.log_q for s in samples]).double().numpy()
    var = float(model.prior.logvar.detach().exp())
    log_prior = (logsumexp(-0.5 * cdist(z, fresh.double().numpy(), "sqeuclidean") / var, axis=1)
                 - 0.5 * z.shape[1] * math.log(2 * math.pi * var) - math.log(n_train))
    assert row["val_loss"] == pytest.approx(-np.mean(rest + log_prior), abs=1e-4)
    assert row["val_kl"] == pytest.approx(
        np.mean(torch.cat([s.log_q for s in samples]).double().numpy() - log_prior), abs=1e-4)


# --- kNN (retrieval-augmented) training at k < N -------------------------------------------------------


def test_knn_training_prior_is_the_loo_mixture_over_the_minibatch_nearest_cached_means():
    """At k < N, each point's training prior is the mixture over the union of the minibatch's k + 1 nearest
    cached means (re-encoded), its own exemplar left out, normalised by 1 / (N - 1); brute force in float64."""
    n, k, latent = 60, 4, 3
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    encoder = torch.nn.Linear(784, latent)
    encode = lambda x: (encoder(x), torch.zeros(len(x), latent))  # noqa: E731
    prior = ExemplarPrior(torch.rand(n, 784, generator=g), mode="knn", k=k).train()
    with torch.no_grad():
        prior.logvar.fill_(math.log(0.05))
    prior.refresh(encode)
    means = prior.cached_means.double().numpy()
    index = torch.tensor([3, 17, 42, 8, 59, 26])
    z = prior.cached_means[index] + 0.03 * torch.randn(len(index), latent, generator=g)  # near their own exemplars

    got = prior.log_prob(z, encode, index=index)

    dist = cdist(z.double().numpy(), means, "sqeuclidean")
    nearest = np.argsort(dist, axis=1)[:, : k + 1]  # k + 1: leaving oneself out still leaves k
    union = np.unique(nearest)
    assert all(i in set(nearest[b]) for b, i in enumerate(index.tolist()))  # own exemplar retrieved: LOO matters
    assert len(union) > k + 1 and len(union) < n - 1  # the union adds other points' neighbours; not all N
    var = math.exp(float(prior.logvar.detach()))
    expected = []
    for b, own in enumerate(index.tolist()):
        kept = union[union != own]
        expected.append(logsumexp(-0.5 * dist[b, kept] / var) - 0.5 * latent * math.log(2 * math.pi * var)
                        - math.log(n - 1))
    np.testing.assert_allclose(got.detach().double().numpy(), expected, rtol=0, atol=2e-4)


# --- resuming a run that stopped early ---------------------------------------------------------------------


def test_a_run_that_stopped_early_trains_no_further_when_resumed(tmp_path, monkeypatch):
    """`snakemake --forcerun train` deletes summary.json before the job runs: the run then resumes from its
    checkpoint, which must not train past the epoch where early stopping ended it."""
    losses = itertools.chain([10.0, 11.0, 12.0], itertools.repeat(1.0))  # would improve, were it trained on
    monkeypatch.setattr(loop, "evaluate_elbo", lambda *a: {"loss": next(losses), "rec": 0.0, "kl": 0.0})
    monkeypatch.setattr(trainer, "gemm_gflops", lambda threads: 0.0)  # the segment's GEMM rate: seconds, unused here
    cfg = TrainConfig(dataset="mnist_subset", max_train_images=200, max_val_images=100, hidden=16, prior="gaussian",
                      warmup_epochs=1, patience=2, max_epochs=10)
    first = train(cfg, tmp_path, progress=False)
    assert (first["epochs_trained"], first["best_epoch"]) == (3, 1) and first["stopped"].startswith("early stopping")
    (tmp_path / "summary.json").unlink()
    again = train(cfg, tmp_path, progress=False)
    assert (again["epochs_trained"], again["best_epoch"], again["stopped"]) == (3, 1, first["stopped"])
