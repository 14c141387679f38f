"""Ready for the GPU box, checked on the CPU: the device every model job logs, RNG states across devices, the
prior refreshed in eval mode, the deferred non-finite check, NLL chunks sized to device memory, the rules' GPU
resource, and the provenance of the numerics and of a dirty tree. What needs a GPU: tests/test_cuda.py."""

from __future__ import annotations

import logging
import re
import runpy
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evae import checksums, provenance, runs
from evae.cli import main
from evae.config import ConfigError, TrainConfig
from evae.data.standin import generate
from evae.evaluate import nll
from evae.evaluate.augment import train_classifier
from evae.evaluate.knn import knn_probe
from evae.io import torch_load
from evae.models import build_model
from evae.pipeline_job import pipeline_job
from evae.report import figures
from evae.train import loop, trainer
from evae.train.loop import TrainingDivergedError
from evae.train.optim import make_optimizer
from evae.train.trainer import train
from tests.conftest import REPO

TINY = dict(dataset="mnist_subset", prior="gaussian", max_train_images=200, max_val_images=100, hidden=64)
DEVICE_LINE = re.compile(r"device (cpu|cuda:\d+): \S")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(**{**TINY, "prior": "exemplar", "max_epochs": 1}), out, progress=False)
    return out


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine seen as one without a usable GPU, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- the device each job chose, in its log --------------------------------------------------------


def test_pick_device_names_the_device_and_refuses_what_it_cannot_give(no_cuda, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="evae.provenance")
    assert provenance.pick_device("cpu") == torch.device("cpu")
    assert f"device cpu: {provenance.cpu()['model']}" in caplog.text
    monkeypatch.setattr(provenance, "_nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", None)
    caplog.clear()
    assert provenance.pick_device("auto") == torch.device("cpu")
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "is the CPU build" in warning[0].getMessage() and "environment-cuda.yml" in warning[0].getMessage()
    with pytest.raises(ConfigError, match="sees no CUDA GPU: torch .* is the CPU build"):
        provenance.pick_device("cuda")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
        provenance.pick_device("gpu")


def _jobs(run: Path, out: Path) -> dict:
    return {
        "knn": lambda: knn_probe(run, out / "knn.json", ks=(1,), pixel_baseline=False),
        "nll": lambda: nll.evaluate_nll(run, out / "nll.json", samples=4, max_images=1, progress=False),
        "unconditional_samples": lambda: figures.unconditional_samples([run], out / "samples.png", n=4),
        "augment": lambda: train_classifier("mnist_subset", out / "aug.json", hidden=8, epochs=1, max_train_images=100,
                                            progress=False),
    }


@pytest.mark.parametrize("job", ["knn", "nll", "unconditional_samples", "augment"])
def test_every_model_job_logs_its_device_when_it_starts(trained_run, tmp_path, job):
    log = tmp_path / "job.log"
    with pipeline_job(SimpleNamespace(log=[str(log)], threads=1, rule=job)):
        _jobs(trained_run, tmp_path)[job]()
    lines = [line for line in log.read_text().splitlines() if " evae." in line]
    assert f"job {job} started: 1 thread(s)" in lines[0]
    assert DEVICE_LINE.search(lines[1]), lines[:3]  # before anything is computed


def test_cli_refuses_a_device_it_does_not_have(trained_run, tmp_path, capsys, no_cuda):
    assert main(["knn", "--run", str(trained_run), "--out", str(tmp_path / "k.json"), "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "k.json").exists()


def test_results_record_the_device_and_its_numerics(trained_run):
    env = runs.read_summary(trained_run)["environment"]
    assert env["device_name"] and env["cuda"] == torch.version.cuda
    assert set(env["numerics"]) == {"deterministic_algorithms", "deterministic_warn_only", "cublas_workspace_config",
                                    "cudnn_benchmark", "fp32_precision"}
    segment = runs.read_summary(trained_run)["segments"][0]
    assert segment["resumed_from"] is None and segment["numerics"] == env["numerics"]


# --- RNG states across devices -------------------------------------------------------------------------


def _state(device: str | None, rng_cuda, segment_device: str | None = "cpu") -> dict:
    ckpt = {"rng_torch": torch.get_rng_state(), "rng_shuffle": torch.Generator().manual_seed(1).get_state(),
            "rng_cuda": rng_cuda, "state": {"segments": [{"device": segment_device}] if segment_device else []}}
    return {**ckpt, "device": device} if device else ckpt


FAKE_CUDA_STATE = [torch.full((16,), i, dtype=torch.uint8) for i in (1, 2)]


def test_the_device_a_checkpoint_was_written_on():
    assert trainer.checkpoint_device(_state("cuda:1", None)) == "cuda:1"  # recorded
    assert trainer.checkpoint_device(_state(None, [], "cuda:0")) == "cuda:0"  # older: its last segment's
    assert trainer.checkpoint_device(_state(None, FAKE_CUDA_STATE, None)) == "cuda"  # older still
    assert trainer.checkpoint_device(_state(None, [], None)) == "cpu"


@pytest.mark.parametrize(("ckpt", "device", "restored"), [
    (_state("cuda:0", FAKE_CUDA_STATE[1]), "cuda:0", FAKE_CUDA_STATE[1]),  # same kind: that state
    (_state("cuda:1", FAKE_CUDA_STATE[1]), "cuda:0", FAKE_CUDA_STATE[1]),  # another card: the same
    (_state(None, FAKE_CUDA_STATE, "cuda"), "cuda:0", FAKE_CUDA_STATE[0]),  # two GPUs' list: the one used
    (_state("cpu", None), "cuda:0", None),  # written on the CPU: the CUDA generator keeps its seed
    (_state(None, [], "cpu"), "cuda:0", None),
    (_state(None, FAKE_CUDA_STATE, "cpu"), "cuda:0", None),  # a GPU machine training on its CPU
    (_state("cuda:0", FAKE_CUDA_STATE[1]), "cpu", None),  # resumed on a CPU: no CUDA call at all
])
def test_restore_rng_sets_the_cuda_state_of_the_device_used_only(monkeypatch, ckpt, device, restored):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state, device)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("every GPU's state restored"))
    shuffle = torch.Generator()
    trainer.restore_rng(ckpt, shuffle, torch.device(device))
    assert torch.equal(shuffle.get_state(), ckpt["rng_shuffle"])
    assert torch.equal(torch.get_rng_state(), ckpt["rng_torch"])
    if restored is None:
        assert calls == []
    else:
        assert len(calls) == 1 and torch.equal(calls[0][0], restored) and calls[0][1] == torch.device(device)


