"""Seconds per training epoch for every architecture x prior (x exemplar mode), on 1 and 2 torch threads.

    python benchmarks/train_epoch.py            # MNIST-sized: 50,000 training / 10,000 validation images
    python benchmarks/train_epoch.py --quick    # 2,000 / 200 images, 3 timed steps, 1 thread: about a minute

An epoch is split into its training steps and the per-epoch work after them (prior refresh: the
exemplar cache and kNN index; validation: negative ELBO over the validation set with the
evaluation prior). Steps are timed over ``--steps`` minibatches after one untimed warm-up step, in five
windows of which the fastest counts, and extrapolated to the whole epoch (``--steps 0`` times the whole
epoch); exact exemplar mode (M = N/2 exemplars encoded with gradients at every step) is always
extrapolated from ``--exact-steps`` steps. Refresh and validation run twice, the faster counting: the
speed of a shared virtual host drifts by 1.5x within minutes, and bursts of other load only slow a run
down. The table says which figures are extrapolated. Data: real MNIST from the dataset mirror
(``EVAE_DATA_MIRROR`` or ../shared/data) if present, otherwise synthetic gray images of that size.

Where a run starts matters for the exemplar modes: from initialisation the retrieved neighbours of a
minibatch overlap far more than in a trained latent space. So the MLP VAE's exemplar modes are timed a
second time from the weights of the committed MNIST exemplar run (``--trained``; start "trained"), and
every row says how many images its prior has the encoder encode in a step ("enc/step": the VampPrior's
pseudo-inputs, the distinct retrieved neighbours, the distinct exemplars of exact mode). "GF/step" is the
matrix-product work of a step, forward and backward (``torch.utils.flop_counter``), and "% GEMM" the rate
the steps reach in those terms as a share of the host's GEMM rate.

After the table, a profile of the MLP VAE's Gaussian-prior step says where its time goes (binarisation,
forward, backward, optimiser; the matrix products' own time from the torch profiler); ``--compile`` also
times ``torch.compile`` of the loss and says after how many epochs its start-up cost is paid back.

The output starts with the host (CPU model, cores, ISA flags) and its float32 GEMM rate measured in the
same run (benchmarks/host.py); besides seconds, every epoch is given in host-independent terms: as a
multiple of the Gaussian-prior epoch of the same model and threads, and in GEMM-GFLOP (seconds x the
GEMM GFLOP/s on the same threads: divide by your machine's rate to predict its seconds).

Targets (issue "Training and evaluation speed near what this CPU can do", one thread): MLP VAE
Gaussian-prior step at >= 75 % of the GEMM rate; VampPrior epoch <= 3x and exemplar kNN epoch <= 3.5x
the Gaussian epoch; exemplar validation <= 1.5x the Gaussian validation.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from evae.config import TrainConfig
from evae.data import dynamic_binarize
from evae.io import write_json
from evae.models import build_model
from evae.provenance import environment, gemm_gflops, set_threads
from evae.train.optim import make_optimizer
from evae.train.loop import evaluate_elbo, train_epoch
from host import describe, host

REPO = Path(__file__).resolve().parent.parent
PRIORS = (("gaussian", "-"), ("vampprior", "-"), ("exemplar", "knn"), ("exemplar", "exact"))
ARCHS = ("vae", "hvae", "convhvae")
TRAINED_RUN = REPO / "results" / "reduced" / "runs" / "mnist" / "vae" / "exemplar" / "seed0"
PHASES = ("binarisation", "forward", "backward", "optimiser")
MATRIX_PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward"}
BATCH = 100
WINDOWS = 5  # timed steps run in this many windows and the fastest counts: this kind of host drifts within minutes


def load_images(n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Gray training images and binarised validation images: real MNIST when a mirror has it, else synthetic."""
    mirror = REPO.parent / "shared" / "data"
    if "EVAE_DATA_MIRROR" not in os.environ and mirror.is_dir():
        os.environ["EVAE_DATA_MIRROR"] = str(mirror)
    try:
        from evae.data import load_dataset

        data = load_dataset("mnist", download=False)
        return data.train[:n_train], data.val_binary[:n_val], "real MNIST (mirror)"
    except Exception as err:  # no mirror, no cache: same-sized stand-in
        print(f"MNIST not available ({err}); using synthetic images", file=sys.stderr)
        rng = np.random.default_rng(0)
        train = (rng.random((n_train, 784), dtype=np.float32) ** 4).astype(np.float32)
        val = (rng.random((n_val, 784), dtype=np.float32) < 0.13).astype(np.float32)
        return train, val, "synthetic (MNIST not found)"


