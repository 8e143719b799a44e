"""What every dataset is made of: a split is one uint8 tensor of images and one of labels; a dataset is a
train and a validation split with their class names and channel statistics."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

VAL_FRACTION = 0.1  # carved validation: the last 10% of each class
STATS_CHUNK_BYTES = 32 << 20  # float64 working memory of channel_stats

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    val_source: str  # where the validation images come from, in words
    synthetic: bool
    mean: tuple[float, ...]  # per channel, 0-1 scale, of the train images
    std: tuple[float, ...]

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train):,} train / {len(self.val):,} validation images, "
                f"{len(self.classes)} classes (validation: {self.val_source})")


def default_cache_dir() -> Path:
    """``$RESNET_VIZ_CACHE`` if set, else ``~/.cache/resnet-viz``."""
    return Path(os.environ.get("RESNET_VIZ_CACHE") or Path.home() / ".cache" / "resnet-viz")


def limit_split(split: Split, limit: int, like: Split | None = None) -> Split:
    """The first ``limit`` images of each class; with ``like`` (the full train split), the same share of each class."""
    keep = []
    for c in split.labels.unique().tolist():
        index = (split.labels == c).nonzero().flatten()
        n = limit
        if like is not None:
            n = scaled_limit(limit, len(index), int((like.labels == c).sum()))
        keep.append(index[:n])
    index = torch.cat(keep).sort().values
    return Split(split.images[index], split.labels[index])


def scaled_limit(limit: int, n_val: int, n_train: int) -> int:
    """How many of a separate validation set's ``n_val`` images to keep when train keeps ``limit`` of ``n_train``."""
    if n_train <= limit:
        return n_val
    return max(1, math.ceil(limit * n_val / max(n_train, 1)))


def reason(error: BaseException) -> str:
    return str(getattr(error, "reason", None) or error) or type(error).__name__


def make_dataset(name: str, classes: tuple[str, ...], train: Split, val: Split, val_source: str,
                 synthetic: bool = False) -> Dataset:
    """A dataset, with the channel statistics of its training images."""
    mean, std = channel_stats(train.images)
    return Dataset(name, classes, train, val, val_source, synthetic, mean, std)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), on the 0-1 scale."""
    channels = images.shape[1]
    total, squares = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    per_image = max(images[0].numel(), 1) if len(images) else 1
    for chunk in images.split(max(1, STATS_CHUNK_BYTES // (8 * per_image))):  # float64 copies of ~32 MiB at a time
        x = chunk.to(torch.float64)
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    count = max(images.numel() // channels, 1)
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