def test_a_two_gpu_checkpoint_resumes_on_the_cpu_recorded_and_warned(tmp_path, monkeypatch, caplog):
    """An old-format checkpoint written on CUDA with two visible GPUs, resumed with device cpu on a machine
    whose torch claims CUDA: no CUDA state is touched, the run goes on, and the change is logged and recorded."""
    cfg = TrainConfig(**{**TINY, "device": "cpu", "max_epochs": 1})
    train(cfg, tmp_path, progress=False)
    ckpt = torch_load(tmp_path / "checkpoint.pt")
    del ckpt["device"]
    ckpt["rng_cuda"] = FAKE_CUDA_STATE
    ckpt["state"]["segments"][-1]["device"] = "cuda:0"
    checksums.torch_save(ckpt, tmp_path / "checkpoint.pt")
    (tmp_path / "summary.json").unlink()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: pytest.fail("a CUDA state restored on the CPU"))
    summary = train(cfg.replace(max_epochs=2), tmp_path, progress=False)
    assert summary["epochs_trained"] == 2
    assert summary["segments"][-1]["resumed_from"] == {"epoch": 1, "file": "checkpoint.pt", "device": "cuda:0",
                                                       "device_changed": True}
    assert "was written on cuda:0 and the run resumes on cpu" in caplog.text
    assert "no longer bit-identical" in caplog.text


# --- the prior's refresh in eval mode --------------------------------------------------------------------


def _batchnorm_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_refresh_leaves_batchnorm_statistics_and_the_mode_alone():
    torch.manual_seed(0)
    cfg = TrainConfig(dataset="celeba_standin", architecture="convvae64", prior="exemplar", exemplar_mode="knn",
                      latent_dim=8, hidden=4)
    faces = torch.from_numpy(generate(16).reshape(16, -1))
    model = build_model(cfg, faces, (3, 64, 64))
    before = _batchnorm_state(model)
    loop.refresh_prior(model)
    assert model.training and all(torch.equal(before[k], v) for k, v in _batchnorm_state(model).items())
    model.prior.refresh(model.encode)  # the same in train mode moves them: what the test guards against
    assert not all(torch.equal(before[k], v) for k, v in _batchnorm_state(model).items())


