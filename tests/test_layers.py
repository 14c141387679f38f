"""Known answers for the building blocks: gated layers, clipping, initialisation, log-densities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from evae.distributions import PROB_EPS, log_bernoulli_logits, log_normal_diag, log_standard_normal, logmeanexp
from evae.layers import LOGVAR_MAX, LOGVAR_MIN, GatedConv2d, GatedDense, GaussianHead, he_init
from evae.models.base import bernoulli_means


def test_gated_dense_is_a_x_times_sigmoid_b_x():
    torch.manual_seed(0)
    layer = GatedDense(7, 5)
    x = torch.randn(4, 7)
    a = x @ layer.h.weight.T + layer.h.bias
    b = x @ layer.g.weight.T + layer.g.bias
    torch.testing.assert_close(layer(x), a / (1 + torch.exp(-b)))


def test_gated_conv_is_conv_a_times_sigmoid_conv_b():
    torch.manual_seed(0)
    layer = GatedConv2d(3, 4, kernel=3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    a = F.conv2d(x, layer.h.weight, layer.h.bias, stride=2, padding=1)
    b = F.conv2d(x, layer.g.weight, layer.g.bias, stride=2, padding=1)
    out = layer(x)
    assert out.shape == (2, 4, 5, 5)
    torch.testing.assert_close(out, a * torch.sigmoid(b))


def test_gaussian_head_clips_log_variance_to_minus6_2():
    torch.manual_seed(0)
    head = GaussianHead(3, 50)
    with torch.no_grad():
        head.logvar.weight.mul_(100.0)  # log-variances far outside [-6, 2] in both directions
    x = torch.randn(64, 3)
    mean, logvar = head(x)
    raw = head.logvar(x)
    assert (raw < LOGVAR_MIN).any() and (raw > LOGVAR_MAX).any() and ((raw > -6) & (raw < 2)).any()
    assert (LOGVAR_MIN, LOGVAR_MAX) == (-6.0, 2.0)
    assert logvar.min() == -6.0 and logvar.max() == 2.0
    inside = (raw > -6) & (raw < 2)
    torch.testing.assert_close(logvar[inside], raw[inside])
    torch.testing.assert_close(mean, head.mean(x))


def test_bernoulli_means_are_clamped_to_1e5():
    logits = torch.tensor([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    p = bernoulli_means(logits)
    assert PROB_EPS == 1e-5
    assert p[0] == p[1] == torch.tensor(1e-5) and p[3] == p[4] == torch.tensor(1 - 1e-5)
    assert p[2] == 0.5
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    assert torch.isfinite(log_bernoulli_logits(x, logits.unsqueeze(0))).all()


def test_he_init_weights_std_sqrt_2_over_fan_in_and_default_biases():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 300), GatedDense(300, 200), torch.nn.Conv2d(1, 8, 3))
    conv_before = net[2].weight.clone()
    biases_before = [net[0].bias.clone(), net[1].h.bias.clone()]
    he_init(net)
    for layer, fan_in in ((net[0], 784), (net[1].h, 300), (net[1].g, 300)):
        w = layer.weight.detach()
        n = w.numel()
        # sample std of n normal draws has relative standard error 1 / sqrt(2 n); allow 5 of them
        assert abs(w.std().item() / math.sqrt(2 / fan_in) - 1) < 5 / math.sqrt(2 * n)
        assert abs(w.mean().item()) < 5 * math.sqrt(2 / fan_in) / math.sqrt(n)
    torch.testing.assert_close(net[2].weight, conv_before)  # convolutions keep PyTorch's default
    torch.testing.assert_close(net[0].bias, biases_before[0])  # so do biases
    torch.testing.assert_close(net[1].h.bias, biases_before[1])


def test_log_densities_match_torch_distributions():
    torch.manual_seed(0)
    z, mean, logvar = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 4)
    ref = D.Independent(D.Normal(mean, torch.exp(0.5 * logvar)), 1).log_prob(z)
    torch.testing.assert_close(log_normal_diag(z, mean, logvar), ref)
    torch.testing.assert_close(log_standard_normal(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1))
    logits = 3 * torch.randn(6, 10)
    x = torch.bernoulli(torch.full((6, 10), 0.5))
    torch.testing.assert_close(log_bernoulli_logits(x, logits), D.Bernoulli(logits=logits).log_prob(x).sum(-1))


def test_bernoulli_from_logits_is_the_clamped_bernoulli_with_its_gradient():
    g = torch.Generator().manual_seed(0)
    logits = (8 * torch.randn(6, 300, generator=g, dtype=torch.float64)).requires_grad_()  # many beyond the clamp
    x = (torch.rand(6, 300, generator=g, dtype=torch.float64) < 0.3).double()
    got = log_bernoulli_logits(x.float(), logits.float())
    lo, hi = (float(torch.tensor(p, dtype=torch.float32)) for p in (PROB_EPS, 1 - PROB_EPS))  # float32 models' bounds
    probs = torch.sigmoid(logits).clamp(lo, hi)
    ref = D.Bernoulli(probs=probs).log_prob(x).sum(-1)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=2e-4)  # float32 of sums of ~300 terms
    grad, ref_grad = torch.autograd.grad(got.sum(), logits)[0], torch.autograd.grad(ref.sum(), logits)[0]
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)  # x - p inside the clamp, 0 outside
    assert (ref_grad == 0).sum() > 100 and (ref_grad != 0).sum() > 100


@pytest.mark.parametrize("shift", [0.0, -1e4])
def test_logmeanexp_is_log_of_mean_of_exp(shift):
    a = torch.tensor([[0.1, -2.0, 3.0]], dtype=torch.float64) + shift
    expected = math.log((math.exp(0.1) + math.exp(-2.0) + math.exp(3.0)) / 3) + shift
    assert logmeanexp(a, dim=1).item() == pytest.approx(expected, abs=1e-9)
