"""Each local job its own GPU (evae.gpu_claim), checked on the CPU: real processes claim GPUs through real locks,
in a lock directory of the test's own, and torch is told it sees GPUs that are only names. On GPUs:
tests/test_cuda.py::test_jobs_running_at_once_compute_on_different_gpus."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evae import gpu_claim, provenance
from tests.conftest import REPO

# a process that claims one of the GPUs named on its command line, prints its index and slot, and holds the claim
# until its stdin is closed (or it is killed)
CLAIM = """
import sys
from pathlib import Path
from evae.gpu_claim import claim
print(*claim(sys.argv[2:], Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""
# a model job's first step on a machine whose torch sees argv[1] GPUs named GPU-0, GPU-1, ...: the device it picks
# for device argv[2]; it holds its claim until its stdin is closed (or it is killed)
JOB = """
import logging, sys, types
import torch
from evae import provenance
logging.basicConfig(level=logging.INFO)
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: int(sys.argv[1])
torch.cuda.get_device_properties = lambda i: types.SimpleNamespace(uuid=f"GPU-{i}")
torch.cuda.get_device_name = lambda device=None: "Fake GPU"
torch.cuda.set_device = lambda i: None
provenance.cuda_numerics = lambda: None
print(provenance.pick_device(sys.argv[2]), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def start(tmp_path):
    """Start processes running ``CLAIM`` or ``JOB`` (their temporary directory, hence their lock directory, the
    test's own); kill what is left of them at the end."""
    procs = []
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": path}

    def start(script: str, *args: str, n: int = 1) -> list[subprocess.Popen]:
        new = [subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
        procs.extend(new)
        return new

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()


def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / gpu_claim.LOCK_DIR.name  # where the processes started with TMPDIR=tmp_path lock


def first_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().strip()
    assert line, proc.communicate()[1]
    return line


def test_jobs_started_together_compute_on_different_gpus_each_freed_when_its_job_ends(start):
    jobs = start(JOB, "3", "auto", n=3)
    devices = {first_line(job): job for job in jobs}
    assert sorted(devices) == ["cuda:0", "cuda:1", "cuda:2"]
    _, log = devices["cuda:0"].communicate("")  # ends normally
    assert "claimed cuda:0 (GPU GPU-0), one of 3 visible GPUs, for this job" in log
    devices["cuda:2"].kill()  # SIGKILL: nothing of the process runs after it
    devices["cuda:2"].wait()
    assert sorted(first_line(job) for job in start(JOB, "3", "cuda", n=2)) == ["cuda:0", "cuda:2"]


def test_more_jobs_than_gpus_share_them_evenly_without_waiting(start, tmp_path):
    """Four holders on two GPUs take slots 0 and 1 of each, whatever order they start in; a fifth job shares the
    first GPU and says so."""
    gpus = ["GPU-0", "GPU-1"]
    holders = start(CLAIM, str(lock_dir(tmp_path)), *gpus, n=4)
    assert sorted(first_line(p) for p in holders) == ["0 0", "0 1", "1 0", "1 1"]
    job = start(JOB, "2", "auto")[0]
    assert first_line(job) == "cuda:0"
    _, log = job.communicate("")
    assert "every one of the 2 visible GPUs already has a job of this user: this one shares cuda:0 (GPU GPU-0) with " \
           "at least 2 other(s)" in log


@pytest.fixture
def gpus(monkeypatch, tmp_path):
    """This process's torch sees the GPUs it is told to (``gpus(n)``), with no claim yet; lock files go to
    tmp_path/locks. Returns the devices torch.cuda.set_device was given."""
    set_to = []
    monkeypatch.setattr(gpu_claim, "LOCK_DIR", tmp_path / "locks")
    monkeypatch.setattr(gpu_claim, "_claimed", None)
    monkeypatch.setattr(provenance, "cuda_numerics", lambda: None)  # process-wide settings: not this test's subject
    for name, value in {"is_available": lambda: True, "current_device": lambda: 0, "set_device": set_to.append,
                        "get_device_name": lambda device=None: "Fake GPU",
                        "get_device_properties": lambda i: SimpleNamespace(uuid=f"GPU-{i}")}.items():
        monkeypatch.setattr(torch.cuda, name, value)

    def see(n: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        return set_to

    return see


def test_an_explicit_index_or_a_single_gpu_claims_nothing(gpus, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    set_to = gpus(4)
    assert provenance.pick_device("cuda:2") == torch.device("cuda", 2)
    gpus(1)
    assert provenance.pick_device("auto") == provenance.pick_device("cuda") == torch.device("cuda", 0)
    assert not (tmp_path / "locks").exists() and set_to == [] and "claimed" not in caplog.text


def test_a_process_claims_once_and_keeps_its_gpu(gpus, tmp_path, caplog, start):
    """The claim is held by this test process until it exits (in a lock directory of the test's own)."""
    caplog.set_level(logging.INFO)
    holder = start(CLAIM, str(tmp_path / "locks"), "GPU-0", "GPU-1")[0]
    assert first_line(holder) == "0 0"
    set_to = gpus(2)
    assert provenance.pick_device("auto") == provenance.pick_device("cuda") == torch.device("cuda", 1)
    assert set_to == [1] and caplog.text.count("claimed cuda:1 (GPU GPU-1)") == 1
    assert "device cuda:1: Fake GPU (auto requested" in caplog.text


def test_gpus_are_named_by_uuid_else_by_their_visible_devices_entry(gpus, monkeypatch):
    gpus(2)
    assert gpu_claim.gpu_names() == ["GPU-0", "GPU-1"]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace())  # a torch without uuid
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,MIG-GPU-5/1/0")
    assert gpu_claim.gpu_names() == ["3", "MIG-GPU-5_1_0"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_claim.gpu_names() == ["0", "1"]


def test_local_runs_start_one_gpu_job_per_visible_gpu_unless_told(tmp_path):
    """The Snakefile's default of ``--resources gpu``, with torch made to see four GPUs where Snakemake plans."""
    from tests.test_pipeline import env, make_workdir, SNAKEMAKE

    workdir = make_workdir(tmp_path / "w")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import torch\ntorch.cuda.device_count = lambda: 4\n")
    four_gpus = {**env(), "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])}
    target = "results/smoke/data/mnist_subset.json"

    def provided(*args: str) -> int:
        """The gpu resource Snakemake says it provides (it writes gpu=Resource("gpu", 4), or gpu=4)."""
        # the target first: --configfile, --forcerun and --resources take every word after them
        proc = subprocess.run([SNAKEMAKE, target, "--cores", "1", "--forcerun", "prepare_data", "--configfile",
                               "config/smoke.yaml", *args], cwd=workdir, env=four_gpus, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return int(re.search(r"^Provided resources:.*\bgpu=\D*(\d+)", proc.stderr, flags=re.M).group(1))

    assert provided() == 4
    assert provided("--resources", "gpu=2") == 2
