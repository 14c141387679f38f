"""Rebuild the embedded MNIST subset from the canonical MNIST files.

Rule: in file order, the first 300 images of each digit from the training split (the first 50,000
images of the training file), the first 100 of each digit from the validation split (its last
10,000), and the first 100 of each digit from the test file: 3,000 / 1,000 / 1,000 images.

    python -m evae.data.build_embedded            # finds MNIST via the cache / $EVAE_DATA_MIRROR
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evae.data.datasets import EMBEDDED_PER_CLASS, embedded_content_digest, load_dataset
from evae.io import atomic_path, write_json

OUT = Path(__file__).parent / "embedded"


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` occurrences of each label, in file order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    return np.sort(keep)


def build(out: Path = OUT) -> dict:
    mnist = load_dataset("mnist")
    arrays = {}
    for split in ("train", "val", "test"):
        x, y = getattr(mnist, split), getattr(mnist, f"{split}_labels")
        idx = first_per_class(y, EMBEDDED_PER_CLASS[split])
        arrays[f"x_{split}"] = np.round(x[idx] * 255).astype(np.uint8)
        arrays[f"y_{split}"] = y[idx].astype(np.uint8)
    with atomic_path(out / "mnist_subset.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    meta = {
        "source": "MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), files verified by content md5",
        "licence": "CC BY-SA 3.0",
        "rule": "first 300 per digit of train (first 50,000), first 100 per digit of val (last 10,000), "
        "first 100 per digit of test, in file order",
        "sizes": {split: int(len(arrays[f"y_{split}"])) for split in ("train", "val", "test")},
        "sha256_content": embedded_content_digest(arrays),
        "built_by": "python -m evae.data.build_embedded",
    }
    write_json(out / "mnist_subset.json", meta)
    return meta


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
