"""Verified fetching: content checksums, cache -> mirrors -> download order, corrupt copies rejected, clear errors."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import evae.data.fetch as fetch_module
from evae.data import DatasetUnavailableError, load_dataset
from evae.data.fetch import content_digest, fetch, verify
from evae.data.registry import DatasetSpec, FileSpec, get_spec

# A synthetic dataset shaped like an MNIST label file, so that these tests need no mirror.
_LABEL_BYTES = np.random.default_rng(0).integers(0, 10, 60_000).astype(np.uint8).tobytes()
CONTENT = b"\0\0\x08\x01" + (60_000).to_bytes(4, "big") + _LABEL_BYTES
LABELS = FileSpec("labels-idx1-ubyte.gz", (), "md5", hashlib.md5(CONTENT).hexdigest(), size=60_008, gzip=True)
TOY = DatasetSpec(name="toy", loader="unused:unused", image_shape=(1, 28, 28), binary=True, split_sizes=(1, 1, 1),
                  folder="toy-folder", files=(LABELS,), how_to_get="ask the toy maker", licence="none")


def place(root: Path, data: bytes, dataset: DatasetSpec = TOY, file: FileSpec = LABELS) -> Path:
    """Write ``data`` where a cache or mirror rooted at ``root`` keeps ``file``."""
    path = root / dataset.folder / file.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def good_gz() -> bytes:
    return gzip.compress(CONTENT, mtime=0)


def flipped(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    for i in range(offset, offset + 8):
        out[i] ^= 0xFF
    return bytes(out)


def regzipped_with_one_byte_changed(data: bytes) -> tuple[bytes, str]:
    """A well-formed gzip file whose content differs in one byte; also the md5 of that content."""
    content = bytearray(gzip.decompress(data))
    content[1000] ^= 0x01
    return gzip.compress(bytes(content)), hashlib.md5(content).hexdigest()


# --- checksums ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "omniglot_raw28"])
def test_mirror_copies_verify_against_the_registry(name, shared_data, isolated_data):
    spec = get_spec(name)
    for file in spec.files:
        path = fetch(spec, file, mirrors=[shared_data], download=False)
        assert path == shared_data / spec.folder / file.name
    assert files_under(isolated_data) == []  # reading a mirror copies nothing into the cache


def test_content_digest_is_of_the_decompressed_content(tmp_path):
    content = os.urandom(5000)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(content, compresslevel=1))
    spec = FileSpec("x.gz", (), "md5", hashlib.md5(content).hexdigest(), size=5000, gzip=True)
    assert content_digest(path, spec) == (spec.digest, 5000)
    assert verify(path, spec) is None
    path.write_bytes(gzip.compress(content, compresslevel=9))  # re-compressed: other bytes, same content
    assert verify(path, spec) is None
    assert verify(path, dataclasses.replace(spec, size=5001)).startswith("wrong size")


def test_git_blob_digest_matches_git_hash_object(tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed: cannot compare with `git hash-object`")
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(3000) + b"\0tail")
    expected = subprocess.run([git, "hash-object", str(path)], capture_output=True, text=True, check=True).stdout
    assert content_digest(path, FileSpec("blob.bin", (), "git-blob", "")) == (expected.strip(), 3005)


# --- where a file is found ----------------------------------------------------------------------


def test_cache_is_used_before_mirrors(good_gz, tmp_path, isolated_data):
    cached = place(isolated_data, good_gz)
    place(tmp_path / "mirror", good_gz)
    assert fetch(TOY, LABELS, mirrors=[tmp_path / "mirror"], download=False) == cached


def test_mirrors_are_tried_in_env_order_and_a_corrupt_one_is_skipped(good_gz, tmp_path, isolated_data, monkeypatch):
    roots = [tmp_path / "missing", tmp_path / "corrupt", tmp_path / "good", tmp_path / "also-good"]
    place(isolated_data, good_gz[: len(good_gz) // 2])  # a truncated copy in the cache is skipped too
    place(roots[1], flipped(good_gz, 100))
    good = place(roots[2], good_gz)
    place(roots[3], good_gz)
    monkeypatch.setenv("EVAE_DATA_MIRROR", os.pathsep.join([str(roots[0]), "", *map(str, roots[1:])]))
    assert fetch(TOY, LABELS, download=False) == good
    assert (roots[1] / TOY.folder / LABELS.name).read_bytes() == flipped(good_gz, 100)  # left as it was


def test_explicit_mirrors_override_the_environment(good_gz, tmp_path, isolated_data, monkeypatch):
    monkeypatch.setenv("EVAE_DATA_MIRROR", str(tmp_path / "env-mirror"))
    place(tmp_path / "env-mirror", good_gz)
    good = place(tmp_path / "arg-mirror", good_gz)
    assert fetch(TOY, LABELS, mirrors=[tmp_path / "arg-mirror"], download=False) == good


# --- corrupt and missing files --------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, outcome",
    [
        (lambda d: flipped(d, 100), "unreadable (zlib.error: Error -3"),  # a corrupt deflate stream
        (lambda d: flipped(d, 20_000), "unreadable (gzip.BadGzipFile: CRC check failed"),
        (lambda d: d[: len(d) // 2], "unreadable (EOFError"),  # truncated download
        (lambda d: gzip.compress(gzip.decompress(d)[:-8]), "wrong size: expected 60008 bytes of content, found 60000"),
    ],
    ids=["flipped-early", "flipped-late", "truncated", "short-content"],
)
def test_a_corrupt_copy_is_rejected_with_a_clear_error(damage, outcome, good_gz, tmp_path, isolated_data):
    cached = place(isolated_data, damage(good_gz))
    mirrored = place(tmp_path / "mirror", damage(good_gz))
    with pytest.raises(DatasetUnavailableError) as info:
        fetch(TOY, LABELS, mirrors=[tmp_path / "mirror"], download=False)
    message = str(info.value)
    assert f"dataset 'toy': no verified copy of '{LABELS.name}'" in message
    for place_looked in (cached, mirrored):
        (line,) = [line for line in message.splitlines() if line.strip().startswith(f"- {place_looked}: ")]
        assert outcome in line
    assert f"expected content md5 {LABELS.digest}, 60008 bytes after gunzip" in message
    assert "how to get it: ask the toy maker" in message
    assert "EVAE_DATA_MIRROR" in message and "EVAE_DATA_DIR" in message


def test_a_wrong_checksum_names_expected_and_found(good_gz, tmp_path, isolated_data):
    bad, found = regzipped_with_one_byte_changed(good_gz)
    mirrored = place(tmp_path / "mirror", bad)
    with pytest.raises(DatasetUnavailableError) as info:
        fetch(TOY, LABELS, mirrors=[tmp_path / "mirror"], download=False)
    assert f"{mirrored}: checksum mismatch: expected md5 {LABELS.digest}, found {found}" in str(info.value)


def test_a_corrupt_copy_of_real_mnist_is_skipped_for_the_real_one(shared_data, tmp_path, isolated_data):
    spec = get_spec("mnist")
    file = spec.file("t10k-labels-idx1-ubyte.gz")
    place(tmp_path / "bad-mirror", flipped((shared_data / spec.folder / file.name).read_bytes(), 100), spec, file)
    assert fetch(spec, file, mirrors=[tmp_path / "bad-mirror", shared_data], download=False) == (
        shared_data / spec.folder / file.name
    )
    with pytest.raises(DatasetUnavailableError, match=f"dataset 'mnist'(.|\n)*bad-mirror.*: unreadable"):
        fetch(spec, file, mirrors=[tmp_path / "bad-mirror"], download=False)


def test_a_tampered_uncompressed_file_is_rejected(shared_data, tmp_path, isolated_data):
    spec = get_spec("omniglot_raw28")
    file = spec.files[1]
    data = bytearray((shared_data / spec.folder / file.name).read_bytes())
    data[len(data) // 2] ^= 0x01
    place(tmp_path / "mirror", bytes(data), spec, file)
    with pytest.raises(DatasetUnavailableError, match=f"checksum mismatch: expected sha256 {file.digest}, found "):
        fetch(spec, file, mirrors=[tmp_path / "mirror"], download=False)


def test_a_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, isolated_data):
    spec = get_spec("omniglot")
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("omniglot", mirrors=[tmp_path / "mirror"], download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "dataset 'omniglot': no verified copy of 'chardata.mat'" in message
    assert f"{isolated_data / 'omniglot' / 'chardata.mat'}: missing" in message
    assert f"{tmp_path / 'mirror' / 'omniglot' / 'chardata.mat'}: missing" in message
    assert f"git-blob {spec.files[0].digest}" in message
    assert "downloads were disabled" in message
    assert spec.how_to_get in message and "omniglot_raw28" in message


def test_with_downloads_disabled_the_message_lists_the_urls_to_download_from(isolated_data):
    spec = get_spec("mnist")
    with pytest.raises(DatasetUnavailableError) as info:
        fetch(spec, spec.file("t10k-labels-idx1-ubyte.gz"), download=False)
    lines = str(info.value).splitlines()
    start = lines.index("  downloads were disabled; the file's URLs:")
    assert lines[start + 1 : start + 3] == [
        "    - https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        "    - http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz",
    ]
    assert "from one of the URLs above" in lines[start + 3]  # the how-to-get line refers to them


def test_a_file_without_urls_says_so_instead_of_listing_none(isolated_data):
    with pytest.raises(DatasetUnavailableError) as info:
        fetch(TOY, LABELS, download=False)
    message = str(info.value)
    assert "this file has no public download URL" in message and "URLs:" not in message


# --- downloading (from file:// URLs: urllib reads them without a network) -----------------------


def served_from(path: Path, file: FileSpec = LABELS):
    """The dataset and file spec with the file's only URL pointing at ``path``."""
    local = dataclasses.replace(file, urls=(path.as_uri(),))
    return dataclasses.replace(TOY, files=(local,)), local


