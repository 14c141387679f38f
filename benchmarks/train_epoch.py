"""Seconds per training epoch for every architecture x prior (x exemplar mode), on 1 and 2 torch threads.

    python benchmarks/train_epoch.py            # MNIST-sized: 50,000 training / 10,000 validation images
    python benchmarks/train_epoch.py --quick    # 2,000 / 200 images, 3 timed steps, 1 thread: about a minute

An epoch is split into its training steps and the per-epoch work after them (prior refresh: the
exemplar cache and kNN index; validation: negative ELBO over the validation set with the
evaluation prior). Steps are timed over ``--steps`` minibatches after one untimed warm-up step and
extrapolated to the whole epoch (``--steps 0`` times the whole epoch); exact exemplar mode (M = N/2
exemplars encoded with gradients at every step) is always extrapolated from ``--exact-steps`` steps.
The table says which figures are extrapolated. Data: real MNIST from the dataset mirror
(``EVAE_DATA_MIRROR`` or ../shared/data) if present, otherwise synthetic gray images of that size.

The output starts with the host (CPU model, cores, ISA flags) and its float32 GEMM rate measured in the
same run (benchmarks/host.py); besides seconds, every epoch is given in host-independent terms: as a
multiple of the Gaussian-prior epoch of the same model and threads, and in GEMM-GFLOP (seconds x the
GEMM GFLOP/s on the same threads: divide by your machine's rate to predict its seconds).

Targets (issue "Models, priors and a resumable trainer"): exemplar kNN-mode epoch <= 1.3x the
Gaussian-prior epoch of the same model; MLP VAE + Gaussian prior epoch on 50,000 images <= 7 s on
2 threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evae.config import TrainConfig
from evae.io import write_json
from evae.models import build_model
from evae.provenance import environment, set_threads
from evae.train.optim import make_optimizer
from evae.train.loop import evaluate_elbo, train_epoch
from host import describe, host

PRIORS = (("gaussian", "-"), ("vampprior", "-"), ("exemplar", "knn"), ("exemplar", "exact"))
ARCHS = ("vae", "hvae", "convhvae")


def load_images(n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Gray training images and binarised validation images: real MNIST when a mirror has it, else synthetic."""
    mirror = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
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


