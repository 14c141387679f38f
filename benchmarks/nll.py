"""Images per second of the importance-weighted NLL (S = 5000 samples per image), on 1 and 2 threads.

    python benchmarks/nll.py                 # 10 images per measurement
    python benchmarks/nll.py --quick         # 2 images, 1 thread: well under a minute
    python benchmarks/nll.py --run DIR       # exemplar means from a trained run (see below)

Rows:

* ``gaussian / one-level fast path``: the whole estimator for the MLP VAE with the Gaussian prior
  (encode once, S latents, decoder logits in chunks, clamped Bernoulli from logits, log-mean-exp);
* ``gaussian / sample_pass``: the same estimate through ``model.sample_pass`` on the repeated image
  (what any model gets), for comparison;
* ``vampprior / one-level fast path``: the whole estimator for the MLP VAE with a VampPrior of K = 500
  pseudo-inputs (its log-prior of the S samples as one matrix product, ``diagonal_mixture_log_prob``);
* ``hvae gaussian`` and ``convhvae gaussian / sample_passes``: the whole estimator for the two-level models
  with the Gaussian prior (``model.sample_passes``: the x-paths, q(z2 | x) and the x-features of
  q(z1 | x, z2), once per image, shared by its S samples); the ConvHVAE on 2 images (its per-sample
  gated-convolution decoder makes it about 0.05 images/s);
* ``exemplar log-prior / exact``, ``/ certified 1e-3`` and ``/ certified 1e-3 iso``: the exemplar prior's
  log-density of the S samples of one image over N = 50,000 exemplar means (the hot spot), exact or with
  certified skipping (bounded with the image's posterior log-variance, as the NLL does, or with the
  isotropic bound alone). The fraction of (sample, exemplar) kernels computed is shown.
* with ``--run``, ``exemplar (trained) / certified 1e-3``: the whole estimator for the trained run's own
  model (``estimate_image`` with ``exemplar_bound=1e-3``) on the MNIST test images, against which the
  (untrained) Gaussian fast path above is the reference of the same MLP VAE.

Exemplar means: with ``--run DIR`` (a trained exemplar-prior run), its encoder applied to 50,000 MNIST
training images (dataset mirror: ``EVAE_DATA_MIRROR`` or ../shared/data) with its learned variance,
and the S samples drawn from its posterior of MNIST test images. Without it, synthetic means with the
spread measured on a briefly trained exemplar VAE (10 class clusters; nearest-neighbour distance about
a third of the median distance; prior s = 1.5; posterior std 0.9). Models are untrained (speed does
not depend on the weights) unless ``--run`` is given.

The output starts with the host (CPU model, cores, ISA flags) and its float32 GEMM rate measured in the
same run (benchmarks/host.py), and ends with every row in host-independent terms: time per image as a
multiple of the Gaussian fast path's on the same threads, in GEMM-GFLOP per image (the host's GEMM GFLOP/s
divided by images/s: divide by your machine's rate to predict its seconds per image), and for the exact
exemplar log-prior, whose float32 matrix product does 2 S N (D + 1) flops an image, the share of the GEMM
rate it reaches.

Target (issue "Training and evaluation speed near what this CPU can do"): the whole certified exemplar NLL
of the trained MNIST model (``--run``) at >= 0.8x the Gaussian fast path's rate.
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

from baselines.gaussian import GaussianPrior
from baselines.vampprior import VampPrior
from evae.priors.exemplar_logprior import exemplar_log_prior
from evae.evaluate.nll import estimate_image
from evae.io import write_json
from evae.models import VAE, ConvHVAE, HVAE
from evae.provenance import environment, set_threads
from host import describe, host

SAMPLES, EXEMPLARS, LATENT = 5000, 50_000, 40


def mnist():
    """MNIST (gray train, binary test) from the mirror, or None."""
    mirror = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if "EVAE_DATA_MIRROR" not in os.environ and mirror.is_dir():
        os.environ["EVAE_DATA_MIRROR"] = str(mirror)
    try:
        from evae.data import load_dataset

        data = load_dataset("mnist", download=False)
        return data.train, data.test_binary
    except Exception as err:
        print(f"MNIST not available ({err}); using synthetic images", file=sys.stderr)
        return None


def test_images(n: int) -> torch.Tensor:
    data = mnist()
    if data is not None:
        return torch.from_numpy(data[1][:n])
    return (torch.rand(n, 784, generator=torch.Generator().manual_seed(0)) < 0.13).float()


def synthetic_scene(images: int, seed: int = 0):
    """Exemplar means, log-variance, per-image (posterior mean, S samples, posterior log-variance), description,
    and the trained model (None here)."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(10, LATENT, generator=g)
    means = centres[torch.randint(10, (EXEMPLARS,), generator=g)] + 2.0 * torch.randn(EXEMPLARS, LATENT, generator=g)
    scenes, post_logvar = [], torch.full((LATENT,), 2 * math.log(0.9))
    for _ in range(images):
        c = centres[torch.randint(10, (1,), generator=g)][0] + 2.0 * torch.randn(LATENT, generator=g)
        scenes.append((c, c + 0.9 * torch.randn(SAMPLES, LATENT, generator=g), post_logvar))
    return means, math.log(1.5**2), scenes, "synthetic (10 clusters, s = 1.5, posterior std 0.9)", None


