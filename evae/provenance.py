"""Where a number came from: code version, libraries, machine. Stored with every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy
import torch

import evae

_ROOT = Path(evae.__file__).resolve().parent.parent


def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


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

    return {
        "git_commit": git_commit(),
        "evae": evae.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "faiss": faiss.__version__,
        "platform": platform.platform(),
        "host": platform.node(),
        "cpu": cpu(),
        "device": str(device) if device is not None else None,
        "torch_threads": torch.get_num_threads(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU; use device: auto or cpu")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Threads for torch and faiss (1 by default: run jobs side by side instead)."""
    import faiss

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