def trained_weights(run_dir: Path) -> dict:
    """The best weights of a trained MLP VAE exemplar run (checksums verified)."""
    from evae.runs import load_run

    run = load_run(run_dir, device="cpu")
    if run.cfg.architecture != "vae" or run.cfg.prior != "exemplar":
        raise SystemExit(f"--trained needs an MLP VAE exemplar-prior run; {run_dir} is "
                         f"{run.cfg.architecture}/{run.cfg.prior}")
    return run.model.state_dict()


class CountingPrior:
    """Stands in for ``prior.log_prob`` and counts the images the prior has the encoder encode (pseudo-inputs,
    retrieved neighbours, exemplars)."""

    def __init__(self, log_prob):
        self.log_prob, self.images = log_prob, 0

    def __call__(self, z, encoder, index=None):
        def counted(x):
            self.images += len(x)
            return encoder(x)

        return self.log_prob(z, counted, index=index)


def fresh(cfg: TrainConfig, train_x, weights: dict | None = None):
    """A model (initialised, or with ``weights``) and its optimiser, the prior refreshed as before a first epoch."""
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, train_x)
    if weights is not None:
        model.load_state_dict(weights)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    model.eval()
    model.prior.refresh(model.encode)
    return model, optimizer


def measure(cfg: TrainConfig, train_x, val_x, steps: int | None, weights: dict | None = None) -> dict:
    """Time ``steps`` training steps (None: a whole epoch) in ``WINDOWS`` windows, and the per-epoch refresh and
    validation twice; the fastest counts. Count the matrix-product FLOPs of a step and the images its prior encodes."""
    model, optimizer = fresh(cfg, train_x, weights)
    shuffle = torch.Generator().manual_seed(1)
    steps_per_epoch = -(-len(train_x) // cfg.batch_size)
    n_timed = steps_per_epoch if steps is None else min(steps, steps_per_epoch)
    train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, shuffle, 1, max_steps=1)  # warm-up
    model.prior.log_prob = counter = CountingPrior(model.prior.log_prob)
    step_seconds, done = math.inf, 0
    while done < n_timed:
        n = min(max(1, n_timed // WINDOWS), n_timed - done)
        t0 = time.perf_counter()
        timed = train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, shuffle, 1, max_steps=n)
        step_seconds, done = min(step_seconds, (time.perf_counter() - t0) / n), done + n
        assert np.isfinite(timed["loss"])
    del model.prior.log_prob
    flop_steps = 2  # right after the timed ones (the neighbours' overlap drifts early in training)
    with FlopCounterMode(display=False) as flops:
        train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, shuffle, 1, max_steps=flop_steps)
    model.eval()
    refresh_seconds = val_seconds = math.inf
    with torch.no_grad():
        for _ in range(2):
            t1 = time.perf_counter()
            model.prior.refresh(model.encode)
            t2 = time.perf_counter()
            evaluate_elbo(model, val_x, cfg.eval_batch_size)
            refresh_seconds, val_seconds = min(refresh_seconds, t2 - t1), min(val_seconds, time.perf_counter() - t2)
    return {
        "timed_steps": n_timed,
        "step_seconds": step_seconds,
        "steps_seconds": step_seconds * steps_per_epoch,
        "extrapolated": n_timed < steps_per_epoch,
        "refresh_seconds": refresh_seconds,
        "val_seconds": val_seconds,
        "step_gflop": flops.get_total_flops() / flop_steps / 1e9,
        "encoded_per_step": counter.images / n_timed,
    }