def run_scene(run_dir: str, images: int):
    from evae.runs import load_run

    data = mnist()
    if data is None:
        raise SystemExit("--run needs MNIST from the dataset mirror (EVAE_DATA_MIRROR)")
    run = load_run(run_dir)
    model = run.model
    with torch.no_grad():
        train = torch.from_numpy(data[0][:EXEMPLARS])
        means = torch.cat([model.encode(train[i : i + 2000])[0] for i in range(0, len(train), 2000)])
        mu, logvar = model.encode(torch.from_numpy(data[1][:images]))
    g = torch.Generator().manual_seed(0)
    std = (0.5 * logvar).exp()
    scenes = [(mu[i], mu[i] + std[i] * torch.randn(SAMPLES, LATENT, generator=g), logvar[i]) for i in range(images)]
    source = f"encoder of {run_dir} on MNIST ({len(means)} means)"
    return means, float(model.prior.logvar.detach()), scenes, source, model


def time_per_image(fn, items) -> float:
    fn(items[0])  # warm-up
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - t0)


def host_independent(rows: list[dict], machine: dict, exact_gflop: float) -> None:
    """Add to every row its time per image relative to the Gaussian fast path on the same threads, its GEMM-GFLOP
    per image, and for the exact exemplar log-prior the share of the GEMM rate its matrix product reaches."""
    gaussian = {r["threads"]: r["images_per_second"] for r in rows if (r["what"], r["path"]) == ("gaussian", "one-level fast path")}
    for r in rows:
        gemm = machine["gemm"]["gflops"][r["threads"]]
        r["x_gaussian"] = gaussian[r["threads"]] / r["images_per_second"]
        r["gemm_gflop_per_image"] = gemm / r["images_per_second"]
        r["gemm_fraction"] = r["images_per_second"] * exact_gflop / gemm if r["path"] == "exact" else None


