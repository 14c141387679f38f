"""On a CUDA GPU: training agrees with the CPU, kill-and-resume is bit-identical, the NLL of the same weights agrees
with the CPU's, and the smoke pipeline runs end to end with ``device: cuda``; with two GPUs or more, jobs running at
once compute on different GPUs. On a GPU machine run just these with

    pytest -m cuda

Elsewhere every test here is skipped, saying why. Where CPU and GPU results are compared they differ for two
reasons, which the tolerances below are sized to: torch's CUDA generator draws other random numbers than its
CPU generator (the latent samples; initialisation, shuffling and binarisation come from CPU generators on both),
and the kernels round differently (float32, TF32 off).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import pytest
import torch

from evae import runs
from evae.config import TrainConfig
from evae.data import dynamic_binarize
from evae.evaluate.common import encoder_means
from evae.evaluate.nll import device_chunk, evaluate_nll
from evae.io import torch_load
from evae.provenance import numerics
from evae.train.trainer import train
from tests.conftest import REPO

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason=f"needs a CUDA GPU: torch {torch.__version__} sees none (torch.cuda.is_available() is "
                       "False; on a GPU machine, is torch the CUDA build? environment-cuda.yml installs it)"),
]

SMALL = dict(dataset="mnist_subset", max_train_images=1000, max_val_images=500, max_epochs=3, warmup_epochs=1)


@pytest.fixture(autouse=True)
def restore_numerics():
    """pick_device sets process-wide CUDA numerics (deterministic algorithms): put back what the test found."""
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    precision = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    yield
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = precision


def val_losses(run) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(row["val_loss"]) for row in csv.DictReader(f)]


def test_cuda_runs_deterministic_with_tf32_off_and_says_so(tmp_path):
    summary = train(TrainConfig(**{**SMALL, "prior": "gaussian", "max_epochs": 1, "device": "cuda"}), tmp_path,
                    progress=False)
    env = summary["environment"]
    assert env["device"].startswith("cuda:") and env["device_name"] == torch.cuda.get_device_name()
    assert env["numerics"] == numerics() and env["numerics"]["deterministic_algorithms"]
    assert env["numerics"]["fp32_precision"] == {"cuda_matmul": "ieee", "cudnn_conv": "ieee"}
    assert env["numerics"]["cublas_workspace_config"] in (":4096:8", ":16:8")
    ckpt = torch_load(tmp_path / "checkpoint.pt")
    assert ckpt["device"] == env["device"] and torch.is_tensor(ckpt["rng_cuda"])  # that one device's state


def test_binarisation_on_cuda_draws_what_it_draws_on_the_cpu():
    gray = torch.rand(100, 784, generator=torch.Generator().manual_seed(0))
    on_cpu = dynamic_binarize(gray, torch.Generator().manual_seed(1))
    on_cuda = dynamic_binarize(gray.cuda(), torch.Generator().manual_seed(1))
    assert on_cuda.is_cuda and torch.equal(on_cuda.cpu(), on_cpu)


@pytest.mark.parametrize("prior", ["gaussian", "vampprior"])
def test_a_tiny_run_trained_on_cuda_agrees_with_the_cpu_run(tmp_path, prior):
    """Tolerance: 3 % of each epoch's validation -ELBO. The GPU run shares the CPU run's initialisation and data;
    its latent samples differ. Measured on the CPU, the same initialisation with other latent samples moves each
    epoch's validation -ELBO by up to 1.5 % (Gaussian) and 0.9 % (VampPrior)."""
    cfg = TrainConfig(**{**SMALL, "prior": prior})
    train(cfg.replace(device="cpu"), tmp_path / "cpu", progress=False)
    train(cfg.replace(device="cuda"), tmp_path / "cuda", progress=False)
    cpu, cuda = val_losses(tmp_path / "cpu"), val_losses(tmp_path / "cuda")
    assert len(cpu) == len(cuda) == 3 and all(math.isfinite(v) for v in cuda)
    assert all(abs(a - b) <= 0.03 * a for a, b in zip(cpu, cuda)), (cpu, cuda)
    assert cuda[-1] < cuda[0] - 50  # it trains


class Killed(BaseException):
    """Stands for a SIGKILL right after an epoch's checkpoint is on disk."""


@pytest.mark.parametrize(("prior", "mode"), [("gaussian", "exact"), ("exemplar", "knn"), ("exemplar", "exact")])
def test_kill_and_resume_on_cuda_is_bit_identical(tmp_path, monkeypatch, prior, mode):
    cfg = TrainConfig(**{**SMALL, "prior": prior, "exemplar_mode": mode, "exemplar_subset": 0.2, "max_epochs": 4,
                         "device": "cuda"})
    save = runs.save_epoch

    def save_then_die_after_epoch_2(out, checkpoint, *args, **kwargs):
        save(out, checkpoint, *args, **kwargs)
        if checkpoint["state"]["epoch"] == 2:
            raise Killed

    monkeypatch.setattr(runs, "save_epoch", save_then_die_after_epoch_2)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "killed", progress=False)
    monkeypatch.setattr(runs, "save_epoch", save)
    resumed = train(cfg, tmp_path / "killed", progress=False)
    train(cfg, tmp_path / "straight", progress=False)
    assert resumed["segments"][-1]["resumed_from"]["device_changed"] is False
    assert (tmp_path / "killed" / "metrics.csv").read_bytes() == (tmp_path / "straight" / "metrics.csv").read_bytes()
    for name in ("best.pt", "checkpoint.pt"):
        a, b = (torch_load(tmp_path / d / name)["model"] for d in ("killed", "straight"))
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu_run")
    train(TrainConfig(**{**SMALL, "prior": "exemplar", "exemplar_mode": "knn", "device": "cpu"}), out, progress=False)
    return out


