"""The run folder and evaluation results: the one module that writes and reads them.

A run folder holds::

    config.yaml     the TrainConfig (rewritten at every start)
    checkpoint.pt   the state after the last completed epoch, to resume from
    checkpoint.prev.pt  the checkpoint it replaced: resumed from, with a warning, when checkpoint.pt is damaged
    best.pt         the weights of the best validation epoch
    metrics.csv     one row per epoch (METRIC_COLUMNS); timing.csv: wall-clock seconds per epoch
    summary.json    written last, when the run has finished: config, digests, stop reason, provenance
    checksums.json  the SHA-256 of each (evae.checksums)

An evaluation result is a JSON file carrying the provenance of its run, data and environment; the
NLL's per-image values sit beside it (``<stem>.per_image.npz``). Every file is written through
``evae.checksums`` and verified whenever it is read: a changed, truncated, deleted or unreadable file
raises ``DamagedFileError``, and a file of another config ``ConfigError``, each naming the file and
what to do.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from evae import checksums
from evae.config import ConfigError, TrainConfig
from evae.data import ImageDataset, load_dataset
from evae.io import remove_stale_temporaries
from evae.models import LatentVariableModel, build_model
from evae.provenance import environment, pick_device

log = logging.getLogger(__name__)

CHECKPOINT, BEST, SUMMARY, CONFIG = "checkpoint.pt", "best.pt", "summary.json", "config.yaml"
PREVIOUS = "checkpoint.prev.pt"
METRICS, TIMING = "metrics.csv", "timing.csv"
METRIC_COLUMNS = ("epoch", "beta", "train_loss", "train_rec", "train_kl", "val_loss", "val_rec", "val_kl", "prior_variance")
TIMING_COLUMNS = ("epoch", "steps_seconds", "eval_seconds", "epoch_seconds", "wall_seconds")


def _advice(path: Path) -> str:
    """What to do about a damaged file of a run folder."""
    run = path.parent
    if path.name in (CHECKPOINT, PREVIOUS):
        return (f"No usable training state is left ({run / CHECKPOINT}, and {run / PREVIOUS}, the one it replaced, "
                f"are damaged or missing): delete both to train this run again from epoch 1 (same seed, same "
                "result), or restore them from a good copy.")
    if path.name == BEST:
        return (f"The best weights cannot be rebuilt from the other files: restore {path} from a good copy, or "
                f"delete the run folder {run} and train the run again.")
    also = "" if path.name == SUMMARY else f" and {run / SUMMARY}"
    return (f"Restore it from a good copy, or delete {path}{also} and train again with the run's config: the "
            f"trainer rewrites {'them' if also else 'it'} (from {CHECKPOINT} when it is kept, else by training "
            "again).")


def run_folder(path: str | Path) -> Path:
    """The run folder named by ``path``: the folder itself, or its ``summary.json`` (a Snakemake input)."""
    path = Path(path)
    return path.parent if path.name == SUMMARY else path


# --- writing a run -----------------------------------------------------------------------------------


def start(out: str | Path) -> Path:
    """Create the run folder ``out`` (or keep it) and clear the temporaries that killed writers left there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(out)
    if stale:
        log.info("%s: removed %d stale temporary file(s) of interrupted writes: %s", out, len(stale), ", ".join(stale))
    return out


def write_config(out: Path, cfg: TrainConfig) -> None:
    checksums.write_text(out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=True))


def write_tables(out: Path, history: list[dict], timing: list[dict]) -> None:
    checksums.write_all(_tables(out, history, timing))


def save_epoch(out: Path, checkpoint: dict, history: list[dict], timing: list[dict], best: dict | None = None) -> None:
    """An epoch's files, renamed in this order: the best weights (if ``best``), the checkpoint it replaces
    (as ``checkpoint.prev.pt``, if it is sound), the checkpoint, the tables.

    The order keeps a kill harmless: a checkpoint never names a best epoch whose weights are not in
    place, the previous checkpoint is in place before the new one replaces it, and tables lagging the
    checkpoint are rewritten from it on resume.
    """
    best_file = [(out / BEST, checksums.torch_writer(best))] if best is not None else []
    previous = _sound_checkpoint(out / CHECKPOINT)
    previous_file = [(out / PREVIOUS, lambda tmp: tmp.write_bytes(previous))] if previous is not None else []
    checkpoint_file = (out / CHECKPOINT, checksums.torch_writer(checkpoint))
    checksums.write_all([*best_file, *previous_file, checkpoint_file, *_tables(out, history, timing)])


