"""The resumable trainer (method.md section 4).

Every epoch ends with an atomically written checkpoint holding the model, the optimiser, the
early-stopping state, the metrics so far and every RNG state, so a job killed at any moment
resumes from its last completed epoch and ends exactly as an uninterrupted run of the same seed
(same ``metrics.csv``, bit for bit; wall-clock times go to ``timing.csv``). A finished run resumes
too when only ``max_epochs`` was raised.

Choices where method.md is silent (the authors' code where it tells):

* Validation uses the evaluation prior (exemplar prior: all N exemplars, no LOO, float64), one
  reparameterised sample per image, beta = 1, on the validation set binarised once.
* The exemplar cache (kNN index, validation means) is refreshed after each epoch's steps: the same
  means "the start of the next epoch" would give, and the ones validation needs.
* Early stopping: an epoch counts against ``patience`` only once beta = 1 (epoch >= warm-up
  epochs; the counter is held before); training stops after ``patience`` consecutive such epochs
  without a new best validation loss (the authors' loop needs ``patience + 1``). The best
  checkpoint is kept from any epoch, warm-up included.
* A non-finite loss stops the run with ``TrainingDivergedError`` before the step is taken; no
  checkpoint is written for that epoch, so the last good one stays.
* Randomness: the global torch RNG, seeded with ``seed``, drives initialisation, reparameterisation
  and exemplar subsets; a separate generator seeded with ``seed + 1`` shuffles the training set each
  epoch and draws the dynamic binarisation. Both states are checkpointed. A last, smaller minibatch
  is kept when N is not a multiple of the batch size.
* ``train_loss`` in metrics.csv is the mean over minibatches of the beta-weighted loss (what was
  optimised); ``val_loss`` is the negative ELBO with beta = 1.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from evae.config import ConfigError, TrainConfig
from evae.data import ImageDataset, dynamic_binarize, load_dataset
from evae.io import torch_load, torch_save, write_json, write_text
from evae.models import LatentVariableModel, build_model
from evae.provenance import environment, pick_device, set_threads
from evae.train.optim import make_optimizer

log = logging.getLogger(__name__)

CHECKPOINT, BEST, SUMMARY, CONFIG = "checkpoint.pt", "best.pt", "summary.json", "config.yaml"
METRICS, TIMING = "metrics.csv", "timing.csv"
METRIC_COLUMNS = ("epoch", "beta", "train_loss", "train_rec", "train_kl", "val_loss", "val_rec", "val_kl", "prior_variance")
TIMING_COLUMNS = ("epoch", "steps_seconds", "eval_seconds", "epoch_seconds", "wall_seconds")


class TrainingDivergedError(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


@dataclass
class Run:
    """A model ready to use, with the data and config it was trained with."""

    cfg: TrainConfig
    model: LatentVariableModel
    data: ImageDataset
    device: torch.device


def load_data(cfg: TrainConfig) -> ImageDataset:
    data = load_dataset(cfg.dataset, split_seed=cfg.split_seed, binarize_seed=cfg.binarize_seed)
    reduced = []
    if cfg.max_train_images is not None and cfg.max_train_images < len(data.train):
        n = cfg.max_train_images
        data = dataclasses.replace(data, train=data.train[:n], train_labels=data.train_labels[:n])
        reduced.append(f"only the first {n} training images")
    if cfg.max_val_images is not None and cfg.max_val_images < len(data.val):
        n = cfg.max_val_images
        data = dataclasses.replace(data, val=data.val[:n], val_labels=data.val_labels[:n])
        reduced.append(f"only the first {n} validation images")
    if reduced:
        data.provenance["reduced"] = "; ".join(reduced)
    return data


def beta_at(epoch: int, warmup: int) -> float:
    """KL weight of epoch ``epoch`` (1-based): linear warm-up to 1 over ``warmup`` epochs."""
    return 1.0 if warmup == 0 else min(1.0, epoch / warmup)


def train(cfg: TrainConfig, out: str | Path, progress: bool = True, data: ImageDataset | None = None) -> dict:
    """Train ``cfg`` into ``out`` (resuming if ``out`` holds a checkpoint of the same config); return the summary.

    ``data`` is an already loaded dataset to use as is (``load_data(cfg)`` when None, which applies the
    config's ``max_train_images`` / ``max_val_images``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / SUMMARY).exists():
        summary = json.loads((out / SUMMARY).read_text())
        finished = summary["stopped"] != "max_epochs" or summary["epochs_trained"] >= cfg.max_epochs
        if summary.get("trajectory_digest") == cfg.trajectory_digest() and finished:
            log.info("%s: already trained (%s)", out, summary["stopped"])
            return summary
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    data = data if data is not None else load_data(cfg)
    torch.manual_seed(cfg.seed)
    train_x = torch.from_numpy(data.train).to(device)
    val_x = torch.from_numpy(data.val_binary).to(device)
    model = build_model(cfg, train_x, data.image_shape).to(device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    shuffle = torch.Generator().manual_seed(cfg.seed + 1)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "timing": [], "wall": 0.0}

    if (out / CHECKPOINT).exists():
        state = _restore(out / CHECKPOINT, cfg, model, optimizer, shuffle)
        log.info("%s: resuming after epoch %d", out, state["epoch"])
        _write_tables(out, state)  # a kill between the checkpoint and the tables must not lose a row
    write_text(out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=True))

    model.prior.refresh(model.encode)
    stopped = "max_epochs"
    epochs = tqdm(
        range(state["epoch"] + 1, cfg.max_epochs + 1), initial=state["epoch"], total=cfg.max_epochs,
        desc=f"train {cfg.architecture}/{cfg.prior}", unit="epoch", disable=not progress, dynamic_ncols=True,
    )
    for epoch in epochs:
        t0 = time.perf_counter()
        beta = beta_at(epoch, cfg.warmup_epochs)
        train_stats = train_epoch(
            model, optimizer, train_x, cfg.batch_size, beta, shuffle, epoch, progress=progress, binary=data.binary
        )
        t1 = time.perf_counter()
        model.eval()
        model.prior.refresh(model.encode)  # new means for validation and for the next epoch's retrieval
        val_stats = evaluate_elbo(model, val_x, cfg.eval_batch_size)
        model.train()
        t2 = time.perf_counter()
        state["wall"] += t2 - t0
        row = {
            "epoch": epoch, "beta": beta, **{f"train_{k}": v for k, v in train_stats.items()},
            **{f"val_{k}": v for k, v in val_stats.items()},
            "prior_variance": model.prior.describe().get("variance", float("nan")),
        }
        state["history"].append(row)
        state["timing"].append(
            {"epoch": epoch, "steps_seconds": t1 - t0, "eval_seconds": t2 - t1, "epoch_seconds": t2 - t0,
             "wall_seconds": state["wall"]}
        )
        state["epoch"] = epoch
        if row["val_loss"] < state["best_val"]:
            state.update(best_val=row["val_loss"], best_epoch=epoch, bad_epochs=0)
            torch_save({"model": model.state_dict(), "epoch": epoch, "val_loss": row["val_loss"]}, out / BEST)
        elif epoch >= cfg.warmup_epochs:
            state["bad_epochs"] += 1
        _checkpoint(out / CHECKPOINT, cfg, model, optimizer, shuffle, state)
        _write_tables(out, state)
        epochs.set_postfix(train=f"{row['train_loss']:.2f}", val=f"{row['val_loss']:.2f}", best=state["best_epoch"])
        if not progress:
            mean_epoch = state["wall"] / len(state["timing"])
            log.info("epoch %d/%d train %.3f val %.3f beta %.2f %.1fs (steps %.1fs); at most %.0f min left "
                     "(%.1f s/epoch, early stopping may end sooner)", epoch, cfg.max_epochs, row["train_loss"],
                     row["val_loss"], beta, t2 - t0, t1 - t0, (cfg.max_epochs - epoch) * mean_epoch / 60, mean_epoch)
        if state["bad_epochs"] >= cfg.patience:
            stopped = f"early stopping: no validation improvement for {cfg.patience} epochs"
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
        "prior": model.prior.describe(),
        "data": {"name": data.name, "sizes": data.sizes(), **data.provenance},
        "environment": environment(device),
    }
    write_json(out / SUMMARY, summary)
    return summary


