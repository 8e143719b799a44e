"""What every study opens: trained networks by checkpoint, and the images to study them on, normalised as each
network was trained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ResNetConfig
from ..data import Dataset
from ..errors import ConfigError
from ..model import BLOCK_CLASSES
from ..samples import samples
from ..training import check_classes, load_checkpoint
from ..weights import PREFIX, is_bundled

MAX_NETWORKS = 6  # drawn side by side: more would not be readable


@dataclass(frozen=True)
class Network:
    """A trained network, in eval mode, on the CPU or the study's device."""

    label: str  # how charts and tables name it: "resnet20" for bundled:resnet20, "RUN/resnet20" for a run
    checkpoint: str
    model: nn.Module
    config: ResNetConfig
    meta: dict

    @property
    def residual(self) -> bool:
        """Whether its blocks have skips (a plain network's have none)."""
        return any(getattr(m, "skip", False) for m in self.model.modules() if isinstance(m, BLOCK_CLASSES))

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.meta.get("mean", (0.5,) * self.config.in_channels))

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.meta.get("std", (0.25,) * self.config.in_channels))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) → float32, normalised with the statistics the network was trained with."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std


def label_of(checkpoint: str, config: ResNetConfig) -> str:
    if is_bundled(checkpoint):
        return checkpoint.removeprefix(PREFIX)
    folder = Path(checkpoint).parent.name
    return f"{folder}/{config.name}" if folder and folder != config.name else config.name


def open_networks(checkpoints: list[str], device: torch.device | str = "cpu") -> list[Network]:
    """Each checkpoint's network (``bundled:NAME`` for a shipped one); the labels are made unique."""
    if not checkpoints:
        raise ConfigError("name at least one trained network (a checkpoint, or bundled:NAME)")
    if len(checkpoints) > MAX_NETWORKS:
        raise ConfigError(f"{len(checkpoints)} networks: a study draws at most {MAX_NETWORKS} side by side")
    found: list[Network] = []
    for checkpoint in checkpoints:
        model, config, meta = load_checkpoint(checkpoint, device)
        label = label_of(str(checkpoint), config)
        taken = {n.label for n in found}
        if label in taken:
            label = next(f"{label} ({i})" for i in range(2, len(found) + 3) if f"{label} ({i})" not in taken)
        found.append(Network(label, str(checkpoint), model.float().eval(), config, meta))
    return found


def check_images(networks: list[Network], data: Dataset | None) -> None:
    """Every network must take the data's images and name its classes."""
    for network in networks:
        shape = tuple(network.config.input_shape)
        if data is not None:
            check_classes(network.config, data, f"network {network.label}")
            got = tuple(data.val.images.shape[1:])
        else:
            got = (3, 32, 32)
        if got[0] != shape[0]:
            raise ConfigError(f"network {network.label} takes {shape[0]}-channel images, the data has {got[0]}")


def spread(count: int, total: int) -> torch.Tensor:
    """``count`` indices spread evenly over ``total`` (a split is stored class by class, so every class is in)."""
    if count >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, count).round().long()


def study_images(data: Dataset | None, count: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor, str]:
    """``count`` uint8 images (N, C, H, W) and labels, spread over the data's split, and where they come from in
    words. Without data, the package's sample images (100 validation images of CIFAR-10)."""
    if count < 1:
        raise ConfigError(f"images: {count} — a study needs 1 or more")
    if data is None:
        chosen = samples()
        images = torch.stack([torch.from_numpy(s.pixels()) for s in chosen])
        labels = torch.tensor([s.label for s in chosen])
        where = "the package's sample images (CIFAR-10 validation)"
    else:
        part = {"val": data.val, "train": data.train}[split]
        images, labels = part.images, part.labels
        where = f"{data.name}, {'validation' if split == 'val' else 'training'} split"
    if len(images) == 0:
        raise ConfigError(f"the {'validation' if split == 'val' else 'training'} split has no images")
    index = spread(count, len(images))
    return images[index], labels[index], f"{len(index):,} images of {where}"