def test_a_resumed_convvae64_exemplar_run_equals_an_uninterrupted_one(tmp_path):
    cfg = TrainConfig(dataset="celeba_standin", architecture="convvae64", prior="exemplar", exemplar_mode="knn",
                      exemplar_k=3, latent_dim=8, hidden=4, batch_size=8, warmup_epochs=1, max_epochs=1,
                      max_train_images=24)
    train(cfg, tmp_path / "resumed", progress=False)
    train(cfg.replace(max_epochs=2), tmp_path / "resumed", progress=False)
    train(cfg.replace(max_epochs=2), tmp_path / "straight", progress=False)
    assert (tmp_path / "resumed" / "metrics.csv").read_bytes() == (tmp_path / "straight" / "metrics.csv").read_bytes()
    a, b = (torch_load(tmp_path / d / "checkpoint.pt")["model"] for d in ("resumed", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- the non-finite check of a GPU epoch, deferred to its end ----------------------------------------


@pytest.mark.parametrize("every_step", [True, False])
def test_a_non_finite_loss_names_its_batch_checked_now_or_at_the_epochs_end(every_step):
    torch.manual_seed(0)
    cfg = TrainConfig(**TINY)
    train_x = torch.from_numpy(runs.load_data(cfg).train)
    model = build_model(cfg, train_x)
    calls, loss = [], model.loss

    def nan_from_the_second(*args, **kwargs):
        calls.append(1)
        value, parts = loss(*args, **kwargs)
        return (value * float("nan") if len(calls) >= 2 else value), parts

    model.loss = nan_from_the_second
    optimizer = make_optimizer("adamnormgrad", model.parameters(), 5e-4)
    with pytest.raises(TrainingDivergedError, match="epoch 3, batch 1:"):
        loop.train_epoch(model, optimizer, train_x, 50, 1.0, torch.Generator().manual_seed(1), 3,
                         check_every_step=every_step)
    assert len(calls) == (2 if every_step else 4)  # 200 images in batches of 50: deferred, the epoch ran out


# --- NLL chunks sized to device memory -------------------------------------------------------------------

MiB, GiB = 2**20, 2**30


def test_nll_chunk_known_answers():
    assert nll.nll_chunk(5000) == 2500 and nll.nll_chunk(300) == 300  # the CPU: as before
    # the CelebA case: two [128, 64, 64] float32 activations a sample, 4 MiB; half of 10 GiB holds 1280
    assert nll.nll_chunk(5000, 4 * MiB, 10 * GiB) == 1280
    assert nll.nll_chunk(5000, 1 * MiB, 10 * GiB) == 2500  # 5120 fit: at most the default
    assert nll.nll_chunk(300, 4 * MiB, 10 * GiB) == 300
    assert nll.nll_chunk(5000, 4 * MiB, 10 * GiB, share=0.25) == 640
    assert nll.nll_chunk(5000, 10 * GiB, 1 * GiB) == 1  # never none


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU())

    def sample_passes(self, x, n):
        return self.net(x.expand(n, -1) + torch.randn(n, 3))


def test_sample_bytes_counts_every_leaf_output_and_leaves_the_rng_alone():
    toy = _Toy()
    before = torch.get_rng_state()
    assert nll.sample_bytes(toy, torch.zeros(3)) == 2 * 5 * 4  # Linear and ReLU outputs, 5 float32 each
    assert torch.equal(torch.get_rng_state(), before)


def test_the_cpu_keeps_the_default_chunk(trained_run):
    run = runs.load_run(trained_run, device="cpu")
    x = torch.from_numpy(run.data.test_binary[:1]).to(run.device)[0]
    assert nll.device_chunk(run.model, x, 5000) == (2500, "default")


# --- the GPU resource of the rules -----------------------------------------------------------------------

MODEL_RULES = {"train", "nll", "knn", "augment", "model_figure", "unconditional_samples", "cyclic_generation"}


def test_rules_that_run_a_model_ask_for_a_gpu_when_their_device_is_cuda(tmp_path):
    from tests.test_pipeline import make_workdir, snakemake

    workdir = make_workdir(tmp_path / "w")
    (workdir / "cuda.yaml").write_text("train:\n  device: cuda\n")
    plan = snakemake(workdir, "-n", "--configfile", "config/smoke.yaml", "cuda.yaml").stdout
    gpus = {}
    for block in plan.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0].strip()
        found = re.search(r"resources: .*", block)
        gpus.setdefault(rule, set()).add(re.search(r"gpu=(\d)", found.group(0)).group(1) if found and "gpu=" in
                                         found.group(0) else None)
    assert {rule for rule, values in gpus.items() if values == {"1"}} == MODEL_RULES
    assert all(values == {None} for rule, values in gpus.items() if rule not in MODEL_RULES), gpus


# --- provenance: a dirty tree, and the data record --------------------------------------------------------


def test_git_state_names_the_modified_code_but_not_the_results(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "run.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    monkeypatch.setattr(provenance, "_ROOT", tmp_path)
    (tmp_path / "results" / "run.json").write_text('{"epoch": 2}\n')  # a run's output changes: the code does not
    clean = provenance.git_state()
    assert clean["modified"] == [] and clean["diff_sha256"] is None and not clean["commit"].endswith("+dirty")
    (tmp_path / "code.py").write_text("a = 2\n")
    dirty = provenance.git_state()
    assert dirty["commit"] == clean["commit"] + "+dirty" and dirty["modified"] == ["code.py"]
    assert re.fullmatch(r"[0-9a-f]{16}", dirty["diff_sha256"])
    (tmp_path / "code.py").write_text("a = 3\n")
    assert provenance.git_state()["diff_sha256"] != dirty["diff_sha256"]  # another uncommitted state


def test_prepare_data_records_the_checksum_of_what_it_writes(tmp_path):
    out = tmp_path / "data" / "mnist_subset.json"
    smk = SimpleNamespace(wildcards=SimpleNamespace(dataset="mnist_subset"), output=[str(out)], log=[],
                          threads=1, rule="prepare_data")
    runpy.run_path(str(REPO / "workflow" / "scripts" / "prepare_data.py"), init_globals={"snakemake": smk})
    assert checksums.read_json(out)["name"] == "mnist_subset"
