"""Datasets for training: CIFAR-10/100, image folders and archives of them, and synthetic data.

A whole split lives in one uint8 tensor (N, C, H, W) and, for training, on the training device:
``DeviceBatches`` crops, flips and normalises whole batches there, so no DataLoader and no
per-image Python work sits in the training loop. Image folders are decoded once and cached on
disk; archives are extracted once into the cache.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from . import cifar, folders
from .batches import CROP_PADDING, DeviceBatches, crop_and_flip, crop_shifts, downscale, flip, shift_and_flip
from .cifar import CIFAR_MEAN, CIFAR_STD
from .folders import IMAGE_EXTENSIONS
from .splits import VAL_FRACTION, Dataset, Progress, Split, channel_stats, default_cache_dir
from .synthetic import SYNTHETIC_NAME, synthetic_dataset

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "CROP_PADDING", "IMAGE_EXTENSIONS", "SYNTHETIC_NAME", "VAL_FRACTION", "DataError",
           "Dataset", "DeviceBatches", "Split", "channel_stats", "crop_and_flip", "crop_shifts", "default_cache_dir",
           "downscale", "flip", "load_dataset", "shift_and_flip", "synthetic_dataset"]


def load_dataset(source: str | Path, root: str | Path | None = None, cache_dir: str | Path | None = None,
                 download: bool = False, limit_per_class: int | None = None,
                 progress: Progress | None = None) -> Dataset:
    """A dataset by name ("cifar10", "cifar100", "synthetic"), or an image folder or a .tar.gz of one.

    ``root`` is where torchvision's CIFAR files live (default ``<cache_dir>/torchvision``);
    ``limit_per_class`` keeps at most that many train images per class, and validation in proportion;
    ``progress(done, total)`` hears about image decoding.
    """
    if limit_per_class is not None and (isinstance(limit_per_class, bool) or not isinstance(limit_per_class, int)
                                        or limit_per_class < 1):
        raise DataError(f"limit_per_class must be a whole number of 1 or more, got {limit_per_class!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = str(source)
    if name in cifar.SOURCES:
        root = Path(root) if root is not None else cache / "torchvision"
        return cifar.load_cifar(name, root, download, limit_per_class)
    if name == "synthetic":
        return synthetic_dataset(limit_per_class=limit_per_class)
    path = Path(source).expanduser()
    if path.is_dir():
        return folders.load_folder(path, cache, limit_per_class, progress)
    if path.is_file() and folders.archive_stem(path) is not None:
        name = folders.archive_stem(path)
        return folders.load_folder(folders.extract(path, cache), cache, limit_per_class, progress, name=name)
    raise DataError(f"no such dataset or folder: {name}; use cifar10, cifar100, synthetic, a folder or a .tar.gz")
