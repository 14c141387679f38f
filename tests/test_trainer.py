"""The optimiser and the resumable trainer: known-answer AdamNormGrad, warm-up, early stopping,
training on the embedded subset, kill-and-resume exactness, NaN stop, every architecture x prior."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evae.cli import main as cli_main
from evae.config import ConfigError, TrainConfig
from evae.io import torch_load
from evae.runs import METRICS, load_run
from evae.train import loop, trainer
from evae.train.loop import TrainingDivergedError, beta_at
from evae.train.optim import AdamNormGrad, make_optimizer
from evae.train.trainer import train
from tests.conftest import REPO, checkpoint_epoch
TINY = dict(dataset="mnist_subset", max_train_images=200, max_val_images=100, hidden=64, pseudo_inputs=20)


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**{**TINY, **changes})


def read_metrics(run: Path) -> list[dict]:
    with open(run / METRICS) as f:
        return list(csv.DictReader(f))


# --- AdamNormGrad -----------------------------------------------------------------------------------


def test_adamnormgrad_is_adam_on_per_tensor_normalised_gradients():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    opt = make_optimizer("adamnormgrad", params, lr=0.01)
    assert isinstance(opt, AdamNormGrad)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    ref = [p.detach().double().clone() for p in params]
    m = [torch.zeros_like(r) for r in ref]
    v = [torch.zeros_like(r) for r in ref]
    plain = [torch.nn.Parameter(p.detach().clone()) for p in params]
    plain_opt = torch.optim.Adam(plain, lr=0.01)
    for t in range(1, 6):
        grads = [torch.randn_like(p) * 10.0 ** (t - 3) for p in params]  # norms vary over 4 decades
        for p, q, g in zip(params, plain, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        plain_opt.step()
        for i, g in enumerate(grads):
            gn = g.double() / (g.double().norm() + 1e-7)
            m[i] = 0.9 * m[i] + 0.1 * gn
            v[i] = 0.999 * v[i] + 0.001 * gn * gn
            m_hat, v_hat = m[i] / (1 - 0.9**t), v[i] / (1 - 0.999**t)
            ref[i] = ref[i] - 0.01 * m_hat / (v_hat.sqrt() + 1e-8)
    for p, r, q in zip(params, ref, plain):
        torch.testing.assert_close(p.detach().double(), r, rtol=1e-6, atol=1e-6)
        assert (p - q).abs().max() > 1e-3  # plain Adam on the raw gradients lands elsewhere


# --- warm-up and early stopping -------------------------------------------------------------------


def test_beta_warmup():
    assert [beta_at(e, 100) for e in (1, 50, 100, 101, 1000)] == [0.01, 0.5, 1.0, 1.0, 1.0]
    assert beta_at(1, 0) == 1.0


def test_early_stopping_patience_is_held_during_warmup(tmp_path, monkeypatch):
    losses = iter([10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0])  # never improves after epoch 1
    monkeypatch.setattr(loop, "evaluate_elbo", lambda *a: {"loss": next(losses), "rec": 0.0, "kl": 0.0})
    summary = train(tiny(prior="gaussian", warmup_epochs=3, patience=2, max_epochs=7), tmp_path, progress=False)
    # epochs 1-2 have beta < 1 (not counted); epochs 3 and 4 are the two bad ones
    assert summary["epochs_trained"] == 4 and summary["stopped"].startswith("early stopping")
    assert summary["best_epoch"] == 1 and torch_load(tmp_path / "best.pt")["epoch"] == 1
    assert [r["beta"] for r in read_metrics(tmp_path)] == [str(1 / 3), str(2 / 3), "1.0", "1.0"]


def test_best_checkpoint_is_the_best_validation_epoch(tmp_path, monkeypatch):
    losses = iter([10.0, 8.0, 9.0])
    monkeypatch.setattr(loop, "evaluate_elbo", lambda *a: {"loss": next(losses), "rec": 0.0, "kl": 0.0})
    train(tiny(prior="gaussian", max_epochs=3), tmp_path, progress=False)
    best = torch_load(tmp_path / "best.pt")
    assert best["epoch"] == 2 and best["val_loss"] == 8.0
    assert torch_load(tmp_path / "checkpoint.pt")["state"]["epoch"] == 3


# --- training actually trains ------------------------------------------------------------------------


def test_short_run_on_embedded_subset_lowers_validation_loss(tmp_path):
    cfg = TrainConfig(dataset="mnist_subset", prior="gaussian", max_train_images=1000, max_val_images=500,
                      max_epochs=3, warmup_epochs=0)
    train(cfg, tmp_path, progress=False)
    val = [float(r["val_loss"]) for r in read_metrics(tmp_path)]
    assert val[2] < val[0] - 5 and all(math.isfinite(v) for v in val)


# --- resuming ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exact", "knn"])
def test_resume_after_clean_stop_with_max_epochs_raised(tmp_path, mode):
    cfg = tiny(prior="exemplar", exemplar_mode=mode, exemplar_subset=0.5, max_epochs=2)
    first = train(cfg, tmp_path / "resumed", progress=False)
    assert first["epochs_trained"] == 2
    again = train(cfg, tmp_path / "resumed", progress=False)  # finished: nothing to do
    assert again == first
    train(cfg.replace(max_epochs=4), tmp_path / "resumed", progress=False)
    train(cfg.replace(max_epochs=4), tmp_path / "straight", progress=False)
    assert (tmp_path / "resumed" / METRICS).read_text() == (tmp_path / "straight" / METRICS).read_text()
    a, b = (torch_load(tmp_path / d / "checkpoint.pt")["model"] for d in ("resumed", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tables_are_rewritten_from_the_checkpoint(tmp_path):
    """A kill after the last checkpoint but before metrics.csv was written loses no row."""
    cfg = tiny(prior="gaussian", max_epochs=2)
    train(cfg, tmp_path, progress=False)
    expected = (tmp_path / METRICS).read_text()
    (tmp_path / "summary.json").unlink()
    (tmp_path / METRICS).write_text("epoch\n1\n")
    assert train(cfg, tmp_path, progress=False)["epochs_trained"] == 2
    assert (tmp_path / METRICS).read_text() == expected


def test_resume_with_a_different_config_is_refused(tmp_path):
    train(tiny(prior="gaussian", max_epochs=1), tmp_path, progress=False)
    (tmp_path / "summary.json").unlink()
    with pytest.raises(ConfigError, match="different config"):
        train(tiny(prior="gaussian", max_epochs=2, lr=1e-3), tmp_path, progress=False)


def _cli(out: Path, settings: dict) -> list[str]:
    args = [sys.executable, "-m", "evae", "train", "--out", str(out), "--no-progress"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted_run(tmp_path):
    settings = dict(dataset="mnist_subset", prior="exemplar", exemplar_mode="knn", max_val_images=300, max_epochs=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(run, settings), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while checkpoint_epoch(run) < 1:  # the event: epoch 1's checkpoint is in place
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # now: writing epoch 1's tables or inside epoch 2, three epochs from the end
    assert proc.wait() == -signal.SIGKILL
    proc.stderr.close()
    assert not (run / "summary.json").exists()
    killed_at = checkpoint_epoch(run)
    assert 1 <= killed_at < 4
    subprocess.run(_cli(run, settings), cwd=REPO, env=env, check=True, capture_output=True)
    train(TrainConfig.from_dict(settings), tmp_path / "straight", progress=False)
    assert (run / METRICS).read_text() == (tmp_path / "straight" / METRICS).read_text()
    assert len(read_metrics(run)) == 4
    a, b = (torch_load(d / "best.pt")["model"] for d in (run, tmp_path / "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- divergence -----------------------------------------------------------------------------------------


def test_nan_loss_stops_with_error_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    build = trainer.build_model

    def poisoned_build(*args, **kwargs):
        model = build(*args, **kwargs)
        calls = {"n": 0}
        loss = model.loss

        def nan_after_three(*a, **k):  # 2 batches per epoch: epoch 2's second batch is NaN
            calls["n"] += 1
            value, parts = loss(*a, **k)
            return (value * math.nan if calls["n"] > 3 else value), parts

        model.loss = nan_after_three
        return model

    monkeypatch.setattr(trainer, "build_model", poisoned_build)
    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 1"):
        train(tiny(prior="gaussian", max_epochs=3, batch_size=100), tmp_path, progress=False)
    ckpt = torch_load(tmp_path / "checkpoint.pt")
    assert ckpt["state"]["epoch"] == 1 and len(read_metrics(tmp_path)) == 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert (tmp_path / "best.pt").exists() and not (tmp_path / "summary.json").exists()


# --- every architecture with every prior, from the command line ----------------------------------------

COMBOS = [("gaussian", "exact"), ("vampprior", "exact"), ("exemplar", "exact"), ("exemplar", "knn")]


def _train_from_cli(tmp_path, arch, prior, mode):
    out = tmp_path / f"{arch}-{prior}-{mode}"
    settings = dict(TINY, architecture=arch, prior=prior, exemplar_mode=mode, max_train_images=100,
                    max_val_images=50, batch_size=50, max_epochs=2, exemplar_k=3)
    argv = ["train", "--out", str(out), "--no-progress"] + [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert cli_main(argv) == 0
    rows = read_metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r[c])) for r in rows for c in ("train_loss", "val_loss", "val_rec", "val_kl"))
    run = load_run(out)  # what the evaluation code uses
    assert not run.model.training and run.cfg.architecture == arch
    if prior == "exemplar":
        assert run.model.prior.cached_means.shape == (100, 40)


@pytest.mark.parametrize(("prior", "mode"), COMBOS)
@pytest.mark.parametrize("arch", ["vae", "hvae"])
def test_every_mlp_architecture_and_prior_trains_from_cli(tmp_path, arch, prior, mode):
    _train_from_cli(tmp_path, arch, prior, mode)


@pytest.mark.slow
@pytest.mark.parametrize(("prior", "mode"), COMBOS)
def test_convhvae_with_every_prior_trains_from_cli(tmp_path, prior, mode):
    _train_from_cli(tmp_path, "convhvae", prior, mode)


@pytest.mark.slow
@pytest.mark.parametrize(("prior", "mode"), COMBOS)
def test_convvae64_trains_on_the_celeba_sample_from_cli(tmp_path, monkeypatch, shared_data, prior, mode):
    if not (shared_data / "celeba-sample").is_dir():
        pytest.skip(f"no celeba-sample/ in the dataset mirror {shared_data}")
    monkeypatch.setenv("EVAE_DATA_MIRROR", str(shared_data))
    monkeypatch.setenv("EVAE_DATA_DIR", str(tmp_path / "cache"))
    out = tmp_path / f"celeba-{prior}-{mode}"
    settings = dict(dataset="celeba_sample", architecture="convvae64", prior=prior, exemplar_mode=mode, hidden=8,
                    latent_dim=16, pseudo_inputs=8, exemplar_k=3, batch_size=8, max_epochs=2, warmup_epochs=1)
    argv = ["train", "--out", str(out), "--no-progress"] + [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert cli_main(argv) == 0
    rows = read_metrics(out)
    assert len(rows) == 2 and all(math.isfinite(float(r["val_loss"])) for r in rows)
    # 24 images, 3 steps an epoch: the training loss falls (validation uses BatchNorm running averages of 3 steps)
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    run = load_run(out)
    assert run.data.image_shape == (3, 64, 64)
