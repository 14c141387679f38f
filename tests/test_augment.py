"""Generative augmentation: the augmented images, the loss mixture, the schedule, and that the MLP learns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from evae.evaluate.augment import FINAL_LR_FRACTION, LR, ExemplarAugmenter, fit, lr_at, mlp
from evae.models import VAE
from evae.priors.exemplar import ExemplarPrior


def exemplar_vae(n=64, seed=0):
    torch.manual_seed(seed)
    images = torch.rand(n, 784)
    model = VAE(ExemplarPrior(images)).eval()
    with torch.no_grad():
        model.prior.logvar.fill_(-2.0)
    return model, images


def test_augmented_images_lie_on_the_1_255_grid_in_the_unit_interval():
    model, images = exemplar_vae()
    aug = ExemplarAugmenter(model, images, noise_scale=1.0, generator=torch.Generator().manual_seed(0))
    out = aug(torch.arange(64))
    assert out.shape == (64, 784)
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose((out * 255).numpy(), np.round((out * 255).numpy()), atol=1e-4)
    assert len(torch.unique(out)) > 50  # not collapsed onto a few values


def test_augmented_images_decode_encoder_mean_plus_scaled_noise(monkeypatch):
    model, images = exemplar_vae()
    scale = 0.7
    aug = ExemplarAugmenter(model, images, noise_scale=scale, generator=torch.Generator().manual_seed(3))
    seen = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda z: seen.append(z.clone()) or decode(z))
    index = torch.tensor([5, 5, 9, 0])
    out = aug(index)
    with torch.no_grad():
        means = model.encode(images[index])[0]
    noise = torch.randn(means.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(seen[0], means + scale * noise)  # the encoder MEAN of each exemplar, plus s * noise
    torch.testing.assert_close(out, torch.round(decode(means + scale * noise) * 255) / 255)
    assert not torch.equal(out[0], out[1])  # a fresh draw per requested image


def test_noise_scale_defaults_to_the_prior_standard_deviation_and_draws_are_standard_normal(monkeypatch):
    model, images = exemplar_vae(n=500)
    s = float(model.prior.logvar.detach().mul(0.5).exp())
    aug = ExemplarAugmenter(model, images, noise_scale=s, generator=torch.Generator().manual_seed(1))
    seen = []
    monkeypatch.setattr(model, "decode", lambda z: seen.append(z.clone()) or torch.zeros(len(z), 784))
    aug(torch.arange(500))
    with torch.no_grad():
        eps = (seen[0] - model.encode(images)[0]) / s
    assert abs(float(eps.mean())) < 0.02 and abs(float(eps.std()) - 1) < 0.02


def test_lr_schedule_is_linear_from_lr_to_one_percent():
    lrs = [lr_at(e, 100) for e in range(1, 101)]
    assert lrs[0] == pytest.approx(LR) and lrs[-1] == pytest.approx(LR * FINAL_LR_FRACTION)
    np.testing.assert_allclose(np.diff(lrs), np.full(99, -(LR - LR * FINAL_LR_FRACTION) / 99))
    assert lr_at(1, 1) == LR


def separable(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.nn.functional.one_hot(y, 3).float() * 3 + 0.3 * torch.randn(n, 3, generator=g)
    return torch.cat([x, torch.zeros(n, 5)], 1), y


def test_classifier_learns_a_separable_set_and_logs_every_epoch():
    x, y = separable()
    torch.manual_seed(0)
    clf = mlp(32, n_in=8, n_classes=3)
    history = fit(clf, x, y, 5, torch.Generator().manual_seed(0), progress=False,
                  evaluate=lambda c: {"error": float((c(x).argmax(1) != y).float().mean() * 100)})
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["lr"] == pytest.approx(LR * FINAL_LR_FRACTION)
    assert history[-1]["error"] == 0.0
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_augmented_batch_uses_the_real_labels_and_the_0_4_0_6_mixture():
    # An "augmenter" that returns the real images: 0.4 L + 0.6 L = L, so training must match plain training
    # step for step, which holds only if the augmented batch is labelled with the real batch's labels.
    x, y = separable(n=300)
    torch.manual_seed(0)
    plain = mlp(16, n_in=8, n_classes=3)
    mixed, scrambled = copy.deepcopy(plain), copy.deepcopy(plain)
    fit(plain, x, y, 2, torch.Generator().manual_seed(1), progress=False)
    fit(mixed, x, y, 2, torch.Generator().manual_seed(1), augmenter=lambda index: x[index], progress=False)
    for a, b in zip(plain.parameters(), mixed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # images that do not match their labels train differently (so the comparison above can fail)
    fit(scrambled, x, y, 2, torch.Generator().manual_seed(1), augmenter=lambda index: x[index.flip(0)], progress=False)
    pairs = zip(plain.parameters(), scrambled.parameters())
    differ = [not torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in pairs]
    assert any(differ)
