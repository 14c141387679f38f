"""Dataset loaders: the paper's splits, shapes and ranges, binarisation, seeded Omniglot split, embedded subset."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

try:  # tests/ may or may not be a package; the module-scoped fixtures need the mirror rule of conftest.py
    from tests.conftest import REPO, mirror_root
except ImportError:
    from conftest import REPO, mirror_root

from evae.data import binarize_once, dynamic_binarize, load_dataset
from evae.data.build_embedded import build
from evae.data.datasets import EmbeddedSubsetError, SplitMismatchError, _seeded_split, load_embedded_subset, read_idx
from evae.data.fetch import content_digest, fetch
from evae.data.registry import DATASETS, get_spec

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
EMBEDDED = REPO / "evae" / "data" / "embedded"


def _mirror() -> Path:
    root = mirror_root()
    if root is None:
        pytest.skip("no dataset mirror: set EVAE_DATA_MIRROR or put ../shared/data beside the repo")
    return root


def raw(name: str, file: str) -> np.ndarray:
    """An idx file of the mirror, parsed (after the registry checksum is verified)."""
    spec = get_spec(name)
    return read_idx(fetch(spec, spec.file(file), mirrors=[_mirror()], download=False))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Load each dataset once per module, from the mirror, into a throwaway cache."""
    cache, datasets = tmp_path_factory.mktemp("cache"), {}

    def get(name: str):
        if name not in datasets:
            datasets[name] = load_dataset(name, cache=cache, mirrors=[_mirror()], download=False)
        return datasets[name]

    return get


@pytest.fixture(scope="module", params=["mnist", "fashion_mnist"])
def idx_dataset(request, loaded):
    return loaded(request.param)


@pytest.fixture(scope="module")
def mnist(loaded):
    return loaded("mnist")


@pytest.fixture(scope="module")
def omniglot_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="module")
def omniglot(omniglot_cache):
    return load_dataset("omniglot_raw28", cache=omniglot_cache, mirrors=[_mirror()], download=False)


# --- MNIST and Fashion-MNIST ----------------------------------------------------------------------


def test_mnist_label_counts_match_the_published_facts():
    assert np.bincount(raw("mnist", "train-labels-idx1-ubyte.gz")).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(raw("mnist", "t10k-labels-idx1-ubyte.gz")).tolist() == MNIST_TEST_COUNTS


def test_idx_dataset_shapes_dtypes_and_ranges(idx_dataset):
    ds = idx_dataset
    assert ds.sizes() == {"train": 50_000, "val": 10_000, "test": 10_000}
    assert tuple(ds.sizes().values()) == get_spec(ds.name).split_sizes
    assert ds.image_shape == (1, 28, 28)
    for split in ("train", "val", "test"):
        x, y = getattr(ds, split), getattr(ds, f"{split}_labels")
        assert x.shape == (len(y), 784) and x.dtype == np.float32 and x.flags.c_contiguous
        assert x.min() == 0.0 and x.max() == 1.0
        assert np.array_equal(np.round(x * 255) / np.float32(255), x)  # gray levels k / 255, nothing else
        assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    spec = get_spec(ds.name)
    assert ds.provenance["files"] == {f.name: f"{f.algo}:{f.digest}" for f in spec.files}


