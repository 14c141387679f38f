"""The dataset registry: every dataset a study can name, defined once.

A `DatasetSpec` says what a dataset is (its image shape, binary gray levels or colour levels, its
split sizes, the paper column it is compared with), how it is loaded (``loader``) and, for datasets
read from files, where each file comes from and what its content must hash to. The config's dataset
choices, the pipeline's wildcards, the scheduler's size estimates and the tables' paper columns are
all read from here.

Checksums are of the *content*: for a ``.gz`` file, of the decompressed bytes, because the
compressed bytes differ between mirrors that re-compress the same data.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from evae.registry import Registry

BINARY_28 = (1, 28, 28)
COLOUR_64 = (3, 64, 64)


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    ``algo`` is a hashlib name or ``"git-blob"`` (the id ``git hash-object`` prints, for files
    whose only published fingerprint is their git blob). ``gzip`` says the stored file is
    gzip-compressed and the checksum and size are of its decompressed content.
    """

    name: str
    urls: tuple[str, ...]
    algo: str
    digest: str
    size: int | None = None
    gzip: bool = False


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """A dataset a study can name.

    ``loader`` is ``"module:function"``, imported when the dataset is loaded and called as
    ``function(spec, cache=..., mirrors=..., download=..., split_seed=...)``; it returns an
    `evae.data.ImageDataset`. ``binary`` datasets are gray levels in [0, 1], binarised for the
    Bernoulli decoders; the others are uint8 colour levels. ``paper_dataset`` is the paper's column
    the dataset's results are compared with (default: its own name); ``stand_in`` says what the data
    are when they only stand in for the paper's (figures and tables name it).
    """

    name: str
    loader: str
    image_shape: tuple[int, int, int]
    binary: bool
    split_sizes: tuple[int, int, int]  # train, validation, test images
    folder: str = ""  # the folder of the files in the cache and in mirrors
    files: tuple[FileSpec, ...] = ()
    how_to_get: str = ""
    licence: str = ""
    paper_dataset: str | None = None
    stand_in: str | None = None

    @property
    def paper_column(self) -> str:
        """The paper's dataset this one is compared with."""
        return self.paper_dataset or self.name

    def load_function(self) -> Callable:
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)

    def file(self, name: str) -> FileSpec:
        for spec in self.files:
            if spec.name == name:
                return spec
        raise KeyError(f"dataset {self.name!r} has no file {name!r}; it has {[f.name for f in self.files]}")


DATASETS: Registry[DatasetSpec] = Registry("dataset")
register_dataset = DATASETS.register
get_spec = DATASETS.spec


def _idx_files(bases: tuple[str, ...], table: dict[str, tuple[str, int]]) -> tuple[FileSpec, ...]:
    return tuple(
        FileSpec(
            name=f"{stem}.gz",
            urls=tuple(f"{base}/{stem}.gz" for base in bases),
            algo="md5",
            digest=md5,
            size=size,
            gzip=True,
        )
        for stem, (md5, size) in table.items()
    )


_MNIST_BASES = (
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "http://yann.lecun.com/exdb/mnist",
)
_FASHION_BASES = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",)

