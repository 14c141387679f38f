"""Importance-weighted test NLL (docs/protocol.md section 5).

    log p(x) ~= logmeanexp_s [log p(x | z_s) + log p(z_s) - log q(z_s | x)],  z_s ~ q(z | x), s = 1..S,

a stochastic lower bound on log p(x) that rises with S toward it (Burda et al., 2016). The log-weights
come from the model's own densities (``Sample.log_weight`` composition: for two-level models the
proposal q(z1, z2 | x) and the prior p(z1 | z2) p(z2)); log-mean-exp in float64, over all S samples of
an image; samples are drawn ``chunk`` at a time to bound memory: ``DEFAULT_CHUNK`` on the CPU, and on a GPU
as many as half its free memory holds, at most that (``nll_chunk``, from the activations one sample makes,
``sample_bytes``; the colour model's are ~10 MB a sample at its paper width).

* One-level VAE: each test image is encoded once; its S latents are drawn at once with the model's
  own ``reparameterize`` (the random numbers ``sample_pass`` on the S-times repeated image would use,
  and independent of ``chunk``) and decoded ``chunk`` at a time, the clamped Bernoulli likelihood
  taken from the logits (``log_bernoulli_one_image``).
* Other models: ``model.sample_passes``, ``chunk`` samples at a time: the image's x-paths once, then every
  density as the model defines it (the random stream depends on ``chunk``, which the result records).
* log p(z_s): ``prior.evaluation_log_prob`` (float64), given the image's posterior mean and log-variance,
  with the encoder outputs of pseudo-inputs computed once. The exemplar prior (all N cached means, no LOO) is
  exact, or with ``exemplar_bound`` certified to that many nats: the estimate is then a lower bound on
  the exact IW estimate within the certified bound (each image's log p(x) estimate lies in
  [returned, returned + certified]). Other priors are exact.

``iw_estimates`` computes (a model and images in, estimates out); ``evaluate_nll`` reads the run and
writes the result with its provenance (``evae.runs``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evae import runs
from evae.distributions import LOGIT_HI, LOGIT_LO, log_normal_diag, reparameterize
from evae.evaluate.common import track
from evae.models import VAE

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 2500  # samples decoded per batch: [2500 x 784] float32 is 8 MB
MEMORY_SHARE = 0.5  # of a GPU's free memory, for one chunk's activations (the rest: what they leave out, and others)


def nll_chunk(samples: int, sample_bytes: int | None = None, free_bytes: int | None = None,
              share: float = MEMORY_SHARE) -> int:
    """Samples decoded at once: ``DEFAULT_CHUNK`` (at most ``samples``), or fewer where ``share`` of
    ``free_bytes`` of device memory holds fewer samples' activations of ``sample_bytes`` each (at least 1).

    Without ``free_bytes`` (the CPU, whose memory the job's ``mem_mb`` bounds) it is ``DEFAULT_CHUNK``.
    """
    chunk = min(samples, DEFAULT_CHUNK)
    if free_bytes is None or sample_bytes is None:
        return chunk
    return max(1, min(chunk, int(share * free_bytes) // max(1, sample_bytes)))


def sample_bytes(model, x: torch.Tensor) -> int:
    """Bytes of the outputs of every leaf module in one ``model.sample_passes`` of the one image ``x`` [P]: what
    each sample adds to a chunk's activations (an overestimate, as not all are alive at once; functional
    intermediates are not counted, which the unused share in ``nll_chunk`` covers). The RNG is left as it was."""
    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        total += sum(t.numel() * t.element_size() for t in (output if isinstance(output, tuple) else (output,))
                     if torch.is_tensor(t))

    hooks = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
            model.sample_passes(x, 1)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def device_chunk(model, x: torch.Tensor, samples: int) -> tuple[int, str]:
    """``nll_chunk`` for the device of the image ``x`` (one test image), and how it was chosen."""
    if x.device.type != "cuda":
        return nll_chunk(samples), "default"
    per_sample = sample_bytes(model, x)
    free = torch.cuda.mem_get_info(x.device)[0] + torch.cuda.memory_reserved(x.device) - torch.cuda.memory_allocated(x.device)
    chunk = nll_chunk(samples, per_sample, free)
    return chunk, (f"device memory: {MEMORY_SHARE:.0%} of {free / 2**30:.1f} GiB free over {per_sample / 2**20:.2f} MiB "
                   f"of activations a sample (at most {DEFAULT_CHUNK})")


def log_bernoulli_one_image(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x | z_s) of ONE binary image ``x`` [P] under the Bernoulli logits [S, P] of its S samples.

    ``log_bernoulli_logits`` (the models' likelihood) specialised to one image: with l' the logits clamped in logit
    space, log p = sum_i logsigmoid(l'_i) - (1 - x_i) l'_i, the second sum one matrix-vector product.
    ``logits`` is overwritten.
    """
    clamped = logits.clamp_(LOGIT_LO, LOGIT_HI)
    return torch.nn.functional.logsigmoid(clamped).sum(-1) - clamped @ (1 - x)


@dataclass
class ImageEstimate:
    """One test image's importance-weighted estimate."""

    log_px: float  # logmeanexp of the log-weights
    elbo: float  # mean of the log-weights (the S-sample ELBO estimate)
    certified: float  # nats the exemplar pruning may have lowered log_px by (0 if exact)
    computed_fraction: float  # exemplar prior: share of (sample, exemplar) pairs computed


class _OnceEncoder:
    """The model's encoder, remembering its last input and output (pseudo-inputs are encoded once)."""

    def __init__(self, encode):
        self.encode, self.last = encode, None

    def __call__(self, x):
        if self.last is None or self.last[0].shape != x.shape or not torch.equal(self.last[0], x):
            self.last = (x.clone(), self.encode(x))
        return self.last[1]


