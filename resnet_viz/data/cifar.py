"""CIFAR-10 and CIFAR-100 through torchvision: read from a folder or an archive already there, or downloaded
when asked. The official test split serves as validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .splits import Dataset, Split, limit_split, make_dataset, reason

# Per-channel mean and standard deviation of CIFAR-10's training images (0-1 scale). The often
# copied std (0.2023, 0.1994, 0.2010) is an average of per-image stds, not the dataset's.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

SOURCES = {  # source: (label, torchvision class, extracted folder, archive)
    "cifar10": ("CIFAR-10", "CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR-100", "CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz"),
}
_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


def load_cifar(source: str, root: Path, download: bool, limit: int | None) -> Dataset:
    import torchvision.datasets

    label, class_name, folder, archive = SOURCES[source]
    cls = getattr(torchvision.datasets, class_name)
    fetch = download
    if not download and not (root / folder).is_dir():
        if not (root / archive).is_file():
            raise DataError(f"{label} is not in {root}: put the folder {folder} (or the archive {archive}) there, "
                            "or pass download=True (command line: --download) to fetch it when online")
        _check_cifar_archive(root / archive, cls, label)
        fetch = True  # only extracts: torchvision skips the download when the archive's md5 is the official one
    # torchvision checks every CIFAR file's md5 against the official checksums before it unpickles it,
    # so only the official files are ever unpickled.
    try:
        train, test = cls(str(root), train=True, download=fetch), cls(str(root), train=False, download=fetch)
    except OSError as e:
        if not download:
            raise DataError(f"cannot read {label} in {root}: {e}") from None
        raise DataError(f"the {label} download failed ({reason(e)}); try again when online, or put {archive} "
                        f"from {_CIFAR_PAGE} in {root} by hand") from None
    except RuntimeError:
        raise DataError(f"the {label} files in {root} are incomplete or not the official ones; delete {root / folder}"
                        f" and pass download=True (command line: --download), or put the official {archive} there"
                        ) from None
    train_split, test_split = _cifar_split(train), _cifar_split(test)
    if limit is not None:
        test_split = limit_split(test_split, limit, like=train_split)
        train_split = limit_split(train_split, limit)
    return make_dataset(label, tuple(train.classes), train_split, test_split, "the official test split")


def _check_cifar_archive(path: Path, cls, label: str) -> None:
    from torchvision.datasets.utils import check_integrity

    if not check_integrity(str(path), cls.tgz_md5):
        raise DataError(f"{path} is not the official {label} archive (its md5 differs); download it again from "
                        f"{_CIFAR_PAGE}, or pass download=True (command line: --download)")


def _cifar_split(dataset) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.as_tensor(dataset.targets, dtype=torch.int64))
