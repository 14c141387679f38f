"""The CelebA stand-in: synthetic 64x64 faces, the same bytes from the same seed, loaded without any download."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np

from evae.data import load_dataset
from evae.data import standin
from evae.data.fetch import cache_dir

# sha256 of the 64 images of seed 0, as this test first recorded them: a change of the generator or of
# numpy's PCG64 stream changes it (and then the smoke numbers are of other data)
SEED0_SHA256 = "859d41d932ca99ef621e08d6784202d5e4119dc446adef0877ef499e90a0277f"


def test_seed_0_makes_the_recorded_bytes():
    images = standin.generate(64, seed=0)
    assert images.shape == (64, 3 * 64 * 64) and images.dtype == np.uint8
    assert hashlib.sha256(images.tobytes()).hexdigest() == standin.SHA256 == SEED0_SHA256


def test_another_process_makes_the_same_bytes_and_another_seed_other_ones():
    code = "import hashlib; from evae.data import standin as s; print(hashlib.sha256(s.generate(64).tobytes()).hexdigest())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert other.stdout.strip() == SEED0_SHA256
    assert not np.array_equal(standin.generate(4, seed=1), standin.generate(4, seed=0))


def test_a_cheek_and_a_corner_have_the_drawn_colours():
    """Known answers from the parameter stream: a background corner and a cheek, within the +-3 levels of noise."""
    p = np.random.default_rng(0).random((64, 21))
    images = standin.generate(64).reshape(64, 3, 64, 64).astype(float)
    for i in range(8):
        corner = (p[i, 0:3] + (p[i, 3:6] - p[i, 0:3]) * 0.5 / 64) * 255  # the gradient's top row
        np.testing.assert_allclose(images[i, :, 0, 0], corner, atol=4)
        cx, cy = 32 + 6 * (p[i, 6] - 0.5), 34 + 4 * (p[i, 7] - 0.5)
        rx, ry = 12 + 4 * p[i, 8], 16 + 4 * p[i, 9]
        row, col = int(cy + 0.25 * ry), int(cx - 0.5 * rx)
        skin = np.array([0.96, 0.80, 0.69]) + (np.array([0.55, 0.36, 0.24]) - np.array([0.96, 0.80, 0.69])) * p[i, 10]
        shade = 1 - 0.12 * (col + 0.5 - cx) / rx * (2 * p[i, 18] - 1)
        np.testing.assert_allclose(images[i, :, row, col], skin * shade * 255, atol=4)


def test_loads_offline_with_its_split_and_says_it_is_a_stand_in(isolated_data):
    data = load_dataset("celeba_standin", download=False)
    assert data.sizes() == {"train": 48, "val": 8, "test": 8} and sum(standin.SPLIT) == 64
    assert data.image_shape == (3, 64, 64) and not data.binary
    assert data.train.dtype == np.uint8 and data.train.shape == (48, 12288)
    np.testing.assert_array_equal(np.concatenate([data.train, data.val, data.test]), standin.generate(64))
    np.testing.assert_array_equal(data.test_binary, data.test)  # pixel levels are never binarised
    assert data.provenance["images"] == f"sha256:{SEED0_SHA256}"
    assert "STAND-IN" in data.provenance["split"] and "not CelebA" in data.provenance["split"]
    assert not cache_dir().exists()  # nothing fetched, nothing cached
    assert len({row.tobytes() for row in data.train}) == 48  # 48 different faces
