"""The resumable trainer (docs/protocol.md section 4): the orchestration of ``evae.train.loop``'s computations
around the run folder of ``evae.runs``.

Every epoch ends with an atomically written checkpoint holding the model, the optimiser, the
early-stopping state, the metrics so far and every RNG state, so a job killed at any moment
resumes from its last completed epoch and ends exactly as an uninterrupted run of the same seed
(same ``metrics.csv``, bit for bit; wall-clock times go to ``timing.csv``). A run that reached
``max_epochs`` resumes when only ``max_epochs`` was raised; one that stopped early stays stopped, also
when resumed from its checkpoint.

Choices where the paper is silent (the authors' code where it tells):

* Validation uses the evaluation prior (exemplar prior: all N exemplars, no LOO, float64), one
  reparameterised sample per image, beta = 1, on the validation set binarised once.
* The exemplar cache (kNN index, validation means) is refreshed after each epoch's steps: the same
  means "the start of the next epoch" would give, and the ones validation needs.
* Early stopping (``loop.early_stopping``): an epoch counts against ``patience`` only once beta = 1
  (epoch >= warm-up epochs; the counter is held before); training stops after ``patience`` consecutive
  such epochs without a new best validation loss (the authors' loop needs ``patience + 1``). The best
  checkpoint is kept from any epoch, warm-up included.
* A non-finite loss stops the run with ``TrainingDivergedError`` before the step is taken; no
  checkpoint is written for that epoch, so the last good one stays.
* A damaged checkpoint, best.pt or summary.json stops the run with ``DamagedFileError`` before any
  epoch; temporaries left by killed writes are removed when the run starts.
* Randomness: the global torch RNG, seeded with ``seed``, drives initialisation, reparameterisation
  and exemplar subsets (on a GPU, the generator of the CUDA device the run computes on); a separate CPU
  generator seeded with ``seed + 1`` shuffles the training set each epoch and draws the dynamic
  binarisation. The checkpoint holds the CPU generators' states and, on CUDA, that one device's state
  (not every visible GPU's, so a checkpoint resumes whatever the number of GPUs), with the device it
  was written on. A last, smaller minibatch is kept when N is not a multiple of the batch size.
* A resume on another kind of device (written on the CPU, resumed on a GPU, or back) goes on rather
  than being refused, since moving a long run to a faster machine is a reason to resume: the CUDA
  generator then starts from the seed (or is left unused), other kernels round differently, and the
  run is no longer bit-identical to an uninterrupted one. The trainer warns so in the log, and the
  run's new segment records it (``resumed_from``: epoch, file, device, ``device_changed``).
* The prior's cache is refreshed with the model in eval mode, at the start of every (re)start as after
  every epoch: BatchNorm (ConvVAE64) encodes the exemplars with its running statistics and leaves them
  untouched, so a resumed run equals an uninterrupted one.
* A damaged ``checkpoint.pt`` falls back to ``checkpoint.prev.pt``, the checkpoint it replaced
  (``runs.load_checkpoint``): one epoch is trained again, and the run still ends as an uninterrupted one.
* ``train_loss`` in metrics.csv is the mean over minibatches of the beta-weighted loss (what was
  optimised); ``val_loss`` is the negative ELBO with beta = 1.
"""

from __future__ import annotations

import logging
import math

import torch
from tqdm import tqdm

