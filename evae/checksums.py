"""Checksum records: every file the harness writes is recorded with its SHA-256, and checked when read.

Each folder the harness writes into holds one record, ``checksums.json``::

    {"format": 1, "files": {"best.pt": {"sha256": "9f2c...", "bytes": 2871, "recorded": "when written"}, ...}}

Writing ``f`` (``write_all`` and the writers built on it): the complete temporary copy is hashed,
its hash is added to f's entry as ``pending``, the copy is renamed over ``f``, and the pending hash
becomes the entry's (for files written together, one update marks all and one commits all). A process killed between these steps leaves the old file with its hash still
recorded, or the new file with its hash pending; a reader accepts a file matching either, so a kill
never makes a good file look damaged, and a damaged file matches neither.

Concurrency: processes may write into one folder at once (the ``nll`` and ``knn`` jobs of a run share
an evaluation folder; ``augment`` jobs of different seeds share theirs). Every change to a record is a
read-modify-write under an exclusive ``fcntl.flock`` of ``.checksums.lock`` beside it, and the record
is replaced atomically, so writers never lose each other's entries and readers need no lock: they see
the record from before or after a change. One record per folder (rather than one beside each file)
keeps a folder's state in one place; the lock costs two short critical sections per file written.
The lock file is locked, not the record, because the record is replaced by rename.

Files written before records existed are recorded by ``record_existing`` (``python -m evae
record-checksums``), marked ``"recorded": "after the fact"``: that vouches that nothing changed since,
not that the files were sound when recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from evae.io import atomic_path, json_text

RECORD, LOCK = "checksums.json", ".checksums.lock"
FORMAT = 1
WHEN_WRITTEN, AFTER_THE_FACT = "when written", "after the fact"
RECORD_COMMAND = "python -m evae record-checksums"
DEFAULT_ADVICE = "Restore it from a good copy, or delete it and re-create it with the command that wrote it."


class DamagedFileError(Exception):
    """A file disagrees with its folder's checksum record (changed, truncated, missing), or cannot be read."""


class MissingRecordError(DamagedFileError):
    """A folder has no checksum record, so its files cannot be verified."""


