"""Load a dataset as arrays of flattened images with the paper's splits (docs/protocol.md section 4).

The 28x28 datasets are float32 gray levels in [0, 1] (rows of 784). Their validation and test sets
are also binarised once with a fixed seed; training batches are binarised afresh by the trainer
(`dynamic_binarize`). Exemplars, probe inputs and classifier inputs use the gray levels. CelebA
(`evae.data.celeba`) and its synthetic stand-in (`evae.data.standin`) are uint8 pixel levels,
channel-first, never binarised (``binary=False``).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evae.data.fetch import cache_dir, fetch
from evae.data.registry import DATASETS, DatasetSpec, get_spec
from evae.io import atomic_path

BINARIZE_SEED = 777
SPLIT_SEED = 0
EMBEDDED_NAME = "mnist_subset"
# What each stand-in dataset is (figures name it); an alias of the registry's ``stand_in`` fields
STAND_INS = {spec.name: spec.stand_in for spec in DATASETS.values() if spec.stand_in}


@dataclass(frozen=True)
class ImageDataset:
    """A dataset split into train / validation / test, with its provenance."""

    name: str
    image_shape: tuple[int, int, int]
    train: np.ndarray
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    binary: bool = True
    binarize_seed: int = BINARIZE_SEED
    provenance: dict = field(default_factory=dict)

    @property
    def val_binary(self) -> np.ndarray:
        """Validation inputs as models score them: binarised once (binary datasets), else as stored."""
        return binarize_once(self.val, self.binarize_seed, stream=0) if self.binary else self.val

    @property
    def test_binary(self) -> np.ndarray:
        """Test inputs as models score them: binarised once (binary datasets), else as stored."""
        return binarize_once(self.test, self.binarize_seed, stream=1) if self.binary else self.test

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def binarize_once(x: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Bernoulli draw of gray images, reproducible from (seed, stream); float32 in {0, 1}."""
    rng = np.random.default_rng([seed, stream])
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli draw of a gray-level training batch (called once per minibatch): 1 where a uniform
    draw falls below the gray level. On a CPU these are exactly ``torch.bernoulli(x, generator=generator)``'s
    draws (one float uniform per pixel, from the same stream), at about half its cost.

    The uniforms come from ``generator``'s device (the CPU for the trainer's, so the stream is the same
    whatever device ``x`` is on) and only they travel to ``x``'s device: the images stay where they are.
    """
    device = generator.device if generator is not None else x.device
    uniforms = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device)
    return (uniforms.to(x.device, non_blocking=True) < x).to(x.dtype)


def load_dataset(
    name: str,
    *,
    cache: str | os.PathLike | None = None,
    mirrors: list[str | os.PathLike] | None = None,
    download: bool = True,
    split_seed: int = SPLIT_SEED,
    binarize_seed: int = BINARIZE_SEED,
) -> ImageDataset:
    """Load the registered dataset ``name`` (`evae.data.registry`) with its loader."""
    spec = get_spec(name)
    ds = spec.load_function()(spec, cache=cache, mirrors=mirrors, download=download, split_seed=split_seed)
    if ds.image_shape != spec.image_shape or ds.binary != spec.binary:
        raise ValueError(
            f"dataset {name!r}: its loader {spec.loader} returned {ds.image_shape} images with binary={ds.binary}, "
            f"the registry says {spec.image_shape} with binary={spec.binary}"
        )
    if not ds.binary:
        return ds
    ds.provenance["binarize"] = f"val/test binarised once: numpy default_rng([{binarize_seed}, 0|1]); train dynamic"
    return dataclasses.replace(ds, binarize_seed=binarize_seed)


def colour_dataset(name: str, arrays: dict[str, np.ndarray], provenance: dict) -> ImageDataset:
    """3x64x64 uint8 images per split, without labels (all zero), as the colour model reads them."""
    no_labels = {split: np.zeros(len(a), dtype=np.int64) for split, a in arrays.items()}
    return ImageDataset(
        name=name,
        image_shape=get_spec(name).image_shape,
        train=arrays["train"],
        train_labels=no_labels["train"],
        val=arrays["val"],
        val_labels=no_labels["val"],
        test=arrays["test"],
        test_labels=no_labels["test"],
        binary=False,
        provenance=provenance,
    )


# --- MNIST and Fashion-MNIST ---------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Parse an (optionally gzipped) idx file of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\0\0" or dtype != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_idx(spec: DatasetSpec, split_seed: int, **kwargs) -> ImageDataset:
    """MNIST-format idx files: the first 50,000 training images train, the last 10,000 validate."""
    paths = {f.name.split("-idx")[0]: fetch(spec, f, **kwargs) for f in spec.files}
    x_all = read_idx(paths["train-images"]).reshape(-1, 784)
    y_all = read_idx(paths["train-labels"]).astype(np.int64)
    x_test = read_idx(paths["t10k-images"]).reshape(-1, 784)
    y_test = read_idx(paths["t10k-labels"]).astype(np.int64)
    gray = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return ImageDataset(
        name=spec.name,
        image_shape=(1, 28, 28),
        train=gray(x_all[:50_000]),
        train_labels=y_all[:50_000],
        val=gray(x_all[50_000:]),
        val_labels=y_all[50_000:],
        test=gray(x_test),
        test_labels=y_test,
        provenance={
            "files": {f.name: f"{f.algo}:{f.digest}" for f in spec.files},
            "split": "train = first 50,000 training images, val = last 10,000, test = standard 10,000",
            "labels": "class index (0..9)",
        },
    )


# --- Omniglot ------------------------------------------------------------------------------------


class SplitMismatchError(RuntimeError):
    """A saved split file does not hold the indices its seed gives (edited, corrupt, or another version)."""


_SPLIT_FIX = (
    "results made with it may not be comparable; if the file was damaged, delete it and it is re-created "
    "from the seed on the next load"
)


def _seeded_split(name: str, n: int, n_val: int, seed: int, cache) -> tuple[np.ndarray, np.ndarray, Path]:
    """Shuffle ``n`` indices with ``seed`` and cut off ``n_val``; the indices are saved (and checked)."""
    perm = np.random.default_rng(seed).permutation(n)
    train_idx, val_idx = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    path = cache_dir(cache) / "splits" / f"{name}-seed{seed}.npz"
    if path.exists():
        try:
            with np.load(path) as saved:
                same = np.array_equal(saved["train"], train_idx) and np.array_equal(saved["val"], val_idx)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise SplitMismatchError(f"{path}: unreadable saved split ({type(err).__name__}: {err}); {_SPLIT_FIX}")
        if not same:
            raise SplitMismatchError(
                f"{path}: the saved split indices differ from the split that seed {seed} gives "
                f"({n - n_val} train / {n_val} val of {n}); {_SPLIT_FIX}"
            )
    else:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, train=train_idx, val=val_idx)
    return train_idx, val_idx, path


def load_chardata(spec: DatasetSpec, split_seed: int, **kwargs) -> ImageDataset:
    """The IWAE ``chardata.mat`` (the paper's Omniglot), its training pool split with ``split_seed``."""
    from scipy.io import loadmat

    mat = loadmat(fetch(spec, spec.files[0], **kwargs))

    def images(key: str) -> np.ndarray:
        # Columns hold images in Fortran (column-major) order: transpose each back to row-major.
        cols = mat[key].T.astype(np.float32)
        return np.ascontiguousarray(cols.reshape(-1, 28, 28).transpose(0, 2, 1).reshape(-1, 784))

    x_pool, y_pool = images("data"), mat["target"].argmax(axis=0).astype(np.int64)
    x_test, y_test = images("testdata"), mat["testtarget"].argmax(axis=0).astype(np.int64)
    train_idx, val_idx, split_path = _seeded_split(spec.name, len(x_pool), 1_345, split_seed, kwargs["cache"])
    return ImageDataset(
        name=spec.name,
        image_shape=(1, 28, 28),
        train=x_pool[train_idx],
        train_labels=y_pool[train_idx],
        val=x_pool[val_idx],
        val_labels=y_pool[val_idx],
        test=x_test,
        test_labels=y_test,
        provenance={
            "files": {"chardata.mat": f"git-blob:{spec.files[0].digest}"},
            "split": f"IWAE train pool shuffled with seed {split_seed}: 23,000 train / 1,345 val; IWAE test",
            "split_indices": str(split_path),
            "labels": "alphabet index",
        },
    )


def _ink_28(background: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Raw 105x105 drawings (True = background) as float32 rows of 784: ink = 1, area-downsampled to 28x28.

    Converted in chunks: the whole raw set as float32 would take 1.4 GB.
    """
    ink = torch.from_numpy(~background.reshape(-1, 1, 105, 105))
    small = [F.interpolate(c.float(), size=(28, 28), mode="area") for c in ink.split(chunk)]
    return torch.cat(small).reshape(-1, 784).numpy()


def load_omniglot_raw28(spec: DatasetSpec, split_seed: int, **kwargs) -> ImageDataset:
    """The stand-in built from raw Omniglot drawings (see the provenance's ``split``)."""
    per_file = []
    for f in spec.files:
        with np.load(fetch(spec, f, **kwargs)) as z:
            background = z["images"]  # (chars, 20, 105, 105) bool, True = background
        per_file.append(_ink_28(background).reshape(len(background), 20, 784))
    small = np.concatenate(per_file)
    chars = np.arange(len(small))
    char_of = np.repeat(chars[:, None], 20, axis=1)
    x_pool, y_pool = small[:, :15].reshape(-1, 784), char_of[:, :15].reshape(-1)
    x_test, y_test = small[:, 15:].reshape(-1, 784), char_of[:, 15:].reshape(-1)
    train_idx, val_idx, split_path = _seeded_split(spec.name, len(x_pool), 1_345, split_seed, kwargs["cache"])
    return ImageDataset(
        name=spec.name,
        image_shape=(1, 28, 28),
        train=x_pool[train_idx],
        train_labels=y_pool[train_idx],
        val=x_pool[val_idx],
        val_labels=y_pool[val_idx],
        test=x_test,
        test_labels=y_test.astype(np.int64),
        provenance={
            "files": {f.name: f"{f.algo}:{f.digest}" for f in spec.files},
            "split": f"STAND-IN built from raw Omniglot (not the paper's chardata.mat): ink=1, area-downsampled "
            f"105->28, drawings 1-15 train pool (shuffled with seed {split_seed}: 23,000 train / 1,345 val), "
            "drawings 16-20 test",
            "split_indices": str(split_path),
            "labels": "character index (0..1622)",
        },
    )


# --- The embedded MNIST subset -------------------------------------------------------------------

EMBEDDED_PER_CLASS = {"train": 300, "val": 100, "test": 100}


class EmbeddedSubsetError(RuntimeError):
    """The embedded subset's content does not match the checksum recorded beside it."""


def embedded_content_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the subset's arrays in a fixed order (independent of npz/zip metadata)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_embedded(spec: DatasetSpec, **_) -> ImageDataset:
    """The registry's loader of the embedded subset (no files to fetch)."""
    return load_embedded_subset()


def load_embedded_subset(root: Path | None = None) -> ImageDataset:
    """The small MNIST subset shipped inside the package (see evae/data/embedded/README.md).

    ``root`` is the folder holding ``mnist_subset.npz`` and ``.json`` (default: the package's own).
    """
    root = root or resources.files("evae.data") / "embedded"
    fix = "rebuild it with `python -m evae.data.build_embedded` (needs the MNIST files) or reinstall the package"
    meta = json.loads((root / "mnist_subset.json").read_text())
    try:
        with resources.as_file(root / "mnist_subset.npz") as path, open(path, "rb") as f, np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise EmbeddedSubsetError(f"embedded MNIST subset in {root} is unreadable ({type(err).__name__}: {err}); {fix}")
    digest = embedded_content_digest(arrays)
    if digest != meta["sha256_content"]:
        raise EmbeddedSubsetError(
            f"embedded MNIST subset in {root} is corrupt: content sha256 {digest}, expected "
            f"{meta['sha256_content']} (recorded in mnist_subset.json); {fix}"
        )
    gray = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return ImageDataset(
        name=EMBEDDED_NAME,
        image_shape=(1, 28, 28),
        train=gray(arrays["x_train"]),
        train_labels=arrays["y_train"].astype(np.int64),
        val=gray(arrays["x_val"]),
        val_labels=arrays["y_val"].astype(np.int64),
        test=gray(arrays["x_test"]),
        test_labels=arrays["y_test"].astype(np.int64),
        provenance={"files": {"mnist_subset.npz": f"sha256-content:{digest}"}, "split": meta["rule"],
                    "labels": "digit class (0..9)"},
    )