from evae import runs
from evae.config import ConfigError, TrainConfig
from evae.data import ImageDataset
from evae.models import build_model
from evae.provenance import environment, gemm_gflops, pick_device, set_threads
from evae.runs import BEST, METRIC_COLUMNS, SUMMARY, TIMING_COLUMNS
from evae.train import loop
from evae.train.optim import make_optimizer

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, out, progress: bool = True, data: ImageDataset | None = None) -> dict:
    """Train ``cfg`` into the run folder ``out`` (resuming if it holds a checkpoint of the same config); return
    the summary.

    ``data`` is an already loaded dataset to use as is (``runs.load_data(cfg)`` when None, which applies the
    config's ``max_train_images`` / ``max_val_images``).
    """
    out = runs.start(out)
    if (out / SUMMARY).exists():
        summary = runs.read_summary(out)
        if summary["trajectory_digest"] != cfg.trajectory_digest():
            raise ConfigError(
                f"{out / SUMMARY} is the summary of a run of a different config (digest {summary['trajectory_digest']}, "
                f"this one {cfg.trajectory_digest()}): train into another --out directory, or delete the old one to "
                "start over"
            )
        if summary["stopped"] != "max_epochs" or summary["epochs_trained"] >= cfg.max_epochs:
            log.info("%s: already trained (%s)", out, summary["stopped"])
            return summary
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    data = data if data is not None else runs.load_data(cfg)
    torch.manual_seed(cfg.seed)
    train_x = torch.from_numpy(data.train).to(device)
    val_x = torch.from_numpy(data.val_binary).to(device)
    model = build_model(cfg, train_x, data.image_shape).to(device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    shuffle = torch.Generator().manual_seed(cfg.seed + 1)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "timing": [], "wall": 0.0,
             "segments": []}

    checkpoint = runs.load_checkpoint(out, cfg)
    resumed_from = None
    if checkpoint is not None:
        if (out / BEST).exists():
            runs.verify(out / BEST)  # resuming onto damaged best weights would only defer the error
        state, resumed_from = _restore(checkpoint, model, optimizer, shuffle, device)
        log.info("%s: resuming after epoch %d from %s (written on %s)", out, state["epoch"], resumed_from["file"],
                 resumed_from["device"])
        if resumed_from["device_changed"]:
            log.warning("%s: %s was written on %s and the run resumes on %s: it goes on, but is no longer "
                        "bit-identical to an uninterrupted run (other kernels, another random stream for the "
                        "latent samples); its segments record the change", out, resumed_from["file"],
                        resumed_from["device"], device)
        runs.write_tables(out, state["history"], state["timing"])  # a kill after the checkpoint must not lose a row
    runs.write_config(out, cfg)
    segment = _segment(state["epoch"] + 1, device, cfg.threads, resumed_from)
    state["segments"].append(segment)
    log.info("%s: segment %d from epoch %d on %s (%s), fp32 GEMM %.0f GFLOP/s on %d thread(s), commit %s", out,
             len(state["segments"]), segment["first_epoch"], segment["device"], segment["device_name"],
             segment["gemm_gflops"], cfg.threads, segment["git_commit"])

    loop.refresh_prior(model)
    early = f"early stopping: no validation improvement for {cfg.patience} epochs"
    # a checkpoint of the epoch where early stopping ended the run (its summary.json deleted, or never written
    # because of a kill) resumes to that end, not past it
    stopped = early if state["bad_epochs"] >= cfg.patience else "max_epochs"
    last = state["epoch"] if stopped == early else cfg.max_epochs
    epochs = tqdm(
        range(state["epoch"] + 1, last + 1), initial=state["epoch"], total=cfg.max_epochs,
        desc=f"train {cfg.architecture}/{cfg.prior}", unit="epoch", disable=not progress, dynamic_ncols=True,
    )
    for epoch in epochs:
        beta = loop.beta_at(epoch, cfg.warmup_epochs)
        row, seconds = loop.run_epoch(model, optimizer, train_x, val_x, cfg.batch_size, cfg.eval_batch_size, beta,
                                      shuffle, epoch, binary=data.binary, progress=progress)
        state["wall"] += seconds["epoch_seconds"]
        segment["last_epoch"], segment["wall_seconds"] = epoch, segment["wall_seconds"] + seconds["epoch_seconds"]
        state["history"].append({"epoch": epoch, **row})
        state["timing"].append({"epoch": epoch, **seconds, "wall_seconds": state["wall"]})
        state["epoch"] = epoch
        improved, stop = loop.early_stopping(state, row["val_loss"], epoch, cfg.warmup_epochs, cfg.patience)
        best = runs.best_weights(cfg, model, epoch, row["val_loss"]) if improved else None
        runs.save_epoch(out, _checkpoint(cfg, model, optimizer, shuffle, state, device), state["history"],
                        state["timing"], best)
        epochs.set_postfix(train=f"{row['train_loss']:.2f}", val=f"{row['val_loss']:.2f}", best=state["best_epoch"])
        if not progress:
            mean_epoch = state["wall"] / len(state["timing"])
            log.info("epoch %d/%d train %.3f val %.3f beta %.2f %.1fs (steps %.1fs); at most %.0f min left "
                     "(%.1f s/epoch, early stopping may end sooner)", epoch, cfg.max_epochs, row["train_loss"],
                     row["val_loss"], beta, seconds["epoch_seconds"], seconds["steps_seconds"],
                     (cfg.max_epochs - epoch) * mean_epoch / 60, mean_epoch)
        if stop:
            stopped = early
            break
    epochs.close()

    summary = {
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "trajectory_digest": cfg.trajectory_digest(),
        "epochs_trained": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"],
        "stopped": stopped,
        "train_seconds": state["wall"],
        "segments": [s for s in state["segments"] if s["last_epoch"] is not None],  # those that trained an epoch
        "prior": model.prior.describe(),
        **runs.provenance(data, device),
    }
    runs.write_summary(out, summary)
    return summary