def test_validation_is_the_last_10000_training_images(idx_dataset):
    images = raw(idx_dataset.name, "train-images-idx3-ubyte.gz").reshape(60_000, 784)
    labels = raw(idx_dataset.name, "train-labels-idx1-ubyte.gz")
    assert np.array_equal(idx_dataset.val, images[50_000:] / np.float32(255))
    assert np.array_equal(idx_dataset.val_labels, labels[50_000:])
    assert np.array_equal(idx_dataset.train, images[:50_000] / np.float32(255))
    assert np.array_equal(idx_dataset.train_labels, labels[:50_000])
    test_images = raw(idx_dataset.name, "t10k-images-idx3-ubyte.gz").reshape(10_000, 784)
    assert np.array_equal(idx_dataset.test, test_images / np.float32(255))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown dataset 'cifar10'; known datasets: \[") as err:
        load_dataset("cifar10")
    assert all(repr(name) in str(err.value) for name in ("mnist", "fashion_mnist", "omniglot", "celeba_standin"))


# --- binarisation ---------------------------------------------------------------------------------


def assert_bernoulli_of(binary: np.ndarray | torch.Tensor, gray: np.ndarray | torch.Tensor) -> None:
    """Values in {0, 1}, zero where gray is 0, one where it is 1, and mean within 6 sd of the gray mean."""
    binary, gray = np.asarray(binary, dtype=np.float64), np.asarray(gray, dtype=np.float64)
    assert set(np.unique(binary)) == {0.0, 1.0}
    assert not binary[gray == 0].any() and binary[gray == 1].all()
    sd = np.sqrt((gray * (1 - gray)).sum()) / gray.size  # sd of the mean of independent Bernoulli draws
    assert abs(binary.mean() - gray.mean()) < 6 * sd


def test_val_and_test_are_binarised_once_reproducibly(mnist):
    val, test = mnist.val_binary, mnist.test_binary
    assert val.dtype == np.float32 and val.shape == mnist.val.shape
    assert_bernoulli_of(val, mnist.val)
    assert_bernoulli_of(test, mnist.test)
    assert np.array_equal(val, mnist.val_binary) and np.array_equal(test, mnist.test_binary)
    assert np.array_equal(val, binarize_once(mnist.val, 777, stream=0))  # the paper's seed, stream 0 = val
    other = dataclasses.replace(mnist, binarize_seed=778)
    assert (other.val_binary != val).mean() > 0.01
    assert (binarize_once(mnist.val, 777, stream=1) != val).mean() > 0.01  # val and test draw separate streams
    assert "777" in mnist.provenance["binarize"]


def test_binarisation_is_identical_in_another_process():
    code = (
        "import hashlib\nfrom evae.data import load_dataset\n"
        "for seed in (777, 5):\n"
        "    d = load_dataset('mnist_subset', binarize_seed=seed)\n"
        "    print(hashlib.sha256(d.val_binary.tobytes() + d.test_binary.tobytes()).hexdigest())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    here = [
        hashlib.sha256(d.val_binary.tobytes() + d.test_binary.tobytes()).hexdigest()
        for d in (load_dataset("mnist_subset", binarize_seed=seed) for seed in (777, 5))
    ]
    assert result.stdout.split() == here and here[0] != here[1]


def test_dynamic_binarisation_draws_afresh_unless_seeded():
    gray = torch.from_numpy(load_embedded_subset().train[:500])
    first, second = dynamic_binarize(gray), dynamic_binarize(gray)
    assert_bernoulli_of(first, gray)
    assert not torch.equal(first, second)
    generator = torch.Generator().manual_seed(3)
    a, b = dynamic_binarize(gray, generator), dynamic_binarize(gray, generator)
    assert not torch.equal(a, b)  # the generator advances: every minibatch gets a new draw
    replay = torch.Generator().manual_seed(3)
    assert torch.equal(dynamic_binarize(gray, replay), a) and torch.equal(dynamic_binarize(gray, replay), b)


def test_dynamic_binarisation_is_torch_bernoulli_draw_for_draw():
    # the fast form keeps the random stream of torch.bernoulli, so runs trained before it replay exactly
    gray = torch.from_numpy(load_embedded_subset().train[:500])
    ours, reference = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(3):
        assert torch.equal(dynamic_binarize(gray, ours), torch.bernoulli(gray, generator=reference))


# --- Omniglot stand-in ----------------------------------------------------------------------------


def read_npz(path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {key: z[key] for key in z.files}


def saved_split(ds) -> tuple[np.ndarray, np.ndarray]:
    """The (train, val) pool indices saved by the loader for ``ds``."""
    saved = read_npz(ds.provenance["split_indices"])
    return saved["train"], saved["val"]


def area_downsample(image: np.ndarray, size: int = 28) -> np.ndarray:
    """Float64 reference of area (adaptive average) downsampling: each output pixel averages its window."""
    n = image.shape[0]
    weights = np.zeros((size, n))
    for i in range(size):
        start, stop = (i * n) // size, -((-(i + 1) * n) // size)
        weights[i, start:stop] = 1.0 / (stop - start)
    return weights @ image @ weights.T


def test_omniglot_raw28_sizes_labels_and_provenance(omniglot):
    assert omniglot.sizes() == {"train": 23_000, "val": 1_345, "test": 8_115}
    assert tuple(omniglot.sizes().values()) == get_spec("omniglot_raw28").split_sizes
    for split in ("train", "val", "test"):
        x, y = getattr(omniglot, split), getattr(omniglot, f"{split}_labels")
        assert x.shape == (len(y), 784) and x.dtype == np.float32
        assert x.min() == 0.0 and x.max() <= 1.0 and y.dtype == np.int64
    pool = np.concatenate([omniglot.train_labels, omniglot.val_labels])
    assert np.bincount(pool).tolist() == [15] * 1623  # drawings 1-15 of each of the 1623 characters
    assert np.bincount(omniglot.test_labels).tolist() == [5] * 1623  # drawings 16-20
    assert omniglot.provenance["split"].startswith("STAND-IN")
    assert 0.05 < omniglot.train.mean() < 0.2  # ink is sparse: about a tenth of the pixels


def test_omniglot_raw28_images_are_the_downsampled_ink(omniglot):
    spec = get_spec("omniglot_raw28")
    background, evaluation = (
        read_npz(fetch(spec, file, mirrors=[_mirror()], download=False))["images"] for file in spec.files
    )
    ink = lambda chars, c, d: area_downsample(1.0 - chars[c, d]).reshape(784)  # noqa: E731
    np.testing.assert_allclose(omniglot.test[0], ink(background, 0, 15), atol=1e-6)
    np.testing.assert_allclose(omniglot.test[-1], ink(evaluation, -1, 19), atol=1e-6)
    train_idx, _ = saved_split(omniglot)
    char, drawing = divmod(int(train_idx[-1]), 15)  # pool row = character * 15 + drawing
    assert char >= len(background) and omniglot.train_labels[-1] == char
    np.testing.assert_allclose(omniglot.train[-1], ink(evaluation, char - len(background), drawing), atol=1e-6)


def test_omniglot_split_is_saved_and_reloaded_identically(omniglot, omniglot_cache):
    path = Path(omniglot.provenance["split_indices"])
    assert path == omniglot_cache / "splits" / "omniglot_raw28-seed0.npz"
    train, val = saved_split(omniglot)
    assert len(train) == 23_000 and len(val) == 1_345
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(24_345))  # disjoint and covering
    assert np.array_equal(omniglot.train_labels, train // 15) and np.array_equal(omniglot.val_labels, val // 15)
    before = path.read_bytes()
    again = load_dataset("omniglot_raw28", cache=omniglot_cache, mirrors=[_mirror()], download=False)
    assert path.read_bytes() == before
    for split in ("train", "train_labels", "val", "val_labels", "test", "test_labels"):
        assert np.array_equal(getattr(again, split), getattr(omniglot, split)), split


def test_a_tampered_split_file_is_reported(omniglot, omniglot_cache, tmp_path):
    train, val = saved_split(omniglot)
    train[0], val[0] = val[0], train[0]
    tampered = tmp_path / "splits" / "omniglot_raw28-seed0.npz"
    tampered.parent.mkdir()
    np.savez(tampered, train=train, val=val)
    with pytest.raises(SplitMismatchError, match="saved split indices differ from the split that seed 0 gives") as info:
        load_dataset("omniglot_raw28", cache=tmp_path, mirrors=[_mirror()], download=False)
    assert str(tampered) in str(info.value) and "delete it" in str(info.value)


def test_seeded_split_files_unreadable_or_per_seed(tmp_path):
    train0, val0, path0 = _seeded_split("toy", 100, 10, 0, tmp_path)
    train1, val1, path1 = _seeded_split("toy", 100, 10, 1, tmp_path)
    assert path0 != path1 and not np.array_equal(val0, val1)
    path0.write_bytes(b"not an npz file")
    with pytest.raises(SplitMismatchError, match="unreadable saved split"):
        _seeded_split("toy", 100, 10, 0, tmp_path)


def test_chardata_columns_are_read_in_fortran_order(tmp_path, isolated_data, monkeypatch):
    """A small file laid out like IWAE's chardata.mat (the real one is not available here)."""
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    pool, test = rng.random((1_400, 28, 28)), rng.random((30, 28, 28))
    alphabet, test_alphabet = rng.integers(0, 50, 1_400), rng.integers(0, 50, 30)

    def columns(images):  # 784 x N, each image flattened in Fortran (column-major) order
        return images.reshape(len(images), -1, order="F").T

    mat = tmp_path / "mirror" / "omniglot" / "chardata.mat"
    mat.parent.mkdir(parents=True)
    savemat(mat, {"data": columns(pool), "testdata": columns(test),
                  "target": np.eye(50)[alphabet].T, "testtarget": np.eye(50)[test_alphabet].T})
    spec = get_spec("omniglot")
    file = dataclasses.replace(spec.files[0], digest=content_digest(mat, spec.files[0])[0])
    monkeypatch.setitem(DATASETS, "omniglot", dataclasses.replace(spec, files=(file,)))

    ds = load_dataset("omniglot", mirrors=[tmp_path / "mirror"], download=False)
    assert ds.sizes() == {"train": 55, "val": 1_345, "test": 30}
    train_idx, val_idx = saved_split(ds)
    flat = pool.reshape(1_400, 784).astype(np.float32)  # row-major rows of the original images
    assert np.array_equal(ds.train, flat[train_idx]) and np.array_equal(ds.val, flat[val_idx])
    assert np.array_equal(ds.test, test.reshape(30, 784).astype(np.float32))
    assert np.array_equal(ds.train_labels, alphabet[train_idx]) and np.array_equal(ds.test_labels, test_alphabet)
    assert ds.train_labels.dtype == np.int64 and ds.train.dtype == np.float32


# --- the embedded MNIST subset --------------------------------------------------------------------


def documented_digest(npz: Path) -> str:
    """The content checksum as evae/data/embedded/README.md describes it, computed independently."""
    h = hashlib.sha256()
    with np.load(npz) as z:
        for key in sorted(z.files):
            h.update(f"{key}:|u1:{z[key].shape}".encode() + np.ascontiguousarray(z[key], dtype=np.uint8).tobytes())
    return h.hexdigest()


def test_embedded_subset_loads_offline(isolated_data):
    ds = load_dataset("mnist_subset", download=False)
    assert ds.sizes() == {"train": 3_000, "val": 1_000, "test": 1_000}
    for split, per_digit in (("train", 300), ("val", 100), ("test", 100)):
        x, y = getattr(ds, split), getattr(ds, f"{split}_labels")
        assert x.dtype == np.float32 and x.shape == (len(y), 784) and 0 <= x.min() and x.max() <= 1
        assert y.dtype == np.int64 and np.bincount(y).tolist() == [per_digit] * 10
    recorded = json.loads((EMBEDDED / "mnist_subset.json").read_text())["sha256_content"]
    assert documented_digest(EMBEDDED / "mnist_subset.npz") == recorded
    assert ds.provenance["files"] == {"mnist_subset.npz": f"sha256-content:{recorded}"}
    assert not isolated_data.exists()  # nothing fetched or cached


def test_embedded_subset_is_the_first_images_of_each_digit(mnist):
    subset = load_embedded_subset()
    for split, per_digit in (("train", 300), ("val", 100), ("test", 100)):
        labels = getattr(mnist, f"{split}_labels")
        keep = sorted(i for digit in range(10) for i in np.flatnonzero(labels == digit)[:per_digit])
        assert np.array_equal(getattr(subset, split), getattr(mnist, split)[keep]), split
        assert np.array_equal(getattr(subset, f"{split}_labels"), labels[keep]), split


def test_a_tampered_embedded_subset_is_refused(tmp_path):
    shutil.copy(EMBEDDED / "mnist_subset.json", tmp_path)
    with np.load(EMBEDDED / "mnist_subset.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["x_val"][7, 300] ^= 1
    np.savez_compressed(tmp_path / "mnist_subset.npz", **arrays)
    recorded = json.loads((tmp_path / "mnist_subset.json").read_text())["sha256_content"]
    with pytest.raises(EmbeddedSubsetError, match=f"is corrupt: content sha256 [0-9a-f]{{64}}, expected {recorded}"):
        load_embedded_subset(tmp_path)
    (tmp_path / "mnist_subset.npz").write_bytes((EMBEDDED / "mnist_subset.npz").read_bytes()[:50_000])
    with pytest.raises(EmbeddedSubsetError, match="unreadable .*python -m evae.data.build_embedded"):
        load_embedded_subset(tmp_path)


def test_rebuilding_the_embedded_subset_reproduces_its_checksum(shared_data, isolated_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EVAE_DATA_MIRROR", str(shared_data))
    meta = build(out=tmp_path)
    committed = json.loads((EMBEDDED / "mnist_subset.json").read_text())
    assert meta == committed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist_subset.json", "mnist_subset.npz"]
    rebuilt, shipped = load_embedded_subset(tmp_path), load_embedded_subset()
    assert np.array_equal(rebuilt.train, shipped.train) and np.array_equal(rebuilt.test_labels, shipped.test_labels)