def train_epoch(
    model, optimizer, train_x, batch_size, beta, shuffle, epoch, max_steps: int | None = None, progress: bool = False,
    binary: bool = True,
) -> dict:
    """One pass over the shuffled training set (or its first ``max_steps`` minibatches, for benchmarks);
    mean (over batches) loss, -rec and KL of the beta-ELBO. Binary datasets are re-binarised every
    minibatch; others (CelebA levels) are passed as stored."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=train_x.device)  # loss, -rec, kl; no per-batch sync
    order = torch.randperm(len(train_x), generator=shuffle).to(train_x.device)
    if max_steps is not None:
        order = order[: max_steps * batch_size]
    n_batches = 0
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"epoch {epoch}", unit="step", leave=False, disable=not progress, dynamic_ncols=True):
        index = order[start : start + batch_size]
        x = dynamic_binarize(train_x[index].cpu(), shuffle).to(train_x.device) if binary else train_x[index].float()
        loss, parts = model.loss(x, index=index, beta=beta)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss.item()} at epoch {epoch}, batch {n_batches}: the run is stopped; the last good "
                "checkpoint is kept (lower lr, or check the data)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals += torch.stack([loss.detach(), -parts["rec"], parts["kl"]]).double()
        n_batches += 1
    loss, rec, kl = (totals / n_batches).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}


@torch.no_grad()
def evaluate_elbo(model: LatentVariableModel, x_binary: torch.Tensor, batch_size: int) -> dict:
    """Negative ELBO (beta = 1), its reconstruction and KL terms, averaged over binary images."""
    sums = torch.zeros(2, dtype=torch.float64, device=x_binary.device)  # -rec, kl
    for start in range(0, len(x_binary), batch_size):
        t = model.elbo_terms(x_binary[start : start + batch_size].float())
        sums += torch.stack([-t["rec"].double().sum(), t["kl"].double().sum()])
    rec, kl = (sums / len(x_binary)).tolist()
    return {"loss": rec + kl, "rec": rec, "kl": kl}


def _write_tables(out: Path, state: dict) -> None:
    write_text(out / METRICS, _csv(state["history"], METRIC_COLUMNS))
    write_text(out / TIMING, _csv(state["timing"], TIMING_COLUMNS))


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _checkpoint(path, cfg, model, optimizer, shuffle, state) -> None:
    torch_save(
        {
            "trajectory_digest": cfg.trajectory_digest(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": {k: v for k, v in state.items() if k not in ("history", "timing")},
            "history": [[row[c] for c in METRIC_COLUMNS] for row in state["history"]],
            "timing": [[row[c] for c in TIMING_COLUMNS] for row in state["timing"]],
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_shuffle": shuffle.get_state(),
        },
        path,
    )


def _restore(path, cfg, model, optimizer, shuffle) -> dict:
    ckpt = torch_load(path)
    if ckpt["trajectory_digest"] != cfg.trajectory_digest():
        raise ConfigError(
            f"{path} was written by a different config (digest {ckpt['trajectory_digest']}, this one "
            f"{cfg.trajectory_digest()}; only max_epochs, threads, device and eval_batch_size may change between "
            "resumes): train into another --out directory, or delete the old one to start over"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng_torch"])
    if ckpt["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
    shuffle.set_state(ckpt["rng_shuffle"])
    state = dict(ckpt["state"])
    state["history"] = [dict(zip(METRIC_COLUMNS, row)) for row in ckpt["history"]]
    state["timing"] = [dict(zip(TIMING_COLUMNS, row)) for row in ckpt["timing"]]
    return state


def load_run(run_dir: str | Path, which: str = BEST, device: str = "auto", data: ImageDataset | None = None) -> Run:
    """Rebuild a trained model from ``run_dir`` (its best checkpoint by default), in eval mode, prior refreshed."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_file(run_dir / CONFIG)
    dev = pick_device(device)
    data = data if data is not None else load_data(cfg)
    model = build_model(cfg, torch.from_numpy(data.train).to(dev), data.image_shape).to(dev)
    if not (run_dir / which).exists():
        raise FileNotFoundError(f"{run_dir / which} does not exist: train first (python -m evae train)")
    model.load_state_dict(torch_load(run_dir / which, map_location=dev)["model"])
    model.eval()
    model.prior.refresh(model.encode)
    return Run(cfg=cfg, model=model, data=data, device=dev)
