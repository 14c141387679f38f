"""The benchmarks name their host and its GEMM rate, and give host-independent figures (known answers, tiny runs)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from evae import provenance
from tests.conftest import REPO

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks are scripts that import host.py from beside them
import host  # noqa: E402
import nll  # noqa: E402


def test_gemm_rate_counts_two_n_cubed_flops_over_the_best_time(monkeypatch):
    clock = itertools.count(step=0.5)  # every timed product "takes" 0.5 s
    monkeypatch.setattr(provenance.time, "perf_counter", lambda: next(clock))
    assert provenance.gemm_gflops(1, n=64, repeats=3) == pytest.approx(2 * 64**3 / 0.5 / 1e9)


def test_description_names_the_cpu_its_isa_and_each_gemm_rate():
    machine = {"model": "Some CPU", "cores": 2, "isa": ["avx2", "avx512f"], "torch_kernels": "AVX512",
               "gemm": {"n": 2048, "repeats": 5, "gflops": {1: 101.25, 2: 190.0}}}
    assert host.describe(machine) == (
        "host: Some CPU, 2 cores, ISA avx2 avx512f (torch kernels: AVX512)\n"
        "fp32 GEMM (2048x2048 torch.mm, best of 5): 1 thread 101.2, 2 threads 190.0 GFLOP/s"
    )


def test_host_measures_one_thread_all_cores_and_the_counts_asked_for():
    machine = host.host(threads=(3,), n=64, repeats=1)
    assert set(machine["gemm"]["gflops"]) == {1, 3, host.all_cores()}
    assert all(rate > 0 for rate in machine["gemm"]["gflops"].values())
    assert machine["model"] and machine["cores"] >= 1 and isinstance(machine["isa"], list)


def test_nll_rows_in_host_independent_terms():
    rows = [
        {"what": "vampprior", "path": "one-level fast path", "threads": 1, "images_per_second": 10.0},
        {"what": "gaussian", "path": "one-level fast path", "threads": 1, "images_per_second": 20.0},
        {"what": "exemplar log-prior", "path": "exact", "threads": 1, "images_per_second": 4.0},
        {"what": "gaussian", "path": "one-level fast path", "threads": 2, "images_per_second": 40.0},
    ]
    nll.host_independent(rows, {"gemm": {"gflops": {1: 100.0, 2: 200.0}}}, exact_gflop=10.0)
    assert [(r["x_gaussian"], r["gemm_gflop_per_image"], r["gemm_fraction"]) for r in rows] == [
        (2.0, 10.0, None), (1.0, 5.0, None), (5.0, 25.0, 0.4), (1.0, 5.0, None)
    ]


def test_train_epoch_output_starts_with_the_host_and_ends_with_host_independent_columns():
    args = ["--quick", "--archs", "vae", "--priors", "gaussian,exemplar:knn"]
    out = subprocess.run([sys.executable, str(BENCHMARKS / "train_epoch.py"), *args], capture_output=True, text=True,
                         timeout=600, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("host: ") and " cores, ISA " in lines[0]
    assert lines[1].startswith("fp32 GEMM (1024x1024 torch.mm") and lines[1].endswith(" GFLOP/s")
    table = lines[lines.index(next(line for line in lines if line.startswith("arch "))):]
    assert "x gauss" in table[0] and "GEMM-GF" in table[0]
    gaussian, knn = (line.split() for line in table[2:4])  # columns 6-11: steps, refresh, val, epoch s, x gauss, GEMM-GF
    assert gaussian[:4] == ["vae", "gaussian", "-", "init"] and knn[:4] == ["vae", "exemplar", "knn", "init"]
    for row in (gaussian, knn):  # the epoch is its three parts (all four printed to 0.01 s)
        assert float(row[9]) == pytest.approx(sum(float(row[i]) for i in (6, 7, 8)), abs=0.021)
    # x gauss is the epoch over the Gaussian epoch (no timing is asserted, only how the columns relate)
    assert float(gaussian[10]) == 1.0
    epoch, gauss_epoch = float(knn[9]), float(gaussian[9])
    slack = 0.005 + epoch / gauss_epoch * (0.005 / epoch + 0.005 / gauss_epoch)  # all three printed to 0.01
    assert abs(float(knn[10]) - epoch / gauss_epoch) <= slack
    # images the prior encodes per step: none for the Gaussian prior; for kNN (k = 10, batch 100) the distinct
    # retrieved neighbours, at least the k + 1 of one point and at most all 100 x (k + 1)
    assert float(gaussian[14]) == 0 and 11 <= float(knn[14]) <= 1100
    rate = float(lines[1].split("1 thread ")[1].split(" ")[0].rstrip(","))
    for row in (gaussian, knn):  # GEMM-GF = epoch seconds x the one-thread GEMM rate, both as printed
        rounding = 0.005 * rate + 0.5  # epoch seconds are printed to 0.01 s, GEMM-GF to whole GFLOP
        assert float(row[11]) == pytest.approx(float(row[9]) * rate, rel=0.01, abs=rounding)
    # the matrix products of the MLP VAE's Gaussian step, counted: 3 x 2 x batch x (784 x 600 + 300 x 600 + 300 x 80
    # + 40 x 600 + 300 x 600 + 300 x 784) less the first layer's input gradient, 2 x batch x 784 x 600
    macs = 784 * 600 + 300 * 600 + 300 * 80 + 40 * 600 + 300 * 600 + 300 * 784
    assert float(gaussian[12]) == pytest.approx((6 * macs - 2 * 784 * 600) * 100 / 1e9, abs=5e-4)
    assert any(line.startswith("where a vae Gaussian-prior step goes") for line in lines)