def step_profile(cfg: TrainConfig, train_x, steps: int) -> dict:
    """Milliseconds per training step in binarisation, forward, backward and optimiser (wall clock, the median
    over unprofiled steps), and the matrix products' own time within forward and backward (torch profiler, the
    mean over further steps)."""
    model, optimizer = fresh(cfg, train_x)
    model.train()
    g = torch.Generator().manual_seed(2)

    def step() -> tuple[float, ...]:
        index = torch.randint(len(train_x), (cfg.batch_size,), generator=g)
        t0 = time.perf_counter()
        x = dynamic_binarize(train_x[index], g)
        t1 = time.perf_counter()
        loss, _ = model.loss(x, index=index, beta=0.5)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3

    for _ in range(5):
        step()
    phases = np.median([step() for _ in range(steps)], axis=0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    matmul_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATRIX_PRODUCTS)
    return {**{name: 1e3 * float(t) for name, t in zip(PHASES, phases)}, "matrix_products": matmul_us / 1e3 / steps}


def compile_probe(cfg: TrainConfig, train_x, steps: int) -> dict:
    """``torch.compile`` of the loss: seconds of the first (compiling) step, then milliseconds per step."""
    model, optimizer = fresh(cfg, train_x)
    model.loss = torch.compile(model.loss)
    t0 = time.perf_counter()
    train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, torch.Generator().manual_seed(1), 1, max_steps=1)
    first = time.perf_counter() - t0
    shuffle = torch.Generator().manual_seed(2)
    train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, shuffle, 1, max_steps=3)
    t1 = time.perf_counter()
    train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, shuffle, 1, max_steps=steps)
    return {"first_step_seconds": first, "step_ms": 1e3 * (time.perf_counter() - t1) / steps}