def print_table(rows: list[dict]) -> None:
    head = f"{'what':20s} {'path':22s} {'thr':>3} {'images/s':>9} {'x Gauss':>8} {'GEMM-GF/img':>11} {'% GEMM':>6}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        share = "" if r["gemm_fraction"] is None else f"{r['gemm_fraction']:.0%}"
        print(f"{r['what']:20s} {r['path']:22s} {r['threads']:>3} {r['images_per_second']:9.2f} {r['x_gaussian']:8.2f} "
              f"{r['gemm_gflop_per_image']:11.2f} {share:>6}")
    print("x Gauss: time per image / the Gaussian fast path's on the same threads. GEMM-GF/img: this host's fp32 GEMM "
          "GFLOP/s / images/s (divide by your machine's rate to predict its seconds per image). % GEMM: the exact "
          "log-prior's matrix-product GFLOP/s as a share of the GEMM rate.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 images, 1 thread")
    parser.add_argument("--images", type=int, default=None, help="images per measurement (default 10; quick 2)")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1 2; quick 1)")
    parser.add_argument("--run", default=None, help="trained exemplar run: realistic exemplar means")
    parser.add_argument("--out", default=None, help="also write the table as JSON")
    args = parser.parse_args()
    n_images = args.images or (2 if args.quick else 10)
    threads = args.threads or ([1] if args.quick else [1, 2])
    machine = host(tuple(threads), n=1024 if args.quick else 2048)
    print(describe(machine), flush=True)

    torch.manual_seed(0)
    model = VAE(GaussianPrior(LATENT)).eval()
    vamp_model = VAE(VampPrior(784, 500)).eval()  # K = 500 pseudo-inputs, as the paper
    hvae, convhvae = HVAE(GaussianPrior(LATENT)).eval(), ConvHVAE(GaussianPrior(LATENT)).eval()
    xs = test_images(n_images)
    means, logvar, scenes, source, trained = run_scene(args.run, n_images) if args.run else synthetic_scene(n_images)

    def sample_pass_estimate(x):
        with torch.no_grad():
            s = model.sample_pass(x.reshape(1, -1).expand(SAMPLES, -1))
            log_w = s.log_weight(model.log_prior(s.z)).double()
        return torch.logsumexp(log_w, 0) - math.log(SAMPLES)

    def trained_estimate(x):
        return estimate_image(trained, x, SAMPLES, exemplar_bound=1e-3)

    stats = {}  # path -> [(kernels computed fraction, certified nats)] of every call

    def prior(path, bound, posterior=True):
        def fn(scene):
            centre, z, post_logvar = scene
            post_logvar = post_logvar if posterior else None
            r = exemplar_log_prior(z, centre, means, logvar, bound=bound, posterior_logvar=post_logvar)
            stats.setdefault(path, []).append((r.computed_fraction, r.certified))
        return fn

    rows = []
    for t in threads:
        set_threads(t)
        cases = [
            ("gaussian", "one-level fast path", lambda x: estimate_image(model, x, SAMPLES), list(xs)),
            ("gaussian", "sample_pass", sample_pass_estimate, list(xs)),
            ("vampprior", "one-level fast path", lambda x: estimate_image(vamp_model, x, SAMPLES), list(xs)),
            ("hvae gaussian", "sample_passes", lambda x: estimate_image(hvae, x, SAMPLES), list(xs)),
            ("convhvae gaussian", "sample_passes", lambda x: estimate_image(convhvae, x, SAMPLES), list(xs[:2])),
            ("exemplar log-prior", "exact", prior("exact", None), scenes),
            ("exemplar log-prior", "certified 1e-3", prior("certified 1e-3", 1e-3), scenes),
            ("exemplar log-prior", "certified 1e-3 iso", prior("certified 1e-3 iso", 1e-3, posterior=False), scenes),
        ]
        if trained is not None:
            cases.append(("exemplar (trained)", "certified 1e-3", trained_estimate, list(xs)))
        for what, path, fn, items in cases:
            rate = time_per_image(fn, items)
            extra = ""
            if what == "exemplar log-prior":
                computed, certified = np.array(stats.pop(path)).T
                extra = f"kernels computed {computed.mean():.1%} (mean), certified <= {certified.max():.1e} nats"
            rows.append({"what": what, "path": path, "threads": t, "images_per_second": rate, "note": extra})
            print(f"{what:20s} {path:22s} threads {t}  {rate:7.2f} images/s  {extra}", flush=True)

    host_independent(rows, machine, exact_gflop=2 * SAMPLES * len(means) * (LATENT + 1) / 1e9)
    print_table(rows)
    print(f"\nS = {SAMPLES}, N = {len(means)} exemplars ({source}), {n_images} images per row")
    if args.out:
        write_json(args.out, {"rows": rows, "samples": SAMPLES, "exemplars": len(means), "exemplar_source": source,
                              "images": n_images, "host": machine, "environment": environment("cpu")})


if __name__ == "__main__":
    main()
