"""CelebA at 64x64 (docs/protocol.md section 3): aligned images, centre crop 140, resize to 64x64, official split.

Images are decoded once and cached as one compact uint8 array (flattened channel-first, 12,288
bytes an image) beside the source files' checksums; the loader returns uint8 arrays and the model
dequantises them to (x + 0.5) / 256. Sources, in the order tried for each folder of the cache and
the mirrors: ``img_align_celeba.zip`` (the canonical archive, md5-verified) or an extracted
``img_align_celeba/`` folder, and ``list_eval_partition.txt`` (md5-verified).

``celeba_sample`` is the same pipeline on the first 32 images only (folder ``celeba-sample/``, as
../shared/data has it), split 24 / 4 / 4 in file order because all 32 are official training
images: for smoke runs and tests, never for numbers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from evae.data.fetch import DatasetUnavailableError, cache_dir, fetch, mirror_dirs
from evae.data.datasets import ImageDataset, colour_dataset
from evae.data.registry import DatasetSpec, get_spec
from evae.io import atomic_path

log = logging.getLogger(__name__)

CROP, SIZE = 140, 64
IMAGE_SHAPE = (3, SIZE, SIZE)
SAMPLE_IMAGES = 32
SAMPLE_SPLIT = (24, 4, 4)
# sha256 over the bytes of 000001.jpg .. 000032.jpg in order (the aligned JPEGs of img_align_celeba.zip)
SAMPLE_IMAGES_SHA256 = "0100fae87c78e3981cd30cb7ce71c87988684feec8fd6532cd6d527844e8b298"
_CACHE_VERSION = 1  # bump when the preprocessing changes


def preprocess(image: Image.Image) -> np.ndarray:
    """Centre crop 140x140 (offsets rounded as torchvision's CenterCrop does), bilinear resize to
    64x64 (Pillow, as torchvision's Resize on PIL images); uint8, channel-first, flattened."""
    image = image.convert("RGB")
    w, h = image.size
    top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
    image = image.crop((left, top, left + CROP, top + CROP)).resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).reshape(-1)


def read_partition(path: Path) -> tuple[list[str], np.ndarray]:
    """Image names and their official split (0 train, 1 valid, 2 test), in file order."""
    names, splits = [], []
    for line in path.read_text().split("\n"):
        if line.strip():
            name, split = line.split()
            names.append(name)
            splits.append(int(split))
    return names, np.asarray(splits, dtype=np.int8)


class _ImageSource:
    """Reads ``img_align_celeba/<name>`` from the archive or from an extracted folder."""

    def __init__(self, zip_path: Path | None, folder: Path | None):
        self.zip = zipfile.ZipFile(zip_path) if zip_path else None
        self.folder = folder
        self.description = str(zip_path or folder)

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(f"img_align_celeba/{name}")
        return (self.folder / name).read_bytes()


def _find_images(spec_name: str, names: list[str], expected: str | None, **kwargs) -> tuple[_ImageSource, str]:
    """The verified archive if there is one, else an extracted folder holding every needed image
    (whose combined sha256 must equal ``expected`` when one is known)."""
    spec = get_spec(spec_name)
    archive = next((f for f in spec.files if f.name.endswith(".zip")), None)
    places = [cache_dir(kwargs.get("cache")) / spec.folder] + [m / spec.folder for m in mirror_dirs(kwargs.get("mirrors"))]
    if archive is not None:
        try:
            path = fetch(spec, archive, **kwargs)
            return _ImageSource(path, None), f"{archive.algo}:{archive.digest}"
        except DatasetUnavailableError as err:
            missing_archive = str(err)
    else:
        missing_archive = ""
    looked = []
    for place in places:
        folder = place / "img_align_celeba"
        if not (folder.is_dir() and all((folder / n).is_file() for n in names)):
            looked.append(f"{folder}: missing or incomplete")
            continue
        digest = hashlib.sha256()
        for n in names:
            digest.update((folder / n).read_bytes())
        if expected is None or digest.hexdigest() == expected:
            return _ImageSource(None, folder), f"sha256-of-images:{digest.hexdigest()}"
        looked.append(f"{folder}: images' sha256 {digest.hexdigest()}, expected {expected}")
    raise DatasetUnavailableError(
        f"{missing_archive}\n  and no extracted img_align_celeba/ folder with the {len(names)} images needed:\n"
        + "\n".join(f"    - {line}" for line in looked)
        + f"\n  how to get it: {get_spec(spec_name).how_to_get}"
    )


def load_celeba(spec: DatasetSpec, split_seed: int, **kwargs) -> ImageDataset:
    """The registry's loader of ``celeba``: the official split."""
    return _dataset(spec.name, *load_celeba_arrays(False, **kwargs))


def load_celeba_sample(spec: DatasetSpec, split_seed: int, **kwargs) -> ImageDataset:
    """The registry's loader of ``celeba_sample``: the first 32 images, split in file order."""
    return _dataset(spec.name, *load_celeba_arrays(True, **kwargs))


def _dataset(name: str, arrays: dict[str, np.ndarray], provenance: dict) -> ImageDataset:
    return colour_dataset(name, arrays, {**provenance, "labels": "none (CelebA attributes are not used)"})


def load_celeba_arrays(sample: bool = False, **kwargs) -> tuple[dict[str, np.ndarray], dict]:
    """uint8 images [N, 12288] per split and their provenance, decoded once and cached."""
    spec = get_spec("celeba_sample" if sample else "celeba")
    partition_spec = spec.file("list_eval_partition.txt")
    partition = fetch(spec, partition_spec, **kwargs)
    names, splits = read_partition(partition)
    if sample:
        names, splits = names[:SAMPLE_IMAGES], np.repeat([0, 1, 2], SAMPLE_SPLIT).astype(np.int8)
    source, source_digest = _find_images(spec.name, names, SAMPLE_IMAGES_SHA256 if sample else None, **kwargs)
    key = hashlib.sha256(f"{_CACHE_VERSION}:{source_digest}:{len(names)}".encode()).hexdigest()[:16]
    cached = cache_dir(kwargs.get("cache")) / "celeba" / f"celeba64-{'sample-' if sample else ''}{key}.npz"
    if cached.exists():
        with np.load(cached) as z:
            images, splits = z["images"], z["splits"]
    else:
        images = np.empty((len(names), int(np.prod(IMAGE_SHAPE))), dtype=np.uint8)
        for i, name in enumerate(tqdm(names, desc="celeba 64x64", unit="img", mininterval=5)):
            images[i] = preprocess(Image.open(io.BytesIO(source.read(name))))
        with atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images, splits=splits)
        log.info("cached %d preprocessed CelebA images in %s", len(names), cached)
    arrays = {split: images[splits == code] for code, split in enumerate(("train", "val", "test"))}
    provenance = {
        "files": {partition_spec.name: f"{partition_spec.algo}:{partition_spec.digest}", "images": source_digest},
        "split": "official list_eval_partition.txt (162,770 / 19,867 / 19,962)" if not sample
        else f"SAMPLE: first {SAMPLE_IMAGES} images split {SAMPLE_SPLIT} in file order (not the official split)",
        "preprocessing": f"centre crop {CROP}, bilinear resize to {SIZE}x{SIZE}, uint8; dequantised (x + 0.5) / 256",
        "cache": os.fspath(cached),
    }
    return arrays, provenance
