"""Atomic file output: a reader never sees a half-written result, and a crash loses nothing.

A file is written to a temporary ``.<name>.<random>.tmp`` beside it, flushed to disk and renamed over
it. A process killed in between leaves that temporary behind; ``remove_stale_temporaries`` clears
them when a run starts or resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, before_replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the body succeeds.

    ``before_replace(tmp)`` runs once the complete temporary is on disk, just before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the result ordinary permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the ``.<name>.*.tmp`` files that killed writers left in ``folder``; return their names.

    Only for a folder that no other process is writing into (a run folder, when its run starts).
    """
    removed = []
    for tmp in Path(folder).glob(".*.*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return sorted(removed)


def json_text(obj: Any) -> str:
    """``obj`` as the JSON text every result file holds (sorted keys, indented, final newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json_text(obj))


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint without executing pickled code (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
