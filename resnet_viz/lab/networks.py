"""What every study opens: trained networks by checkpoint, and the images to study them on, normalised as each
network was trained."""

from __future__ import annotations

import copy
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
    """Every network must take the data's images (without data: the RGB sample images) and name its classes."""
    channels = 3 if data is None else data.val.images.shape[1]
    for network in networks:
        if data is not None:
            check_classes(network.config, data, f"network {network.label}")
        if network.config.in_channels != channels:
            raise ConfigError(f"network {network.label} takes {network.config.in_channels}-channel images, the "
                              f"data has {channels}")


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


def _fold_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, BN) attribute pairs of ``module`` where the BN normalises that conv's output and nothing else."""
    if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Conv2d) \
            and isinstance(module[1], nn.BatchNorm2d):
        return [("0", "1")]  # a projection shortcut: conv, then BN
    if hasattr(module, "conv_norm_pairs"):  # a pre-activation block: conv_i → bn_(i+1)
        return list(module.conv_norm_pairs)
    if isinstance(module, BLOCK_CLASSES) or hasattr(module, "stages"):  # post-activation block, or the stem
        return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
    return []


def folded_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The full names of each (conv, BN) pair ``inference_copy`` folds into one conv."""
    pairs = []
    for prefix, module in model.named_modules():
        for conv_name, bn_name in _fold_pairs(module):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs.append((f"{prefix}.{conv_name}".lstrip("."), f"{prefix}.{bn_name}".lstrip(".")))
    return pairs


@torch.no_grad()
def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for evaluation only: each batch norm that directly follows a conv folded into it (the
    same outputs in eval mode, to rounding), in channels-last memory; about 1.3× faster on a CPU."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fast = copy.deepcopy(model).float().eval()
    for conv_name, bn_name in folded_pairs(fast):
        parent, _, conv_leaf = conv_name.rpartition(".")
        module = fast.get_submodule(parent)
        setattr(module, conv_leaf, fuse_conv_bn_eval(fast.get_submodule(conv_name), fast.get_submodule(bn_name)))
        setattr(module, bn_name.rpartition(".")[2], nn.Identity())
    return fast.to(memory_format=torch.channels_last)


@torch.no_grad()
def refold(fast: nn.Module, model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Set ``fast`` (an ``inference_copy`` of a network like ``model``) to ``model``'s current weights, folding
    each pair again, without copying the network."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    own = dict(model.named_parameters())
    folded = set()
    for conv_name, bn_name in pairs:
        conv, bn, target = model.get_submodule(conv_name), model.get_submodule(bn_name), fast.get_submodule(conv_name)
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
        target.weight.copy_(weight)
        target.bias.copy_(bias)
        folded |= {f"{conv_name}.weight", f"{conv_name}.bias"}
    for name, p in fast.named_parameters():
        if name not in folded:
            p.copy_(own[name])
