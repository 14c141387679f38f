"""CelebA 64x64: preprocessing, the official split from the archive, the 32-image sample, caching."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from evae.data import DatasetUnavailableError, load_dataset
from evae.data import celeba
from evae.data.registry import DATASETS, FileSpec


def test_preprocess_takes_the_centre_140_crop_and_resizes_to_64():
    # 178x218 like aligned CelebA: red inside the centred 140x140 window, blue outside it.
    img = np.zeros((218, 178, 3), dtype=np.uint8)
    img[..., 2] = 255
    img[39 : 39 + 140, 19 : 19 + 140] = (255, 0, 0)
    out = celeba.preprocess(Image.fromarray(img))
    assert out.dtype == np.uint8 and out.shape == (3 * 64 * 64,)
    chw = out.reshape(3, 64, 64)
    assert (chw[0] == 255).all() and (chw[1] == 0).all() and (chw[2] == 0).all()


def test_preprocess_is_channel_first_and_matches_pillow():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))
    expected = np.asarray(img.crop((19, 39, 159, 179)).resize((64, 64), Image.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(celeba.preprocess(img).reshape(3, 64, 64), expected)


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def fake_celeba(tmp_path, monkeypatch, isolated_data):
    """A 6-image img_align_celeba.zip and partition file (2 per split), registered with their md5s."""
    root = tmp_path / "mirror" / "celeba"
    root.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    images = {n: _jpeg(i) for i, n in enumerate(names)}
    with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as z:
        for n, data in images.items():
            z.writestr(f"img_align_celeba/{n}", data)
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, [0, 2, 1, 0, 1, 2])))
    spec = DATASETS["celeba"]
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    files = (
        FileSpec("img_align_celeba.zip", (), "md5", md5(root / "img_align_celeba.zip")),
        FileSpec("list_eval_partition.txt", (), "md5", md5(root / "list_eval_partition.txt")),
    )
    monkeypatch.setitem(DATASETS, "celeba", dataclasses.replace(spec, files=files))
    monkeypatch.setenv("EVAE_DATA_MIRROR", str(tmp_path / "mirror"))
    return images


def test_official_split_from_the_archive(fake_celeba, monkeypatch):
    data = load_dataset("celeba")
    assert data.sizes() == {"train": 2, "val": 2, "test": 2}
    assert data.train.dtype == np.uint8 and data.image_shape == (3, 64, 64) and not data.binary
    expected = lambda n: celeba.preprocess(Image.open(io.BytesIO(fake_celeba[n])))  # noqa: E731
    np.testing.assert_array_equal(data.train, np.stack([expected("000001.jpg"), expected("000004.jpg")]))
    np.testing.assert_array_equal(data.test, np.stack([expected("000002.jpg"), expected("000006.jpg")]))
    np.testing.assert_array_equal(data.test_binary, data.test)  # pixel levels are never binarised
    # the second load reads the cached array instead of decoding again
    monkeypatch.setattr(celeba, "preprocess", lambda img: pytest.fail("decoded again despite the cache"))
    np.testing.assert_array_equal(load_dataset("celeba").val, data.val)


def test_missing_celeba_says_where_it_looked_and_how_to_get_it(isolated_data):
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("celeba", download=False)
    message = str(err.value)
    assert "list_eval_partition.txt" in message and "mmlab.ie.cuhk.edu.hk" in message


def test_the_32_image_sample(shared_data, isolated_data, monkeypatch):
    monkeypatch.setenv("EVAE_DATA_MIRROR", str(shared_data))
    if not (shared_data / "celeba-sample").is_dir():
        pytest.skip(f"no celeba-sample folder in {shared_data}")
    data = load_dataset("celeba_sample")
    assert data.sizes() == {"train": 24, "val": 4, "test": 4}
    assert data.train.shape == (24, 12288) and data.train.dtype == np.uint8
    assert "SAMPLE" in data.provenance["split"]
    assert 60 < data.train.mean() < 200  # real photographs, not blank


def test_a_tampered_sample_image_is_rejected(shared_data, tmp_path, isolated_data, monkeypatch):
    src = shared_data / "celeba-sample"
    if not src.is_dir():
        pytest.skip(f"no celeba-sample folder in {shared_data}")
    dst = tmp_path / "mirror" / "celeba-sample"
    (dst / "img_align_celeba").mkdir(parents=True)
    (dst / "list_eval_partition.txt").write_bytes((src / "list_eval_partition.txt").read_bytes())
    for f in (src / "img_align_celeba").iterdir():
        (dst / "img_align_celeba" / f.name).write_bytes(f.read_bytes())
    jpg = dst / "img_align_celeba" / "000007.jpg"
    jpg.write_bytes(jpg.read_bytes()[:-100])
    monkeypatch.setenv("EVAE_DATA_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(DatasetUnavailableError, match=r"images' sha256 .* expected 0100fae8"):
        load_dataset("celeba_sample")
