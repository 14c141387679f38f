"""What every evaluation shares: progress reporting and batched encoding (run folders and results: ``evae.runs``)."""

from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator, TypeVar

import torch
from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)


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
