"""The resumable trainer (method.md section 4): the orchestration of ``evae.train.loop``'s computations
around the run folder of ``evae.runs``.

Every epoch ends with an atomically written checkpoint holding the model, the optimiser, the
early-stopping state, the metrics so far and every RNG state, so a job killed at any moment
resumes from its last completed epoch and ends exactly as an uninterrupted run of the same seed
(same ``metrics.csv``, bit for bit; wall-clock times go to ``timing.csv``). A run that reached
``max_epochs`` resumes when only ``max_epochs`` was raised; one that stopped early stays stopped, also
when resumed from its checkpoint.

Choices where method.md is silent (the authors' code where it tells):

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
  and exemplar subsets; a separate generator seeded with ``seed + 1`` shuffles the training set each
  epoch and draws the dynamic binarisation. Both states are checkpointed. A last, smaller minibatch
  is kept when N is not a multiple of the batch size.
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
    if checkpoint is not None:
        if (out / BEST).exists():
            runs.verify(out / BEST)  # resuming onto damaged best weights would only defer the error
        state = _restore(checkpoint, model, optimizer, shuffle)
        log.info("%s: resuming after epoch %d", out, state["epoch"])
        runs.write_tables(out, state["history"], state["timing"])  # a kill after the checkpoint must not lose a row
    runs.write_config(out, cfg)
    segment = _segment(state["epoch"] + 1, device, cfg.threads)
    state["segments"].append(segment)
    log.info("%s: segment %d from epoch %d on %s (%s), fp32 GEMM %.0f GFLOP/s on %d thread(s), commit %s", out,
             len(state["segments"]), segment["first_epoch"], segment["device"], segment["device_name"],
             segment["gemm_gflops"], cfg.threads, segment["git_commit"])

    model.prior.refresh(model.encode)
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
        runs.save_epoch(out, _checkpoint(cfg, model, optimizer, shuffle, state), state["history"], state["timing"], best)
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
        "segments": state["segments"],
        "prior": model.prior.describe(),
        **runs.provenance(data, device),
    }
    runs.write_summary(out, summary)
    return summary


def _segment(first_epoch: int, device: torch.device, threads: int) -> dict:
    """One stretch of training in one process: where and with which code it ran (``last_epoch`` and
    ``wall_seconds`` advance with each completed epoch; a process killed before its first epoch leaves none)."""
    env = environment(device)
    return {
        "first_epoch": first_epoch, "last_epoch": None, "wall_seconds": 0.0, "started_utc": env["utc"],
        "git_commit": env["git_commit"], "host": env["host"], "cpu": env["cpu"], "device": env["device"],
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else env["cpu"]["model"],
        "torch": str(env["torch"]), "torch_threads": threads, "gemm_gflops": gemm_gflops(threads),
    }


def _checkpoint(cfg, model, optimizer, shuffle, state) -> dict:
    """Everything a resumed run needs to continue exactly as an uninterrupted one."""
    return {
        "trajectory_digest": cfg.trajectory_digest(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": {k: v for k, v in state.items() if k not in ("history", "timing")},
        "history": [[row[c] for c in METRIC_COLUMNS] for row in state["history"]],
        "timing": [[row[c] for c in TIMING_COLUMNS] for row in state["timing"]],
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_shuffle": shuffle.get_state(),
    }


def _restore(ckpt, model, optimizer, shuffle) -> dict:
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng_torch"])
    if ckpt["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
    shuffle.set_state(ckpt["rng_shuffle"])
    state = dict(ckpt["state"])
    state["history"] = [dict(zip(METRIC_COLUMNS, row)) for row in ckpt["history"]]
    state["timing"] = [dict(zip(TIMING_COLUMNS, row)) for row in ckpt["timing"]]
    if "segments" not in state:  # a checkpoint written before runs recorded their segments
        state["segments"] = [{"first_epoch": 1, "last_epoch": state["epoch"], "wall_seconds": state["wall"],
                              "git_commit": "not recorded"}]
    return state
