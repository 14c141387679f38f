"""Generative augmentation as docs/protocol.md section 5 says: each step is 0.4 x loss(real batch) + 0.6 x loss(augmented
batch), and ``train_classifier`` trains with the exemplar model's augmenter on every minibatch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from evae.config import TrainConfig
from evae.data import load_dataset
from evae.evaluate import augment
from evae.evaluate.augment import BATCH, LABEL_SMOOTHING, LR, fit, mlp
from evae.evaluate.common import encoder_means
from evae.runs import load_run
from evae.train import trainer
from evae.train.trainer import train


def test_one_step_is_sgd_on_0_4_real_plus_0_6_augmented_loss():
    """One minibatch, one epoch: the first SGD step (momentum buffer = gradient) on the known mixture of the real
    batch's loss and the loss of images that are not the real ones, both with the real labels."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(BATCH, 8, generator=g), torch.randint(0, 3, (BATCH,), generator=g)
    other = 4 * torch.rand(BATCH, 8, generator=g) - 2  # what the augmenter returns: no function of the real images
    torch.manual_seed(0)
    classifier = mlp(16, n_in=8, n_classes=3)
    reference = copy.deepcopy(classifier)

    history = fit(classifier, x, y, 1, torch.Generator().manual_seed(1), augmenter=lambda index: other[index],
                  progress=False)

    def loss_and_gradient(images):  # a batch's mean loss does not depend on the order its images come in
        loss = F.cross_entropy(reference(images), y, label_smoothing=LABEL_SMOOTHING)
        return loss.item(), torch.autograd.grad(loss, list(reference.parameters()))

    (real, g_real), (augmented, g_augmented) = loss_and_gradient(x), loss_and_gradient(other)
    assert history[0]["train_loss"] == pytest.approx(0.4 * real + 0.6 * augmented, rel=1e-6)
    for got, p, a, b in zip(classifier.parameters(), reference.parameters(), g_real, g_augmented, strict=True):
        torch.testing.assert_close(got, p - LR * (0.4 * a + 0.6 * b))
    # other weights would step elsewhere, beyond the tolerance above
    assert max(float((LR * 0.2 * (a - b)).abs().max()) for a, b in zip(g_real, g_augmented)) > 1e-4


@pytest.fixture(scope="module")
def exemplar_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "gemm_gflops", lambda threads: 0.0)  # the segment's GEMM rate: seconds, unused here
        cfg = TrainConfig(dataset="mnist_subset", prior="exemplar", max_train_images=200, max_val_images=50,
                          hidden=32, max_epochs=1, warmup_epochs=1)
        train(cfg, out, progress=False)
    return out


def test_train_classifier_augments_every_minibatch_with_the_exemplar_models_images(exemplar_run, tmp_path, monkeypatch):
    calls, made = [], []
    real_call, real_init = augment.ExemplarAugmenter.__call__, augment.ExemplarAugmenter.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(augment.ExemplarAugmenter, "__init__", init)
    monkeypatch.setattr(augment.ExemplarAugmenter, "__call__",
                        lambda self, index: calls.append(index) or real_call(self, index))
    n = 250
    result = augment.train_classifier("mnist_subset", tmp_path / "aug.json", exemplar_run, hidden=16, epochs=1,
                                      max_train_images=n, progress=False)

    assert [len(index) for index in calls] == [100, 100, 50]  # one augmented batch per real one, the short one too
    assert sorted(torch.cat(calls).tolist()) == list(range(n))
    run = load_run(exemplar_run)
    (augmenter,) = made  # built from the run's model, on the classifier's training images
    images = torch.from_numpy(load_dataset("mnist_subset").train[:n])
    torch.testing.assert_close(augmenter.means, encoder_means(run.model, images))
    assert augmenter.scale == pytest.approx(run.model.prior.component_scale())
    assert result["augmentation"]["weights"] == [0.4, 0.6] and result["train_images"] == n
