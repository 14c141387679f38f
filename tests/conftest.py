"""Shared fixtures: the local dataset mirror, one torch thread per test process; the epoch of a run's checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from evae.io import torch_load

REPO = Path(__file__).resolve().parent.parent
_SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(1)


def mirror_root() -> Path | None:
    """The first mirror root in $EVAE_DATA_MIRROR, else ../shared/data beside the repo; None if neither exists."""
    candidates = [Path(p) for p in os.environ.get("EVAE_DATA_MIRROR", "").split(os.pathsep) if p]
    candidates.append(_SHARED_DATA)
    return next((p for p in candidates if p.is_dir()), None)


@pytest.fixture
def shared_data() -> Path:
    """The verified local dataset copies (laid out like ../shared/data); skips when absent."""
    root = mirror_root()
    if root is None:
        pytest.skip("no dataset mirror: set EVAE_DATA_MIRROR or put ../shared/data beside the repo")
    return root


@pytest.fixture
def isolated_data(tmp_path, monkeypatch) -> Path:
    """An empty dataset cache and no mirrors, so nothing outside the test is found or written."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EVAE_DATA_DIR", str(cache))
    monkeypatch.delenv("EVAE_DATA_MIRROR", raising=False)
    return cache


def checkpoint_epoch(run_dir: Path) -> int:
    """The last completed epoch a run folder's checkpoint.pt holds (0 before the first): what training resumes
    from. The file is replaced by an atomic rename, so a read while the run writes sees a whole one."""
    try:
        return torch_load(run_dir / "checkpoint.pt")["state"]["epoch"]
    except FileNotFoundError:
        return 0
