"""Where a number came from: code version, libraries, machine, device and its numerics. Stored with every
result.

The device every job computes on is chosen by ``pick_device``, which logs it (the GPU's name, or the
CPU's model) when the job starts; on a machine with several GPUs each job claims one of its own
(``evae.gpu_claim``). On CUDA it sets the numerics of every job here (``cuda_numerics``):

* deterministic algorithms (``torch.use_deterministic_algorithms(True, warn_only=True)``), with the cuBLAS
  workspace they need (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set before the first CUDA matrix product) and
  cuDNN's benchmark mode off, so that a run resumed on the same kind of GPU ends bit-identical to an
  uninterrupted one. ``warn_only``: an operation without a deterministic CUDA kernel warns in the job's log
  rather than stopping a run hours in;
* TF32 off for matrix products and convolutions (``fp32_precision = "ieee"``): float32 means float32 on
  every GPU generation, as on the CPU.

Always on, for every profile, rather than a config key: the point of the project is numbers that can be
reproduced, and a key would enter the config digests of runs already made. On the CPU nothing is changed
(the CPU kernels used here are deterministic for a given thread count; switching torch's deterministic mode
on there would reroute some of them and move the numbers of runs in progress). ``environment()`` records
the settings in force, on the CPU as well.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy
import torch

import evae
from evae.config import ConfigError
from evae.gpu_claim import claimed_gpu

log = logging.getLogger(__name__)

_ROOT = Path(evae.__file__).resolve().parent.parent
# What the code's state is about: the checkout less the pipeline's outputs, which runs change as they go
_NOT_CODE = ":(exclude)results"
CUBLAS_WORKSPACE = ":4096:8"  # the cuBLAS workspace that makes its products deterministic (CUDA >= 10.2)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, check=True, timeout=10).stdout


def git_state() -> dict:
    """The checkout's commit and what differs from it.

    ``commit``: the commit, with ``+dirty`` when tracked files outside ``results/`` differ from it
    (``unknown`` outside git); ``modified``: those files' paths; ``diff_sha256``: the first 16 hex digits
    of the SHA-256 of their binary diff against the commit (staged and unstaged), which tells two
    dirty states apart. ``results/`` is left out: the pipeline's outputs change as runs go, the code
    that makes them does not.
    """
    try:
        commit = _git("rev-parse", "HEAD").strip()
        modified = _git("diff", "HEAD", "--name-only", "--", ".", _NOT_CODE).split()
        diff = _git("diff", "HEAD", "--binary", "--", ".", _NOT_CODE) if modified else ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "modified": [], "diff_sha256": None}
    return {
        "commit": commit + ("+dirty" if modified else ""),
        "modified": modified,
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if modified else None,
    }


def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files (outside ``results/``) differ from it;
    ``unknown`` outside git."""
    return git_state()["commit"]


def cpu() -> dict:
    """The CPU a number was measured on: model, logical cores, and the vector extensions that set the speed
    of float32 matrix products (hosts of one kind differ 2-3x by them)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:  # not Linux: the model from platform, no flags
        pass
    return {"model": model, "cores": os.cpu_count(), "isa": sorted(flags & {"avx2", "avx512f", "amx_tile"})}


def gemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 GFLOP/s of an n x n by n x n ``torch.mm`` on ``threads`` torch threads
    (2 n^3 floating-point operations a product); torch's thread count is restored afterwards. It draws
    from its own generator, so the global RNG is untouched."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


def environment(device: torch.device | str | None = None) -> dict:
    import faiss

    git = git_state()
    return {
        "git_commit": git["commit"],
        "git_modified": git["modified"],
        "git_diff_sha256": git["diff_sha256"],
        "evae": evae.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "faiss": faiss.__version__,
        "platform": platform.platform(),
        "host": platform.node(),
        "cpu": cpu(),
        "device": str(device) if device is not None else None,
        "device_name": device_name(device) if device is not None else None,
        "cuda": torch.version.cuda,
        "numerics": numerics(),
        "torch_threads": torch.get_num_threads(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def numerics() -> dict:
    """The settings that decide how results round on a GPU (see the module's docstring); on the CPU they are
    recorded as they stand and act on nothing."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "fp32_precision": {"cuda_matmul": torch.backends.cuda.matmul.fp32_precision,
                           "cudnn_conv": torch.backends.cudnn.conv.fp32_precision},
    }


def cuda_numerics() -> None:
    """Deterministic algorithms and TF32 off for every CUDA computation of this process (module docstring).

    Call it before the first CUDA matrix product: cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when it creates
    its handle. A value the user set is kept (torch warns at the first product if it is not deterministic).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    # the fp32_precision settings, not the legacy allow_tf32 flags: torch refuses to read a mix of the two
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"


def uses_cuda(name: str) -> bool:
    """Whether a job given device ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) computes on a GPU here."""
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """The device a job computes on, logged with its name: ``auto`` is CUDA when torch sees a GPU, else the
    CPU. ``cuda`` (and ``auto`` on CUDA) means the current CUDA device, or where torch sees several GPUs the
    one this process claimed, so that jobs running at once compute on different GPUs (``evae.gpu_claim``);
    ``cuda:N`` means device N, unclaimed. Choosing CUDA sets ``cuda_numerics``.

    With ``auto`` on a machine that has an NVIDIA GPU torch cannot use (the CPU build of torch, or a driver
    too old for its CUDA), the job runs on the CPU and the log says why, with a warning.
    """
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise ConfigError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch sees no CUDA GPU: {_no_gpu_reason()}. Use device: "
                          "auto or cpu to run on the CPU")
    if uses_cuda(name):
        cuda_numerics()
        device = torch.device(name if name.startswith("cuda") else "cuda")
        device = torch.device("cuda", claimed_gpu() if device.index is None else device.index)
        log.info("device %s: %s (%s requested; torch %s, CUDA %s; deterministic algorithms, TF32 off)", device,
                 device_name(device), name, torch.__version__, torch.version.cuda)
        return device
    device = torch.device("cpu")
    log.info("device cpu: %s, %d torch thread(s) (%s requested; torch %s)", cpu()["model"], torch.get_num_threads(),
             name, torch.__version__)
    if name == "auto" and _nvidia_gpu_present():
        log.warning("this machine has an NVIDIA GPU, but the job runs on the CPU: %s", _no_gpu_reason())
    return device


def device_name(device: torch.device | str) -> str:
    """The GPU's name for a CUDA device, the CPU's model otherwise."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu()["model"]


def _nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver reports a GPU (whether or not this torch can use it)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or shutil.which("nvidia-smi") is not None


def _no_gpu_reason() -> str:
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is the CPU build; install its CUDA build from environment-cuda.yml, or "
                "with pip's --index-url for your CUDA version")
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no usable GPU; check "
            f"nvidia-smi, the driver's CUDA version, and CUDA_VISIBLE_DEVICES "
            f"({os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")


def set_threads(threads: int) -> None:
    """Threads for torch and faiss (1 by default: run jobs side by side instead)."""
    import faiss

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