register_dataset(
    DatasetSpec(
        name="mnist",
        loader="evae.data.datasets:load_idx",
        image_shape=BINARY_28,
        binary=True,
        split_sizes=(50_000, 10_000, 10_000),
        folder="mnist",
        files=_idx_files(
            _MNIST_BASES,
            {
                "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
                "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
                "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
                "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
            },
        ),
        how_to_get="download the four idx .gz files from one of the URLs above (any re-gzipped copy with "
        "the same content works) into the folder 'mnist/' of the cache or of a mirror",
        licence="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges)",
    )
)
register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        loader="evae.data.datasets:load_idx",
        image_shape=BINARY_28,
        binary=True,
        split_sizes=(50_000, 10_000, 10_000),
        folder="fashion-mnist",
        files=_idx_files(
            _FASHION_BASES,
            {
                "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 47_040_016),
                "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60_008),
                "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 7_840_016),
                "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10_008),
            },
        ),
        how_to_get="download the four idx .gz files into the folder 'fashion-mnist/' of the cache or of a "
        "mirror; on Debian, `apt-get install dataset-fashion-mnist` puts them in "
        "/usr/share/datasets/fashion-mnist/ (then add /usr/share/datasets to EVAE_DATA_MIRROR)",
        licence="MIT (Zalando Research)",
    )
)
register_dataset(
    DatasetSpec(
        name="omniglot",
        loader="evae.data.datasets:load_chardata",
        image_shape=BINARY_28,
        binary=True,
        split_sizes=(23_000, 1_345, 8_070),
        folder="omniglot",
        files=(
            FileSpec(
                name="chardata.mat",
                urls=("https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat",),
                algo="git-blob",
                digest="016a3536ffe5e1d38e42563a18d7a78bfaf643ec",
            ),
        ),
        how_to_get="download chardata.mat of the IWAE repository (yburda/iwae, datasets/OMNIGLOT/) into the "
        "folder 'omniglot/' of the cache or of a mirror; `git hash-object chardata.mat` must print the "
        "digest above. Without it, the stand-in dataset 'omniglot_raw28' can be used, but its numbers are "
        "not comparable with the paper's Omniglot column",
        licence="MIT (B. Lake et al., Omniglot; IWAE preprocessing by Y. Burda)",
    )
)
register_dataset(
    DatasetSpec(
        name="omniglot_raw28",
        loader="evae.data.datasets:load_omniglot_raw28",
        image_shape=BINARY_28,
        binary=True,
        split_sizes=(23_000, 1_345, 8_115),
        paper_dataset="omniglot",
        stand_in="raw Omniglot, not the paper's chardata.mat",
        folder="omniglot-raw",
        files=(
            FileSpec(
                name="images_background.npz",
                urls=(),
                algo="sha256",
                digest="8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
            ),
            FileSpec(
                name="images_evaluation.npz",
                urls=(),
                algo="sha256",
                digest="0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
            ),
        ),
        how_to_get="these are the raw Omniglot drawings (brendenlake/omniglot, images_background.zip and "
        "images_evaluation.zip) packed as npz arrays `images` (chars, 20, 105, 105; True = background) and "
        "`labels`; put them in the folder 'omniglot-raw/' of a mirror",
        licence="MIT (B. Lake et al.)",
    )
)
register_dataset(
    DatasetSpec(
        name="celeba",
        loader="evae.data.celeba:load_celeba",
        image_shape=COLOUR_64,
        binary=False,
        split_sizes=(162_770, 19_867, 19_962),
        folder="celeba",
        files=(
            FileSpec(
                name="img_align_celeba.zip",
                urls=("https://drive.google.com/uc?export=download&id=0B7EVK8r0v71pZjFTYXZWM3FlRnM",),
                algo="md5",
                digest="00d2c5bc6d35e252742224ab0c1e8fcb",
                size=1_443_490_838,
            ),
            FileSpec(
                name="list_eval_partition.txt",
                urls=("https://drive.google.com/uc?export=download&id=0B7EVK8r0v71pY0NSMzRuSXJEVkk",),
                algo="md5",
                digest="d32c9cbf5e040fd4025c592c306e6668",
            ),
        ),
        how_to_get="download img_align_celeba.zip and list_eval_partition.txt from the CelebA page "
        "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive folder 'Img' and 'Eval') into the folder "
        "'celeba/' of the cache or of a mirror",
        licence="CelebA: non-commercial research use only (see the dataset's agreement)",
    )
)

register_dataset(
    DatasetSpec(
        name="celeba_sample",
        loader="evae.data.celeba:load_celeba_sample",
        image_shape=COLOUR_64,
        binary=False,
        split_sizes=(24, 4, 4),
        folder="celeba-sample",
        files=(
            FileSpec(
                name="list_eval_partition.txt",
                urls=DATASETS["celeba"].file("list_eval_partition.txt").urls,
                algo="md5",
                digest="d32c9cbf5e040fd4025c592c306e6668",
            ),
        ),
        how_to_get="the first 32 aligned CelebA images (img_align_celeba/000001.jpg .. 000032.jpg, extracted from "
        "img_align_celeba.zip) and list_eval_partition.txt, in the folder 'celeba-sample/' of a mirror",
        licence="CelebA: non-commercial research use only (see the dataset's agreement)",
        paper_dataset="celeba",
    )
)
register_dataset(
    DatasetSpec(
        name="mnist_subset",
        loader="evae.data.datasets:load_embedded",
        image_shape=BINARY_28,
        binary=True,
        split_sizes=(3_000, 1_000, 1_000),
        how_to_get="shipped inside the package (evae/data/embedded/); nothing to get",
        licence="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges)",
        paper_dataset="mnist",
    )
)
register_dataset(
    DatasetSpec(
        name="celeba_standin",
        loader="evae.data.standin:load_standin",
        image_shape=COLOUR_64,
        binary=False,
        split_sizes=(48, 8, 8),
        how_to_get="made by the package (evae/data/standin.py) from a fixed seed; nothing to get",
        licence="MIT (this project)",
        paper_dataset="celeba",
        stand_in="synthetic faces, not CelebA",
    )
)