def _sound_checkpoint(path: Path) -> bytes | None:
    """The bytes of the checkpoint ``path`` if it exists and matches its record (a damaged one is not kept)."""
    if not path.exists():
        return None
    try:
        return checksums.read_bytes(path, "")
    except checksums.DamagedFileError as err:
        log.warning("%s It is not kept as %s.", str(err).rstrip(), PREVIOUS)
        return None


def best_weights(cfg: TrainConfig, model: torch.nn.Module, epoch: int, val_loss: float) -> dict:
    """What best.pt holds: the weights, their epoch and validation loss, and the trajectory they belong to."""
    return {"trajectory_digest": cfg.trajectory_digest(), "model": model.state_dict(), "epoch": epoch,
            "val_loss": val_loss}


def write_summary(out: Path, summary: dict) -> None:
    checksums.write_json(out / SUMMARY, summary)


# --- reading a run -----------------------------------------------------------------------------------


def read_summary(run_dir: str | Path) -> dict:
    """The summary of a finished run; ``FileNotFoundError`` when the run has not finished."""
    run_dir = run_folder(run_dir)
    path = run_dir / SUMMARY
    try:
        return checksums.read_json(path, _advice(path))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist: {run_dir} is not a finished training run (python -m evae train --out {run_dir})"
        ) from None


def read_config(run_dir: str | Path) -> TrainConfig:
    path = run_folder(run_dir) / CONFIG
    return TrainConfig.from_dict(checksums.parse(path, yaml.safe_load, "YAML", _advice(path)))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """metrics.csv as rows of floats (``epoch`` an int)."""
    path = run_folder(run_dir) / METRICS

    def rows(data: bytes) -> list[dict]:
        parsed = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(data.decode()))]
        if not parsed or set(parsed[0]) != set(METRIC_COLUMNS):
            raise ValueError(f"expected the columns {METRIC_COLUMNS} and at least one row")
        return [{**row, "epoch": int(row["epoch"])} for row in parsed]

    return checksums.parse(path, rows, "a metrics table", _advice(path))


def load_checkpoint(out: Path, cfg: TrainConfig) -> dict | None:
    """The resume state in ``out`` (None when there is none), checked to come from ``cfg``'s trajectory; its
    ``file`` names the file it was read from.

    A damaged checkpoint.pt falls back, with a warning, to checkpoint.prev.pt (the checkpoint it replaced, one
    epoch earlier); ``DamagedFileError`` when that is damaged or missing too. A deleted checkpoint.pt means
    training again from epoch 1, as its advice says.
    """
    path = out / CHECKPOINT
    if not path.exists():
        if checksums.is_recorded(path):
            log.warning("%s was deleted: training this run again from epoch 1", path)
        return None
    try:
        ckpt = checksums.torch_load(path, "")
    except checksums.DamagedFileError as err:
        found, ckpt = str(err).rstrip(), _previous_checkpoint(out)
        if ckpt is None:
            raise type(err)(f"{found} {_advice(path)}") from None
        path = out / PREVIOUS
        log.warning("%s Resuming from %s instead (epoch %d): one epoch is trained again.", found, path,
                    ckpt["state"]["epoch"])
    _same_trajectory(path, ckpt.get("trajectory_digest"), cfg)
    return {**ckpt, "file": path.name}


def _previous_checkpoint(out: Path) -> dict | None:
    """checkpoint.prev.pt, verified and loaded; None when it is missing or damaged."""
    path = out / PREVIOUS
    if not path.exists():
        return None
    try:
        return checksums.torch_load(path, _advice(path))
    except checksums.DamagedFileError:
        return None


def verify(path: Path) -> None:
    """Check ``path`` of a run folder against its record without parsing it."""
    checksums.read_bytes(path, _advice(path))


def _same_trajectory(path: Path, found: str | None, cfg: TrainConfig) -> None:
    if found is not None and found != cfg.trajectory_digest():
        raise ConfigError(
            f"{path} was written by a different config (digest {found}, this one {cfg.trajectory_digest()}; only "
            "max_epochs, threads, device and eval_batch_size may change between resumes): train into another --out "
            "directory, or delete the old one to start over"
        )


