"""Find a verified copy of a dataset file: local cache, then local mirrors, then the network.

A file is used only after its content checksum matches the registry; a corrupt or truncated copy
is reported and skipped, never returned. Downloads go to a temporary file that is verified and
then renamed into the cache, so an interrupted download leaves nothing half-written behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import time
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from evae.data.registry import DatasetSpec, FileSpec
from evae.io import atomic_path

MIRROR_ENV = "EVAE_DATA_MIRROR"
CACHE_ENV = "EVAE_DATA_DIR"
DEFAULT_CACHE = Path("resources") / "data"
_CHUNK = 1 << 20


class DatasetUnavailableError(FileNotFoundError):
    """No verified copy of a dataset file could be found or downloaded."""


@dataclass(frozen=True)
class Attempt:
    place: str
    outcome: str


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, else ``$EVAE_DATA_DIR``, else ``resources/data``."""
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def mirror_dirs(mirrors: list[str | os.PathLike] | None = None) -> list[Path]:
    """Mirror roots: the argument, else the ``os.pathsep``-separated ``$EVAE_DATA_MIRROR``."""
    if mirrors is None:
        mirrors = [m for m in os.environ.get(MIRROR_ENV, "").split(os.pathsep) if m]
    return [Path(m) for m in mirrors]


def content_digest(path: Path, spec: FileSpec) -> tuple[str, int]:
    """Checksum and size of the file's content (decompressed first if the spec says gzip)."""
    if spec.algo == "git-blob":
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        h = hashlib.new(spec.algo)
    size = 0
    opener = gzip.open if spec.gzip else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def verify(path: Path, spec: FileSpec) -> str | None:
    """``None`` if ``path`` holds the expected content, else why not."""
    try:
        digest, size = content_digest(path, spec)
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a corrupt deflate stream
        kind, module = type(err).__name__, type(err).__module__
        return f"unreadable ({kind if module == 'builtins' else f'{module}.{kind}'}: {err})"
    if spec.size is not None and size != spec.size:
        return f"wrong size: expected {spec.size} bytes of content, found {size} (truncated or wrong file)"
    if digest != spec.digest:
        return f"checksum mismatch: expected {spec.algo} {spec.digest}, found {digest}"
    return None


def fetch(
    dataset: DatasetSpec,
    file: FileSpec,
    *,
    cache: str | os.PathLike | None = None,
    mirrors: list[str | os.PathLike] | None = None,
    download: bool = True,
    retries: int = 3,
) -> Path:
    """Return the path of a verified copy of ``file``; raise `DatasetUnavailableError` if none exists."""
    attempts: list[Attempt] = []
    cached = cache_dir(cache) / dataset.folder / file.name
    for candidate in [cached] + [m / dataset.folder / file.name for m in mirror_dirs(mirrors)]:
        if not candidate.exists():
            attempts.append(Attempt(str(candidate), "missing"))
            continue
        problem = verify(candidate, file)
        if problem is None:
            return candidate
        attempts.append(Attempt(str(candidate), problem))
    if download:
        for url in file.urls:
            problem = _download(url, cached, file, retries)
            if problem is None:
                return cached
            attempts.append(Attempt(url, problem))
    raise DatasetUnavailableError(_explain(dataset, file, attempts, download))


def _download(url: str, dest: Path, spec: FileSpec, retries: int) -> str | None:
    problem = "not tried"
    for attempt in range(1, retries + 1):
        try:
            with atomic_path(dest) as tmp:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {spec.name}") as bar:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            bar.update(len(chunk))
                problem = verify(tmp, spec)
                if problem is not None:
                    raise _Rejected(problem)
            return None
        except _Rejected as err:
            return f"downloaded but rejected: {err}"
        except (OSError, http.client.HTTPException) as err:  # HTTPException: e.g. IncompleteRead
            problem = f"download failed after {attempt} attempt(s): {err}"
            if attempt < retries:
                time.sleep(min(2**attempt, 30))
    return problem


class _Rejected(Exception):
    pass


def _explain(dataset: DatasetSpec, file: FileSpec, attempts: list[Attempt], download: bool) -> str:
    lines = [
        f"dataset {dataset.name!r}: no verified copy of {file.name!r}.",
        f"  expected content {file.algo} {file.digest}"
        + (f", {file.size} bytes" + (" after gunzip" if file.gzip else "") if file.size else ""),
        "  looked in:",
        *[f"    - {a.place}: {a.outcome}" for a in attempts],
    ]
    if not file.urls:
        lines.append("  this file has no public download URL")
    elif not download:
        lines += ["  downloads were disabled; the file's URLs:", *[f"    - {url}" for url in file.urls]]
    lines += [
        f"  how to get it: {dataset.how_to_get}.",
        f"  The cache root is ${CACHE_ENV} (default {DEFAULT_CACHE}); mirror roots are listed in "
        f"${MIRROR_ENV} (separated by '{os.pathsep}'), each laid out as <root>/{dataset.folder}/{file.name}.",
    ]
    return "\n".join(lines)

