"""CELEBA STAND-IN: synthetic 64x64 colour faces, made from a seed, for runs without CelebA.

CelebA may not be redistributed (non-commercial research use, by agreement), so the smoke profile's
colour part trains on these instead: cartoon faces (hair, face, eyes, brows, nose, mouth,
shoulders) on a gradient background with a little pixel noise, every shape and colour drawn from
a seeded generator. Same format as the CelebA loader's: uint8 levels, channel-first, flattened
(12,288 a row), no labels. Not CelebA and not comparable with anything: the name says so in every
table row (``data_used``), run folder and figure.

The images are a function of the seed alone: numpy's PCG64 stream turned into pixels with
arithmetic that IEEE 754 rounds exactly (+, -, *, /, comparisons; no exp, sin or pow, whose last
bits differ between CPUs and libraries), so every machine makes the same bytes. ``SHA256`` records
them; the tests check it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from evae.data.celeba import SIZE
from evae.data.datasets import ImageDataset, colour_dataset
from evae.data.registry import DatasetSpec

SPLIT = (48, 8, 8)  # train, validation, test, in generation order
SEED = 0
# sha256 of generate(sum(SPLIT), SEED): the bytes of the three splits, in order
SHA256 = "859d41d932ca99ef621e08d6784202d5e4119dc446adef0877ef499e90a0277f"
_SUB = 2  # each pixel is the mean of _SUB x _SUB sub-pixel samples: smooth edges
_NOISE_LEVELS = 6  # +-3 levels of uniform pixel noise
_SKIN = np.array([[0.96, 0.80, 0.69], [0.55, 0.36, 0.24]])  # the two ends of the skin tones
_HAIR = np.array([[0.10, 0.07, 0.05], [0.35, 0.20, 0.10], [0.85, 0.70, 0.40], [0.60, 0.25, 0.10], [0.55, 0.55, 0.55]])
_LIPS = np.array([0.70, 0.25, 0.25])
_PARAMS = 21  # uniform numbers per face


def _ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    dy, dx = (y - cy) / ry, (x - cx) / rx
    return dy * dy + dx * dx <= 1.0


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + (b - a) * t


def draw_face(p: np.ndarray) -> np.ndarray:
    """One face [SIZE, SIZE, 3] of colours in [0, 1] from ``_PARAMS`` numbers in [0, 1)."""
    n = SIZE * _SUB
    c = (np.arange(n) + 0.5) / _SUB  # sub-pixel centres, in pixels
    y, x = c[:, None], c[None, :]
    img = _mix(p[0:3], p[3:6], (y / SIZE)[..., None]) * np.ones((n, n, 1))  # background gradient
    cx, cy = 32 + 6 * (p[6] - 0.5), 34 + 4 * (p[7] - 0.5)
    rx, ry = 12 + 4 * p[8], 16 + 4 * p[9]
    skin = _mix(_SKIN[0], _SKIN[1], p[10])
    hair = _HAIR[int(p[11] * len(_HAIR))] * (0.85 + 0.3 * p[12])
    img[_ellipse(y, x, SIZE + 6, cx, 16, 26 + 6 * p[13])] = p[14:17] * 0.8  # shoulders
    hair_mask = _ellipse(y, x, cy - 2, cx, ry + 3, rx + 3) & (y < cy + ry * (0.1 + 0.8 * p[17]))
    img[hair_mask] = np.minimum(hair, 1.0)
    shade = 1.0 - 0.12 * (x - cx) / rx * (2 * p[18] - 1)  # light from one side
    face = _ellipse(y, x, cy, cx, ry, rx)
    img[face] = (skin * shade[..., None] * np.ones((n, n, 1)))[face]
    eye_y, eye_dx = cy - 0.15 * ry, 0.38 * rx
    for side in (-1, 1):
        ex = cx + side * eye_dx
        img[_ellipse(y, x, eye_y - 3.2, ex, 0.8, 3.0)] = hair * 0.8  # brow
        img[_ellipse(y, x, eye_y, ex, 1.8, 2.8)] = (0.95, 0.95, 0.95)
        img[_ellipse(y, x, eye_y, ex + 1.2 * (p[19] - 0.5), 1.4, 1.4)] = (0.15, 0.10, 0.08)
    img[_ellipse(y, x, cy + 0.12 * ry, cx, 2.6, 1.3)] = skin * 0.8  # nose
    mouth_y, mouth_rx = cy + 0.48 * ry, 0.35 * rx
    if p[20] < 0.5:  # a smile: the lower half of a ring
        ring = _ellipse(y, x, mouth_y - 2, cx, 3.0, mouth_rx) & ~_ellipse(y, x, mouth_y - 2.8, cx, 2.6, mouth_rx - 1)
        img[ring & (y > mouth_y - 2)] = _LIPS
    else:
        img[_ellipse(y, x, mouth_y, cx, 1.2, mouth_rx)] = _LIPS
    return img.reshape(SIZE, _SUB, SIZE, _SUB, 3).mean(axis=(1, 3))


def generate(n: int, seed: int = SEED) -> np.ndarray:
    """``n`` faces as uint8 levels [n, 12288], channel-first and flattened like the CelebA loader's."""
    rng = np.random.default_rng(seed)
    params = rng.random((n, _PARAMS))
    noise = (rng.random((n, SIZE, SIZE, 3)) - 0.5) * (_NOISE_LEVELS / 255)
    faces = np.stack([draw_face(p) for p in params]) + noise
    levels = np.floor(np.clip(faces, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(levels.transpose(0, 3, 1, 2).reshape(n, -1))


def standin_arrays(seed: int = SEED) -> tuple[dict[str, np.ndarray], dict]:
    """uint8 images [N, 12288] per split and their provenance (made afresh; about 0.1 s)."""
    images = generate(sum(SPLIT), seed)
    ends = np.cumsum(SPLIT)
    arrays = dict(zip(("train", "val", "test"), np.split(images, ends[:-1])))
    digest = hashlib.sha256(images.tobytes()).hexdigest()
    provenance = {
        "files": {},
        "images": f"sha256:{digest}",
        "split": f"CELEBA STAND-IN: {sum(SPLIT)} synthetic cartoon faces made by evae.data.standin with seed {seed}, "
        f"split {SPLIT} in generation order; not CelebA, not comparable with anything",
        "labels": "none",
    }
    return arrays, provenance


def load_standin(spec: DatasetSpec, **_) -> ImageDataset:
    """The registry's loader of ``celeba_standin`` (no files: the images are made afresh)."""
    return colour_dataset(spec.name, *standin_arrays())