@torch.no_grad()
def estimate_image(
    model, x: torch.Tensor, samples: int, chunk: int = DEFAULT_CHUNK, exemplar_bound=None, prior_encoder=None
) -> ImageEstimate:
    """Importance-weighted estimate of log p(x) for one binary image ``x`` [P] (global torch RNG).

    ``prior_encoder``: the encoder handed to ``prior.log_prob`` (pass one ``_OnceEncoder`` for many images).
    """
    x = x.reshape(1, -1)
    mean, logvar = model.encode(x)
    rest = []  # log p(x | latents) + log p(lower latents | z) - log q(latents | x), float32
    if isinstance(model, VAE):
        z = reparameterize(mean.expand(samples, -1), logvar.expand(samples, -1))  # all S at once: chunk-free
        for start in range(0, samples, chunk):
            zc = z[start : start + chunk]
            rest.append(log_bernoulli_one_image(x[0], model.decoder(zc)) - log_normal_diag(zc, mean, logvar))
    else:
        latents = []
        for start in range(0, samples, chunk):
            s = model.sample_passes(x[0], min(chunk, samples - start))
            rest.append(s.log_px + s.log_p_inner - s.log_q)
            latents.append(s.z)
        z = torch.cat(latents)
    encoder = prior_encoder or _OnceEncoder(model.encode)
    prior = model.prior.evaluation_log_prob(z, encoder, centre=mean[0], bound=exemplar_bound,
                                            posterior_logvar=logvar[0])
    log_w = torch.cat(rest).double() + prior.log_prob
    log_px = float(torch.logsumexp(log_w, 0)) - math.log(samples)
    return ImageEstimate(log_px, float(log_w.mean()), prior.certified, prior.computed_fraction)


def iw_estimates(model, images: torch.Tensor, samples: int, chunk: int, exemplar_bound=None, seed: int = 0,
                 progress: bool = False) -> list[ImageEstimate]:
    """``estimate_image`` of every binary image [n, P], the global torch RNG seeded with ``seed`` (and restored)."""
    prior_encoder = _OnceEncoder(model.encode)
    cuda = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return [estimate_image(model, x, samples, chunk, exemplar_bound, prior_encoder)
                for x in track(images, len(images), f"nll S={samples}", progress)]


def evaluate_nll(
    run_dir: str | Path,
    out: str | Path,
    samples: int = 5000,
    chunk: int | None = None,
    exemplar_bound: float | None = None,
    max_images: int | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Importance-weighted NLL of the run's best checkpoint on the test set (binarised once); writes ``out``.

    ``run_dir``: the run folder or its summary.json; ``chunk``: samples decoded at once (None: ``device_chunk``);
    ``device``: where to compute (None: the run's config's). Per-image values go beside ``out``
    (``<stem>.per_image.npz``: nll, neg_elbo, certified).
    """
    started = time.perf_counter()
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None (whole test set), got {max_images}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    run = runs.load_run(run_dir, device=device)
    model, data, prior = run.model, run.data, run.model.prior
    if exemplar_bound is not None and not prior.prunable:
        log.warning("exemplar_bound=%s ignored: the prior is %s", exemplar_bound, type(prior).__name__)
        exemplar_bound = None
    test = torch.from_numpy(data.test_binary[:max_images]).to(run.device)
    chunk, chunk_rule = (min(samples, chunk), "given") if chunk is not None else device_chunk(model, test[0], samples)
    log.info("%d samples a test image, decoded %d at a time (%s)", samples, chunk, chunk_rule)
    t_loop = time.perf_counter()
    estimates = iw_estimates(model, test, samples, chunk, exemplar_bound, seed, progress)
    loop_seconds = time.perf_counter() - t_loop

    nll = -np.array([e.log_px for e in estimates])
    neg_elbo = -np.array([e.elbo for e in estimates])
    certified = np.array([e.certified for e in estimates])
    per_image = runs.write_per_image(out, nll=nll, neg_elbo=neg_elbo, certified=certified)
    result = {
        "metric": "importance-weighted negative log-likelihood (nats per image)",
        "nll": float(nll.mean()),
        "nll_stderr": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float("nan"),
        "nll_bits_per_dim": float(nll.mean()) / (math.prod(data.image_shape) * math.log(2)),
        "neg_elbo": float(neg_elbo.mean()),
        "samples": samples,
        "chunk": chunk,
        "chunk_rule": chunk_rule,
        "images": len(nll),
        "max_images": max_images,
        "split": "test",
        "binarization": data.provenance.get("binarize"),
        "seed": seed,
        "estimator": "logmeanexp over S samples of q(z|x), float64; fast one-level path" if isinstance(model, VAE)
        else "logmeanexp over S samples of q(latents|x) via model.sample_passes, float64",
        "prior": type(prior).__name__,
        "prior_settings": prior.describe(),
        "num_exemplars": prior.describe().get("num_exemplars"),
        "exemplar_bound": exemplar_bound,
        "certified_bound": {
            "max": float(certified.max()),
            "mean": float(certified.mean()),
            "meaning": "each image's exact IW log-likelihood lies in [estimate, estimate + certified]; "
            "the mean NLL is at most 'mean' nats above the exact-prior estimate",
        } if prior.prunable else None,
        "exemplar_pairs_computed": float(np.mean([e.computed_fraction for e in estimates])) if prior.prunable else None,
        "per_image_file": per_image.name,
        "estimate_seconds": loop_seconds,
        "images_per_second": len(nll) / loop_seconds,
    }
    return runs.write_result(out, result, run, data, run.device, started)
