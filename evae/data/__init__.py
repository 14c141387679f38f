"""Datasets: registry of files and checksums, verified fetching, loaders with the paper's splits."""

from evae.data.datasets import STAND_INS, ImageDataset, binarize_once, dynamic_binarize, load_dataset
from evae.data.fetch import DatasetUnavailableError

__all__ = ["STAND_INS", "DatasetUnavailableError", "ImageDataset", "binarize_once", "dynamic_binarize", "load_dataset"]