def _segment(first_epoch: int, device: torch.device, threads: int, resumed_from: dict | None) -> dict:
    """One stretch of training in one process: where and with which code it ran, and what it resumed from
    (None: epoch 1). ``last_epoch`` and ``wall_seconds`` advance with each completed epoch; a process killed
    before its first epoch leaves none."""
    env = environment(device)
    return {
        "first_epoch": first_epoch, "last_epoch": None, "wall_seconds": 0.0, "started_utc": env["utc"],
        "git_commit": env["git_commit"], "git_modified": env["git_modified"], "git_diff_sha256": env["git_diff_sha256"],
        "host": env["host"], "cpu": env["cpu"], "device": env["device"], "device_name": env["device_name"],
        "torch": str(env["torch"]), "numerics": env["numerics"], "torch_threads": threads,
        "gemm_gflops": gemm_gflops(threads), "resumed_from": resumed_from,
    }


def _checkpoint(cfg, model, optimizer, shuffle, state, device: torch.device) -> dict:
    """Everything a resumed run needs to continue exactly as an uninterrupted one, and the device it ran on."""
    return {
        "trajectory_digest": cfg.trajectory_digest(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": {k: v for k, v in state.items() if k not in ("history", "timing")},
        "history": [[row[c] for c in METRIC_COLUMNS] for row in state["history"]],
        "timing": [[row[c] for c in TIMING_COLUMNS] for row in state["timing"]],
        "device": str(device),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "rng_shuffle": shuffle.get_state(),
    }


def _restore(ckpt, model, optimizer, shuffle, device: torch.device) -> tuple[dict, dict]:
    """Load ``ckpt`` into the model, optimiser and generators; return the training state and what it was resumed
    from (epoch, file, the device it was written on, whether that was another kind of device)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = dict(ckpt["state"])
    state["history"] = [dict(zip(METRIC_COLUMNS, row)) for row in ckpt["history"]]
    state["timing"] = [dict(zip(TIMING_COLUMNS, row)) for row in ckpt["timing"]]
    if "segments" not in state:  # a checkpoint written before runs recorded their segments
        state["segments"] = [{"first_epoch": 1, "last_epoch": state["epoch"], "wall_seconds": state["wall"],
                              "git_commit": "not recorded"}]
    written_on = checkpoint_device(ckpt)
    restore_rng(ckpt, shuffle, device)
    resumed_from = {"epoch": state["epoch"], "file": ckpt.get("file", runs.CHECKPOINT), "device": written_on,
                    "device_changed": torch.device(written_on).type != device.type}
    return state, resumed_from


def checkpoint_device(ckpt: dict) -> str:
    """The device a checkpoint was written on. Checkpoints from before it was recorded: their last segment's
    device, else (older still) ``cuda`` where they hold CUDA generator states, ``cpu`` where none."""
    if ckpt.get("device"):
        return ckpt["device"]
    segments = ckpt["state"].get("segments") or [{}]
    if segments[-1].get("device"):
        return segments[-1]["device"]
    return "cuda" if ckpt.get("rng_cuda") else "cpu"


def restore_rng(ckpt: dict, shuffle: torch.Generator, device: torch.device) -> None:
    """Set the CPU generators, and on CUDA the device's generator, to the states ``ckpt`` saved.

    The CUDA state is restored only where the checkpoint was written on CUDA too (any GPU: a generator's
    state does not depend on the card). Checkpoints from before the device was recorded hold a list of every
    visible GPU's state: the first is the one a ``cuda`` device used. A CUDA state left unrestored keeps what
    ``torch.manual_seed(seed)`` gave it (``checkpoint_device`` and the trainer's warning tell when).
    """
    torch.set_rng_state(ckpt["rng_torch"])
    shuffle.set_state(ckpt["rng_shuffle"])
    saved = ckpt.get("rng_cuda")
    if isinstance(saved, list):
        saved = saved[0] if saved else None
    if device.type == "cuda" and saved is not None and torch.device(checkpoint_device(ckpt)).type == "cuda":
        torch.cuda.set_rng_state(saved, device)