def test_a_download_is_verified_before_it_lands_in_the_cache(good_gz, tmp_path, isolated_data, monkeypatch):
    source = tmp_path / "server" / LABELS.name
    source.parent.mkdir()
    source.write_bytes(good_gz)
    dataset, file = served_from(source)
    dest = isolated_data / TOY.folder / LABELS.name
    seen = []

    def spy(path, spec):
        seen.append((Path(path), dest.exists()))
        return verify(path, spec)

    monkeypatch.setattr(fetch_module, "verify", spy)
    assert fetch(dataset, file) == dest
    assert dest.read_bytes() == good_gz
    (checked, dest_existed), = seen  # the cache was empty: only the download was verified
    assert checked != dest and checked.parent == dest.parent and not dest_existed  # verified, then renamed
    assert files_under(isolated_data) == [dest]
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask
    assert fetch(dataset, dataclasses.replace(file, urls=())) == dest  # now served from the cache


def test_a_corrupt_download_is_rejected_and_leaves_nothing(good_gz, tmp_path, isolated_data):
    bad, _ = regzipped_with_one_byte_changed(good_gz)
    source = tmp_path / "server" / LABELS.name
    source.parent.mkdir()
    source.write_bytes(bad)
    dataset, file = served_from(source)
    with pytest.raises(DatasetUnavailableError) as info:
        fetch(dataset, file)
    assert f"{source.as_uri()}: downloaded but rejected: checksum mismatch" in str(info.value)
    assert files_under(isolated_data) == []


def test_a_corrupt_cached_copy_is_replaced_by_a_good_download(good_gz, tmp_path, isolated_data):
    cached = place(isolated_data, flipped(good_gz, 100))
    source = tmp_path / "server" / LABELS.name
    source.parent.mkdir()
    source.write_bytes(good_gz)
    assert fetch(*served_from(source)) == cached
    assert cached.read_bytes() == good_gz
    assert files_under(isolated_data) == [cached]


def test_a_failing_download_is_retried_then_reported(tmp_path, isolated_data, monkeypatch):
    sleeps = []
    monkeypatch.setattr(fetch_module.time, "sleep", sleeps.append)
    dataset, file = served_from(tmp_path / "nowhere" / LABELS.name)
    with pytest.raises(DatasetUnavailableError, match="download failed after 3 attempt"):
        fetch(dataset, file, retries=3)
    assert sleeps == [2, 4]  # exponential back-off between attempts
    assert files_under(isolated_data) == []
