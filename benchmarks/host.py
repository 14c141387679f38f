"""The machine a benchmark ran on and its float32 matrix-multiply (GEMM) rate, measured in the same run.

    python benchmarks/host.py            # print the header every benchmark starts with

A speed figure from one machine says little about another (hosts of one kind differ 2-3x by their
vector extensions alone). Divided by the GEMM rate measured in the same run, or by the Gaussian-prior
figure of the same run, it carries over: on your machine, expect (GEMM-GFLOP of a figure) / (your
GEMM GFLOP/s) seconds.
"""

from __future__ import annotations

import os

import torch

from evae.provenance import cpu, gemm_gflops


def all_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def host(threads: tuple[int, ...] = (), n: int = 2048, repeats: int = 5) -> dict:
    """CPU model, cores, ISA flags, torch's kernel level, and the GEMM rate on 1 thread, on all cores and
    on each of ``threads`` (the thread counts a benchmark uses)."""
    counts = sorted({1, all_cores(), *threads})
    return {
        **cpu(),
        "torch_kernels": torch.backends.cpu.get_cpu_capability(),
        "gemm": {"n": n, "repeats": repeats, "gflops": {t: gemm_gflops(t, n, repeats) for t in counts}},
    }


def describe(h: dict) -> str:
    """Two lines naming the host and its GEMM rates, for the top of a benchmark's output."""
    rates = ", ".join(f"{t} thread{'s' if t > 1 else ''} {g:.1f}" for t, g in h["gemm"]["gflops"].items())
    return (f"host: {h['model']}, {h['cores']} cores, ISA {' '.join(h['isa']) or 'none of avx2/avx512f/amx'} "
            f"(torch kernels: {h['torch_kernels']})\n"
            f"fp32 GEMM ({h['gemm']['n']}x{h['gemm']['n']} torch.mm, best of {h['gemm']['repeats']}): {rates} GFLOP/s")


if __name__ == "__main__":
    print(describe(host()))
