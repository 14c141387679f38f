"""What every evaluation shares: the provenance of the trained run, progress reporting, batched encoding."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch
from tqdm import tqdm

from evae.train.trainer import BEST, CONFIG, SUMMARY

T = TypeVar("T")
log = logging.getLogger(__name__)


def run_provenance(run_dir: str | Path) -> dict:
    """The trained run a number comes from: its directory, config, config digest, epochs and checkpoint."""
    run_dir = Path(run_dir)
    path = run_dir / SUMMARY
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: {run_dir} is not a finished training run (python -m evae train --out {run_dir})"
        )
    summary = json.loads(path.read_text())
    return {
        "dir": str(run_dir),
        "config": summary["config"],
        "config_digest": summary["config_digest"],
        "config_file": str(run_dir / CONFIG),
        "checkpoint": BEST,
        "epochs_trained": summary["epochs_trained"],
        "best_epoch": summary["best_epoch"],
        "stopped": summary["stopped"],
        "train_seed": summary["config"]["seed"],
    }


def track(items: Iterable[T], total: int, desc: str, enabled: bool, every: float = 60.0) -> Iterator[T]:
    """A tqdm bar when ``enabled``; otherwise a log line with count, rate and ETA every ``every`` seconds."""
    if enabled:
        yield from tqdm(items, total=total, desc=desc, dynamic_ncols=True)
        return
    start = last = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every or i == total:
            rate = i / (now - start)
            log.info("%s: %d/%d (%.2f/s, ETA %.0fs)", desc, i, total, rate, (total - i) / rate if rate > 0 else 0.0)
            last = now


@torch.no_grad()
def encoder_means(model, images: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """Means of q(top latent | x) for gray images [n, 784] (never samples), in batches."""
    return torch.cat([model.encode(images[i : i + batch])[0] for i in range(0, len(images), batch)])