def test_the_same_weights_compute_the_same_numbers_on_cuda(cpu_run):
    """Tolerance: 1e-4 of the encoder means' scale and 1e-3 nats of log-densities (float32 products, TF32 off)."""
    cpu, cuda = runs.load_run(cpu_run, device="cpu"), runs.load_run(cpu_run, device="cuda")
    x = torch.from_numpy(cpu.data.test_binary[:200])
    means = encoder_means(cpu.model, x)
    torch.testing.assert_close(encoder_means(cuda.model, x.cuda()).cpu(), means, atol=1e-4 * means.abs().max(), rtol=0)
    z = means + 0.5 * torch.randn(means.shape, generator=torch.Generator().manual_seed(0))
    prior_cpu = cpu.model.prior.log_prob(z, cpu.model.encode)
    prior_cuda = cuda.model.prior.log_prob(z.cuda(), cuda.model.encode).cpu()
    torch.testing.assert_close(prior_cuda, prior_cpu, atol=1e-3, rtol=0)
    logits_cpu, logits_cuda = cpu.model.decoder(z), cuda.model.decoder(z.cuda()).cpu()
    torch.testing.assert_close(logits_cuda, logits_cpu, atol=1e-3, rtol=1e-4)


def test_the_nll_of_a_cuda_run_equals_the_cpu_nll_of_the_same_weights(cpu_run, tmp_path):
    """Tolerance: 1 nat on the mean over 20 images at S = 1000. Four seeds of the CPU estimate of such a model spread
    by 0.34-0.64 nats; CPU and GPU draw other latent samples."""
    kwargs = dict(samples=1000, max_images=20, exemplar_bound=None, progress=False)
    cpu = evaluate_nll(cpu_run, tmp_path / "cpu.json", device="cpu", **kwargs)
    cuda = evaluate_nll(cpu_run, tmp_path / "cuda.json", device="cuda", **kwargs)
    assert cuda["environment"]["device"].startswith("cuda:") and cpu["environment"]["device"] == "cpu"
    assert abs(cuda["nll"] - cpu["nll"]) < 1.0, (cpu["nll"], cuda["nll"])
    assert cpu["chunk_rule"] == "default" and cuda["chunk_rule"].startswith("device memory")


def test_the_colour_models_nll_chunk_fits_the_free_memory():
    from evae.models import build_model

    cfg = TrainConfig(dataset="celeba_standin", architecture="convvae64", prior="gaussian", latent_dim=128,
                      hidden=128)
    model = build_model(cfg, torch.zeros(2, 3 * 64 * 64, dtype=torch.uint8), (3, 64, 64)).cuda().eval()
    chunk, rule = device_chunk(model, torch.zeros(3 * 64 * 64, dtype=torch.uint8, device="cuda"), 5000)
    free = torch.cuda.mem_get_info()[0]
    assert 1 <= chunk <= 2500 and rule.startswith("device memory")
    assert chunk * 2 * 128 * 64 * 64 * 4 <= free  # at least the two widest activations of every sample fit


@pytest.mark.slow
def test_the_smoke_profile_runs_end_to_end_with_device_cuda(tmp_path):
    import shutil

    from tests.quickstart import smoke_study
    from tests.test_pipeline import REPO, make_workdir, snakemake

    workdir = make_workdir(tmp_path / "w")
    shutil.copy(REPO / "environment-cuda.yml", workdir)
    (workdir / "cuda.yaml").write_text("train:\n  device: cuda\n")
    snakemake(workdir, "--cores", "2", "--configfile", "config/smoke.yaml", "cuda.yaml")
    for target in smoke_study(workdir).all_targets():
        assert (workdir / target).is_file(), target
    for log in (workdir / "logs" / "smoke" / "train").rglob("*.log"):
        assert "device cuda:" in log.read_text(), log
    summaries = list((workdir / "results" / "smoke" / "runs").rglob("summary.json"))
    assert summaries and all(runs.read_summary(s)["environment"]["device"].startswith("cuda:") for s in summaries)


# a model job's first step: the device it picks with device auto, torch's current device, the GPU's UUID; it
# computes there and holds its GPU until its stdin is closed
JOB = """
import logging, sys
import torch
from evae.provenance import pick_device
logging.basicConfig(level=logging.INFO)
device = pick_device("auto")
x = torch.ones(256, 256, device=device)
assert (x @ x).sum().item() == 256**3
print(device, torch.cuda.current_device(), torch.cuda.get_device_properties(device).uuid, flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=f"needs two GPUs: torch sees {torch.cuda.device_count()}")
def test_jobs_running_at_once_compute_on_different_gpus(tmp_path):
    """Two jobs started together, as Snakemake starts two model jobs on a machine with two GPUs or more, each compute
    on a GPU of its own (evae.gpu_claim; its lock directory here the test's own, through TMPDIR)."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": path}
    jobs = [subprocess.Popen([sys.executable, "-c", JOB], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    seen = [job.stdout.readline().split() for job in jobs]  # both running, each holding its GPU
    logs = [job.communicate("")[1] for job in jobs]
    assert all(len(s) == 3 for s in seen), logs
    (device_a, current_a, uuid_a), (device_b, current_b, uuid_b) = seen
    assert device_a != device_b and uuid_a != uuid_b, seen
    assert (device_a, device_b) == (f"cuda:{current_a}", f"cuda:{current_b}")  # torch's current device as well
    assert all("claimed cuda:" in log for log in logs), logs