def digest(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


# --- writing -----------------------------------------------------------------------------------------


def write_all(writes: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write files of one folder atomically, in the order given, each ``(path, write(tmp))``, recording them.

    One record update marks all their hashes pending and one commits them (each update costs an fsync).
    """
    writes = [(Path(path), write) for path, write in writes]
    folder = writes[0][0].parent
    if any(path.parent != folder for path, _ in writes):
        raise ValueError(f"write_all writes into one folder; got {[str(p) for p, _ in writes]}")
    written: dict[str, dict] = {}
    tmps: dict[Path, Path] = {}

    def mark_pending(_: Path) -> None:  # before the first rename, once every temporary is complete
        if not written:
            written.update({path.name: digest(tmps[path].read_bytes()) for path, _ in writes})
            with _editing(folder) as files:
                for name, found in written.items():
                    files.setdefault(name, {"recorded": WHEN_WRITTEN})["pending"] = found

    with contextlib.ExitStack() as stack:
        for path, _ in reversed(writes):  # the last entered is renamed first
            tmps[path] = stack.enter_context(atomic_path(path, before_replace=mark_pending))
        for path, write in writes:
            write(tmps[path])
    with _editing(folder) as files:
        for name, found in written.items():
            files[name] = {**found, "recorded": WHEN_WRITTEN}


def write_text(path: str | os.PathLike, text: str) -> None:
    write_all([(path, text_writer(text))])


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json_text(obj))


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    write_all([(path, torch_writer(obj))])


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_all([(path, write)])


def text_writer(text: str) -> Callable[[Path], None]:
    return lambda tmp: tmp.write_text(text)


def torch_writer(obj: Any) -> Callable[[Path], None]:
    return lambda tmp: torch.save(obj, tmp)


# --- reading -----------------------------------------------------------------------------------------


def read_bytes(path: str | os.PathLike, advice: str = DEFAULT_ADVICE) -> bytes:
    """The bytes of ``path``, after checking them against its folder's record.

    Raises ``FileNotFoundError`` for a file never written, ``MissingRecordError`` for a folder without a
    record, and ``DamagedFileError`` (naming the file, what was recorded and found, and ``advice``) for
    a file that was changed, truncated or deleted since it was written, or is not in the record.
    """
    path = Path(path)
    files = _load(path.parent)
    entry = None if files is None else files.get(path.name)
    if not path.is_file():
        if entry is None or "sha256" not in entry:  # never written (or killed before its first rename)
            raise FileNotFoundError(f"{path} does not exist")
        raise DamagedFileError(
            f"{path} is missing: {path.parent / RECORD} records it ({entry['bytes']} bytes, written "
            f"{entry['recorded']}), but it has been deleted or moved. {advice}"
        )
    if files is None:
        raise MissingRecordError(
            f"{path} cannot be verified: its folder has no checksum record ({path.parent / RECORD}), so it was "
            f"written before records existed, or copied without its record. If you trust the folder's files as "
            f"they are, record them once with `{RECORD_COMMAND} {path.parent}`; otherwise re-create them."
        )
    if entry is None:
        raise DamagedFileError(
            f"{path} is not in its folder's checksum record ({path.parent / RECORD}): the harness did not write "
            f"it there (copied or edited in?). If you trust it, record it with `{RECORD_COMMAND} {path.parent}`; "
            f"otherwise delete it. {advice}"
        )
    data = path.read_bytes()
    found = digest(data)
    if not _matches(found, entry):  # a writer may have replaced the file since the record was read
        entry = (_load(path.parent) or {}).get(path.name, entry)
    if _matches(found, entry):
        return data
    raise DamagedFileError(f"{path} is damaged: {_difference(found, entry)}. {advice}")


def is_recorded(path: str | os.PathLike) -> bool:
    """Whether ``path``'s folder records a completed write of it."""
    path = Path(path)
    return "sha256" in ((_load(path.parent) or {}).get(path.name) or {})


def read_text(path: str | os.PathLike, advice: str = DEFAULT_ADVICE) -> str:
    return parse(path, lambda data: data.decode(), "UTF-8 text", advice)


def read_json(path: str | os.PathLike, advice: str = DEFAULT_ADVICE) -> Any:
    return parse(path, json.loads, "JSON", advice)


def torch_load(path: str | os.PathLike, advice: str = DEFAULT_ADVICE, map_location="cpu") -> Any:
    """A verified checkpoint, loaded without executing pickled code (``weights_only=True``)."""
    return parse(path, lambda data: torch.load(io.BytesIO(data), map_location=map_location, weights_only=True),
                 "a torch checkpoint", advice)


def load_npz(path: str | os.PathLike, advice: str = DEFAULT_ADVICE) -> dict[str, np.ndarray]:
    def arrays(data: bytes) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    return parse(path, arrays, "numpy arrays", advice)


def parse(path: str | os.PathLike, reader, what: str, advice: str = DEFAULT_ADVICE) -> Any:
    """``reader(bytes)`` of the verified ``path``; a failure to parse becomes a ``DamagedFileError``."""
    data = read_bytes(path, advice)
    try:
        return reader(data)
    except Exception as err:  # noqa: BLE001 (any parse failure of verified bytes means the same thing)
        raise DamagedFileError(
            f"{path} matches its checksum record but cannot be read as {what} ({type(err).__name__}: {err}): it "
            f"was already damaged when it was recorded. {advice}"
        ) from err


# --- recording existing files ------------------------------------------------------------------------


def record_existing(folder: str | os.PathLike) -> dict[str, list[str]]:
    """Record the checksums of ``folder``'s files as they are, marked as recorded after the fact.

    Files already recorded are verified instead (a damaged one raises ``DamagedFileError``, and nothing
    is recorded). Hidden files and the record itself are skipped. Returns the names recorded and verified.
    """
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != RECORD)
    utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    done = {"recorded": [], "verified": []}
    with _editing(folder) as files:
        for name in names:
            found = digest((folder / name).read_bytes())
            if name not in files:
                files[name] = {**found, "recorded": AFTER_THE_FACT, "utc": utc}
                done["recorded"].append(name)
            elif _matches(found, files[name]):
                files[name] = {**found, "recorded": files[name]["recorded"], **_utc(files[name])}
                done["verified"].append(name)
            else:
                raise DamagedFileError(
                    f"{folder / name} is damaged: {_difference(found, files[name])}; nothing was recorded. "
                    "Restore it from a good copy, or delete it and re-create it with the command that wrote it."
                )
    return done


def record_tree(tops) -> Iterator[tuple[Path, dict[str, list[str]]]]:
    """``record_existing`` on every folder at or below each of ``tops`` that holds files (hidden folders and
    files skipped); yields each folder with what was recorded and verified."""
    for top in map(Path, tops):
        if not top.is_dir():
            raise FileNotFoundError(f"{top} is not a folder")
        for folder in sorted({Path(d) for d, _, files in os.walk(top)
                              if any(not f.startswith(".") and f != RECORD for f in files)}):
            if not any(part.startswith(".") for part in folder.relative_to(top).parts):
                yield folder, record_existing(folder)


# --- the record itself -------------------------------------------------------------------------------


def _load(folder: Path) -> dict | None:
    """The ``files`` of ``folder``'s record, or None when it has none."""
    path = folder / RECORD
    try:
        record = json.loads(path.read_bytes())
        files = record["files"]
        if record.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
        return files
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        raise DamagedFileError(
            f"the checksum record {path} is unreadable ({type(err).__name__}: {err}), so no file of {folder} can be "
            f"verified. Restore it from a good copy; or, if you trust every file of the folder, delete it and record "
            f"them again with `{RECORD_COMMAND} {folder}`."
        ) from None


@contextlib.contextmanager
def _editing(folder: Path) -> Iterator[dict]:
    """The record's ``files`` to change in place, under the folder's lock; written back atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        files = _load(folder) or {}
        yield files
        with atomic_path(folder / RECORD) as tmp:
            tmp.write_text(json_text({"format": FORMAT, "files": files}))


def _matches(found: dict, entry: dict) -> bool:
    """Whether ``found`` is the file's recorded version, or the one being written when a writer stopped."""
    return found["sha256"] in (entry.get("sha256"), entry.get("pending", {}).get("sha256"))


def _utc(entry: dict) -> dict:
    return {"utc": entry["utc"]} if "utc" in entry else {}


def _difference(found: dict, entry: dict) -> str:
    when = "recorded after the fact" if entry["recorded"] == AFTER_THE_FACT else "recorded when it was written"
    entry = entry if "sha256" in entry else entry["pending"]
    if found["bytes"] < entry["bytes"]:
        return f"it is truncated: {found['bytes']} bytes where {entry['bytes']} were {when}"
    return (f"its SHA-256 is {found['sha256'][:16]}... ({found['bytes']} bytes), but {entry['sha256'][:16]}... "
            f"({entry['bytes']} bytes) was {when}; it has changed since")
