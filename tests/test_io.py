"""Atomic output and safe checkpoint loading (evae/io.py)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from evae.io import atomic_path, torch_load, torch_save, write_json, write_text


def test_atomic_path_replaces_the_file_only_when_the_body_succeeds(tmp_path):
    target = tmp_path / "out" / "result.txt"  # the parent is created on demand
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target  # same folder, so the rename is atomic
        tmp.write_text("first")
        assert not target.exists()  # readers never see the file before the body has finished
    assert target.read_text() == "first"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # ordinary permissions, not mkstemp's 0600

    with atomic_path(target) as tmp:
        tmp.write_text("second")
        assert target.read_text() == "first"
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.txt"]


def test_a_failing_body_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]

    fresh = tmp_path / "never.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(fresh) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]


def test_write_json_round_trips_numpy_scalars_and_paths(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"nll": np.float64(-80.25), "epochs": np.int64(3), "run": Path("results/x")})
    assert json.loads(target.read_text()) == {"epochs": 3, "nll": -80.25, "run": "results/x"}
    assert target.read_text().endswith("\n")


def test_write_json_refuses_unserialisable_values_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_text(target, "{}\n")
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        write_json(target, {"bad": object()})
    assert target.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_torch_save_and_load_round_trip(tmp_path):
    state = {"weight": torch.randn(3, 4, dtype=torch.float64), "step": 7, "name": "vae"}
    torch_save(state, tmp_path / "ckpt.pt")
    loaded = torch_load(tmp_path / "ckpt.pt")
    assert torch.equal(loaded["weight"], state["weight"]) and loaded["step"] == 7 and loaded["name"] == "vae"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


class _Payload:
    """Unpickling this runs os.mkdir(marker): what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_torch_load_refuses_pickled_code(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch_load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.is_dir()