@dataclass
class Run:
    """A trained model ready to use, with the data and config it was trained with and its summary."""

    dir: Path
    cfg: TrainConfig
    summary: dict
    model: LatentVariableModel
    data: ImageDataset
    device: torch.device


def load_data(cfg: TrainConfig) -> ImageDataset:
    """The dataset of ``cfg``, cut to its ``max_train_images`` / ``max_val_images``."""
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


def load_run(run_dir: str | Path, which: str = BEST, device: str | None = None, data: ImageDataset | None = None) -> Run:
    """Rebuild a finished run's model (its best weights by default), in eval mode, prior refreshed.

    ``run_dir`` is the run folder or its summary.json; ``device`` the device to compute on (None: the run's
    config's, ``auto`` unless the profile says otherwise); ``data`` an already loaded dataset to build it with.
    """
    run_dir = run_folder(run_dir)
    summary = read_summary(run_dir)
    cfg = read_config(run_dir)
    if TrainConfig.from_dict(summary["config"]).digest() != cfg.digest():
        raise ConfigError(
            f"{run_dir / CONFIG} and {run_dir / SUMMARY} belong to different configs (digests {cfg.digest()} and "
            f"{summary['config_digest']}): one was copied from another run. Delete the run folder {run_dir} and "
            "train the run again."
        )
    dev = pick_device(device or cfg.device)
    data = data if data is not None else load_data(cfg)
    model = build_model(cfg, torch.from_numpy(data.train).to(dev), data.image_shape).to(dev)
    path = run_dir / which
    try:
        weights = checksums.torch_load(path, _advice(path), map_location=dev)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: train first (python -m evae train)") from None
    _same_trajectory(path, weights.get("trajectory_digest"), cfg)
    model.load_state_dict(weights["model"])
    model.eval()
    model.prior.refresh(model.encode)
    return Run(dir=run_dir, cfg=cfg, summary=summary, model=model, data=data, device=dev)


# --- evaluation results ------------------------------------------------------------------------------


def provenance(data: ImageDataset, device: torch.device | str | None) -> dict:
    """Where a number came from besides its run: the data and the code, libraries and machine."""
    return {"data": {"name": data.name, "sizes": data.sizes(), **data.provenance}, "environment": environment(device)}


def run_provenance(run: Run) -> dict:
    """The trained run a number comes from: its folder, config, config digest, epochs, the segments it was trained
    in (None for runs trained before runs recorded them) and checkpoint."""
    summary = run.summary
    return {
        "dir": str(run.dir),
        "config": summary["config"],
        "config_digest": summary["config_digest"],
        "config_file": str(run.dir / CONFIG),
        "checkpoint": BEST,
        "epochs_trained": summary["epochs_trained"],
        "best_epoch": summary["best_epoch"],
        "stopped": summary["stopped"],
        "segments": summary.get("segments"),
        "train_seed": summary["config"]["seed"],
    }


def write_result(out: str | Path, result: dict, run: Run | None, data: ImageDataset, device, started: float) -> dict:
    """Write ``result`` to ``out`` with its provenance (run, data, environment, wall seconds since ``started``)."""
    result = {**result, "run": run_provenance(run) if run is not None else None, **provenance(data, device),
              "wall_seconds": time.perf_counter() - started}
    checksums.write_json(out, result)
    return result


def read_result(path: str | Path) -> dict:
    """A verified evaluation result."""
    path = Path(path)
    return checksums.read_json(path, f"Delete {path} and evaluate again (python -m evae or snakemake re-creates it).")


def per_image_path(result_path: str | Path) -> Path:
    path = Path(result_path)
    return path.with_name(path.stem + ".per_image.npz")


def write_per_image(result_path: str | Path, **arrays: np.ndarray) -> Path:
    """Per-image values of the result ``result_path``, beside it; returns their path."""
    path = per_image_path(result_path)
    checksums.save_npz(path, **arrays)
    return path


def read_per_image(result_path: str | Path) -> dict[str, np.ndarray]:
    path = per_image_path(result_path)
    return checksums.load_npz(path, f"Delete {path} and {result_path}, and evaluate again.")


def _tables(out: Path, history: list[dict], timing: list[dict]) -> list:
    return [(out / METRICS, checksums.text_writer(_csv(history, METRIC_COLUMNS))),
            (out / TIMING, checksums.text_writer(_csv(timing, TIMING_COLUMNS)))]


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