def print_profile(profile: dict, row: dict, gemm: float, threads: int, compiled: dict | None, steps_per_epoch: int):
    step_ms, mm, gflop = sum(profile[k] for k in PHASES), profile["matrix_products"], row["step_gflop"]
    mm_share, step_share = gflop / mm * 1e3 / gemm, gflop / step_ms * 1e3 / gemm  # rates as shares of the GEMM rate
    print(f"\nwhere a vae Gaussian-prior step goes ({threads} thread; GEMM rate measured again now: {gemm:.0f} "
          f"GFLOP/s): {step_ms:.2f} ms = binarisation "
          f"{profile['binarisation']:.2f} + forward {profile['forward']:.2f} + backward {profile['backward']:.2f} "
          f"+ optimiser {profile['optimiser']:.2f}")
    print(f"  matrix products (forward and backward, torch profiler): {mm:.2f} ms for {gflop:.3f} GFLOP, "
          f"{mm_share * gemm:.0f} GFLOP/s = {mm_share:.0%} of the {gemm:.0f} GFLOP/s GEMM rate")
    print(f"  the rest: {step_ms - mm:.2f} ms: the optimiser's {profile['optimiser']:.2f} (per-tensor norms and "
          "division, fused Adam: memory-bound passes over 1.1M parameters and their two moments), binarisation, and "
          "the elementwise work of gated layers, log-densities and autograd")
    print(f"  the step: {step_share * gemm:.0f} GFLOP/s = {step_share:.0%} of the GEMM rate "
          f"(target >= 75 %: {'met' if step_share >= 0.75 else 'NOT met'}); with no other work at all it would run at "
          f"its matrix products' own {mm_share:.0%}: batch-100 products are smaller than the rate's 2048 x 2048 ones")
    if compiled is not None:
        gain = step_ms - compiled["step_ms"]
        verdict = (f"pays back after {compiled['first_step_seconds'] / (gain * steps_per_epoch / 1e3):.1f} epochs"
                   if gain > 0 else "never pays back (no faster per step)")
        print(f"  torch.compile(model.loss): first step {compiled['first_step_seconds']:.1f} s (compiling, or reading "
              f"torch's compile cache), then "
              f"{compiled['step_ms']:.2f} ms a step against {step_ms:.2f} eager: {verdict}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 / 200 images, 3 timed steps, 1 thread (about a minute)")
    p.add_argument("--train-images", type=int, default=50_000)
    p.add_argument("--val-images", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=100, help="timed training steps per configuration (0: whole epoch)")
    p.add_argument("--exact-steps", type=int, default=5,
                   help="timed steps in exact exemplar mode (always extrapolated)")
    p.add_argument("--threads", help="comma-separated torch thread counts (default 1,2; 1 with --quick)")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--priors", default=",".join(f"{a}:{b}" if b != "-" else a for a, b in PRIORS),
                   help="comma-separated: gaussian, vampprior, exemplar:knn, exemplar:exact")
    p.add_argument("--trained", default=str(TRAINED_RUN),
                   help="trained MLP VAE exemplar run whose weights the vae exemplar rows also start from ('' : none)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the vae Gaussian-prior loss")
    p.add_argument("--json", help="also write the results (with provenance) to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.train_images, args.val_images, args.steps, args.exact_steps = 2_000, 200, 3, 2
    threads = [int(t) for t in (args.threads or ("1" if args.quick else "1,2")).split(",")]
    priors = [tuple(s.split(":")) if ":" in s else (s, "-") for s in args.priors.split(",")]

    machine = host(tuple(threads), n=1024 if args.quick else 2048)
    print(describe(machine), flush=True)
    train_np, val_np, source = load_images(args.train_images, args.val_images)
    train_x, val_x = torch.from_numpy(train_np), torch.from_numpy(val_np)
    print(f"data: {source}, {len(train_x)} training / {len(val_x)} validation images; batch {BATCH}; "
          f"exact mode M = N/2 = {len(train_x) // 2}", flush=True)
    weights = None
    if args.trained and "vae" in args.archs.split(",") and any(p == "exemplar" for p, _ in priors):
        if source.startswith("real") and Path(args.trained).is_dir():
            weights = trained_weights(Path(args.trained))
            print(f"trained start: the weights of {args.trained}", flush=True)
        else:
            print(f"no trained start: needs real MNIST and the run {args.trained}", file=sys.stderr)

    rows = []
    started = time.perf_counter()
    for arch in args.archs.split(","):
        for prior, mode in priors:
            trained = (arch, prior) == ("vae", "exemplar") and weights is not None
            starts = ["init", "trained"] if trained else ["init"]
            for start in starts:
                for t in threads:
                    cfg = TrainConfig(architecture=arch, prior=prior, exemplar_mode="exact" if mode == "-" else mode,
                                      threads=t, device="cpu")
                    steps = args.exact_steps if mode == "exact" else (args.steps or None)
                    r = {"arch": arch, "prior": prior, "mode": mode, "start": start, "threads": t,
                         **measure(cfg, train_x, val_x, steps, weights if start == "trained" else None)}
                    r["epoch_seconds"] = r["steps_seconds"] + r["refresh_seconds"] + r["val_seconds"]
                    r["epoch_gemm_gflop"] = r["epoch_seconds"] * machine["gemm"]["gflops"][t]
                    r["gemm_share"] = r["step_gflop"] / r["step_seconds"] / machine["gemm"]["gflops"][t]
                    rows.append(r)
                    print(f"  measured {arch}/{prior}/{mode}/{start} threads={t}: epoch {r['epoch_seconds']:.1f} s "
                          f"[{time.perf_counter() - started:.0f} s elapsed]", file=sys.stderr, flush=True)

    base = {(r["arch"], r["threads"]): r for r in rows if r["prior"] == "gaussian"}
    header = (f"{'arch':9} {'prior':9} {'mode':5} {'start':7} {'thr':>3} {'s/step':>8} {'steps s':>9} {'refresh s':>9} "
              f"{'val s':>7} {'epoch s':>9} {'x gauss':>7} {'GEMM-GF':>8} {'GF/step':>8} {'% GEMM':>6} "
              f"{'enc/step':>8}  note")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        gauss = base.get((r["arch"], r["threads"]))
        r["ratio_to_gaussian"] = r["epoch_seconds"] / gauss["epoch_seconds"] if gauss else float("nan")
        r["val_ratio_to_gaussian"] = r["val_seconds"] / gauss["val_seconds"] if gauss else float("nan")
        note = f"extrapolated from {r['timed_steps']} steps" if r["extrapolated"] else "whole epoch timed"
        print(f"{r['arch']:9} {r['prior']:9} {r['mode']:5} {r['start']:7} {r['threads']:>3} {r['step_seconds']:8.4f} "
              f"{r['steps_seconds']:9.2f} {r['refresh_seconds']:9.2f} {r['val_seconds']:7.2f} "
              f"{r['epoch_seconds']:9.2f} {r['ratio_to_gaussian']:7.2f} {r['epoch_gemm_gflop']:8.0f} "
              f"{r['step_gflop']:8.3f} {r['gemm_share']:6.0%} {r['encoded_per_step']:8.0f}  {note}")
    print("x gauss: epoch / Gaussian-prior epoch of the same model and threads. GEMM-GF: epoch seconds x this "
          "host's fp32 GEMM GFLOP/s on the same threads (divide by your machine's rate to predict its seconds). "
          "GF/step: matrix-product GFLOP of a training step (forward and backward); % GEMM: the steps' rate in those "
          "terms as a share of the GEMM rate. enc/step: images the prior encodes per step.")

    print("\ntargets (one thread):")
    for r in rows:
        gauss = base.get((r["arch"], r["threads"]))
        if r["threads"] != min(threads) or r["prior"] == "gaussian" or r["mode"] == "exact" or gauss is None:
            continue
        limit = {"vampprior": 3.0, "exemplar": 3.5}[r["prior"]]
        work = r["step_gflop"] / gauss["step_gflop"]
        print(f"  {r['arch']} {r['prior']} {r['mode']} ({r['start']}) epoch / Gaussian epoch: "
              f"{r['ratio_to_gaussian']:.2f} "
              f"(target <= {limit}: {'met' if r['ratio_to_gaussian'] <= limit else 'NOT met'}; its step does "
              f"{work:.1f}x the Gaussian step's matrix products)")
        if r["prior"] == "exemplar":
            print(f"  {r['arch']} exemplar ({r['start']}) validation / Gaussian validation: "
                  f"{r['val_ratio_to_gaussian']:.2f} "
                  f"(target <= 1.5: {'met' if r['val_ratio_to_gaussian'] <= 1.5 else 'NOT met'})")

    profile = compiled = None
    if "vae" in args.archs.split(",") and ("vae", min(threads)) in base:
        cfg = TrainConfig(architecture="vae", prior="gaussian", threads=min(threads), device="cpu")
        profile = step_profile(cfg, train_x, 10 if args.quick else 100)
        profile["gemm_gflops"] = gemm_gflops(min(threads), n=1024 if args.quick else 2048)  # the host's rate drifts
        compiled = compile_probe(cfg, train_x, 10 if args.quick else 100) if args.compile else None
        print_profile(profile, base[("vae", min(threads))], profile["gemm_gflops"], min(threads),
                      compiled, -(-len(train_x) // BATCH))
    if args.quick:
        print("QUICK MODE: fewer images and steps than the real benchmark; the figures only show that it runs.")
    if args.json:
        write_json(args.json, {"rows": rows, "data": source, "args": vars(args), "host": machine,
                               "step_profile": profile, "compile": compiled, "environment": environment("cpu")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