def measure(cfg: TrainConfig, train_x, val_x, steps: int | None, warmup_steps: int = 1) -> dict:
    """Time ``steps`` training steps (None: a whole epoch) and the per-epoch refresh and validation."""
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, train_x)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    shuffle = torch.Generator().manual_seed(1)
    steps_per_epoch = -(-len(train_x) // cfg.batch_size)
    model.eval()
    model.prior.refresh(model.encode)  # the trainer does this once before the first epoch
    train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, shuffle, 1, max_steps=warmup_steps)
    t0 = time.perf_counter()
    timed = train_epoch(model, optimizer, train_x, cfg.batch_size, 0.5, shuffle, 1, max_steps=steps)
    t1 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        model.prior.refresh(model.encode)
        t2 = time.perf_counter()
        evaluate_elbo(model, val_x, cfg.eval_batch_size)
    t3 = time.perf_counter()
    n_timed = steps_per_epoch if steps is None else min(steps, steps_per_epoch)
    assert np.isfinite(timed["loss"])
    return {
        "timed_steps": n_timed,
        "step_seconds": (t1 - t0) / n_timed,
        "steps_seconds": (t1 - t0) / n_timed * steps_per_epoch,
        "extrapolated": n_timed < steps_per_epoch,
        "refresh_seconds": t2 - t1,
        "val_seconds": t3 - t2,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 / 200 images, 3 timed steps, 1 thread (about a minute)")
    p.add_argument("--train-images", type=int, default=50_000)
    p.add_argument("--val-images", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=100, help="timed training steps per configuration (0: whole epoch)")
    p.add_argument("--exact-steps", type=int, default=5, help="timed steps in exact exemplar mode (always extrapolated)")
    p.add_argument("--threads", help="comma-separated torch thread counts (default 1,2; 1 with --quick)")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--priors", default=",".join(f"{a}:{b}" if b != "-" else a for a, b in PRIORS),
                   help="comma-separated: gaussian, vampprior, exemplar:knn, exemplar:exact")
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
    print(f"data: {source}, {len(train_x)} training / {len(val_x)} validation images; batch 100; "
          f"exact mode M = N/2 = {len(train_x) // 2}", flush=True)

    rows = []
    started = time.perf_counter()
    for arch in args.archs.split(","):
        for prior, mode in priors:
            for t in threads:
                cfg = TrainConfig(architecture=arch, prior=prior, exemplar_mode="exact" if mode == "-" else mode,
                                  threads=t, device="cpu")
                steps = args.exact_steps if mode == "exact" else (args.steps or None)
                r = {"arch": arch, "prior": prior, "mode": mode, "threads": t, **measure(cfg, train_x, val_x, steps)}
                r["epoch_seconds"] = r["steps_seconds"] + r["refresh_seconds"] + r["val_seconds"]
                r["epoch_gemm_gflop"] = r["epoch_seconds"] * machine["gemm"]["gflops"][t]
                rows.append(r)
                print(f"  measured {arch}/{prior}/{mode} threads={t}: epoch {r['epoch_seconds']:.1f} s "
                      f"[{time.perf_counter() - started:.0f} s elapsed]", file=sys.stderr, flush=True)

    base = {(r["arch"], r["threads"]): r["epoch_seconds"] for r in rows if r["prior"] == "gaussian"}
    header = (f"{'arch':9} {'prior':9} {'mode':5} {'thr':>3} {'s/step':>8} {'steps s':>9} {'refresh s':>9} "
              f"{'val s':>7} {'epoch s':>9} {'x gauss':>7} {'GEMM-GF':>8}  note")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        ratio = r["epoch_seconds"] / base[(r["arch"], r["threads"])] if (r["arch"], r["threads"]) in base else float("nan")
        r["ratio_to_gaussian"] = ratio
        note = f"extrapolated from {r['timed_steps']} steps" if r["extrapolated"] else "whole epoch timed"
        print(f"{r['arch']:9} {r['prior']:9} {r['mode']:5} {r['threads']:>3} {r['step_seconds']:8.4f} "
              f"{r['steps_seconds']:9.2f} {r['refresh_seconds']:9.2f} {r['val_seconds']:7.2f} "
              f"{r['epoch_seconds']:9.2f} {ratio:7.2f} {r['epoch_gemm_gflop']:8.0f}  {note}")
    print("x gauss: epoch / Gaussian-prior epoch of the same model and threads. GEMM-GF: epoch seconds x this "
          "host's fp32 GEMM GFLOP/s on the same threads (divide by your machine's rate to predict its seconds).")
    print("\ntargets:")
    for r in rows:
        if r["mode"] == "knn":
            verdict = "met" if r["ratio_to_gaussian"] <= 1.3 else "NOT met"
            print(f"  {r['arch']} kNN epoch / Gaussian epoch on {r['threads']} thread(s): "
                  f"{r['ratio_to_gaussian']:.2f} (target <= 1.3: {verdict})")
        if (r["arch"], r["prior"], r["threads"]) == ("vae", "gaussian", 2):
            size = "" if len(train_x) == 50_000 else f" (measured on {len(train_x)} images, not 50,000)"
            verdict = "met" if r["epoch_seconds"] <= 7 else "NOT met"
            print(f"  vae Gaussian epoch on 2 threads: {r['epoch_seconds']:.2f} s (target <= 7 s: {verdict}){size}")
    if args.quick:
        print("QUICK MODE: fewer images and steps than the real benchmark; the figures only show that it runs.")
    if args.json:
        write_json(args.json, {"rows": rows, "data": source, "args": vars(args), "host": machine,
                               "environment": environment("cpu")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
