"""The lesion study of Veit et al. (2016), "Residual networks behave like ensembles of relatively shallow
networks": remove one residual block's branch at a time, then k random blocks at once, and see what validation
accuracy is left.

Removing a block's branch leaves its skip: an identity block becomes the identity (its input, after the
block's last ReLU, which changes nothing on the non-negative output of a post-activation block), a
downsampling block becomes its shortcut. A plain block has no skip: one that keeps the shape becomes the
identity too (the chain of layers is cut), one that changes the shape cannot be removed at all."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..model import BLOCK_CLASSES, PreActBlock, ResNet, branch_end
from .networks import inference_copy


class Bypass(nn.Module):
    """A block without its residual branch: what its skip carries (then its last ReLU, after a post-activation
    block)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.downsample = block.downsample
        self.project_pre = getattr(block, "project", False)
        self.bn1 = block.bn1 if self.project_pre else None  # a pre-activation projection takes BN → ReLU(x)
        self.post_relu = not isinstance(block, PreActBlock)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(torch.relu(self.bn1(x)) if self.bn1 is not None else x)
        return torch.relu(x) if self.post_relu else x


def _strided(block: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.stride != (1, 1) for m in block.modules())


def _channels(block: nn.Module) -> tuple[int, int]:
    """The channels a block's branch takes and gives."""
    end = branch_end(block)
    return block.conv1.in_channels, end.num_features if isinstance(end, nn.BatchNorm2d) else end.out_channels


def why_not_removable(block: nn.Module) -> str | None:
    """None if the block's branch can be removed; else why not, in words."""
    if getattr(block, "skip", False):
        return None
    inside, outside = _channels(block)
    if _strided(block) or inside != outside:
        return "a plain block that changes the shape: nothing is left to carry its input on"
    return None


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every residual block, in network order, by name ("layer1.0")."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BLOCK_CLASSES)]


@dataclass(frozen=True)
class Lesion:
    """The network cut into stem, blocks and head, with a bypass for each removable block."""

    model: ResNet
    names: list[str]
    blocks: list[nn.Module]
    bypass: list[nn.Module | None]  # None where the block cannot be removed
    reasons: list[str | None]  # why not, where it cannot

    @classmethod
    def of(cls, model: nn.Module) -> Lesion:
        if not isinstance(model, ResNet):
            raise ConfigError("the lesion study needs a network built by resnet_viz (a stem, blocks and a head)")
        reasons = [why_not_removable(b) for _, b in blocks_of(model)]
        model = inference_copy(model)  # never the caller's (pages share their networks), with BN folded
        found = blocks_of(model)
        return cls(model, [n for n, _ in found], [b for _, b in found],
                   [Bypass(b) if why is None else None for (_, b), why in zip(found, reasons)], reasons)

    @property
    def removable(self) -> list[int]:
        return [i for i, b in enumerate(self.bypass) if b is not None]

    @torch.no_grad()
    def correct(self, x: torch.Tensor, y: torch.Tensor, variants: list[frozenset[int]]) -> dict[frozenset[int], int]:
        """How many of the images each variant (a set of removed blocks) gets right. The variants are walked as a
        tree: those that agree on the first i blocks share their computation up to block i, so each block runs
        once for every distinct way of getting to it."""
        counts: dict[frozenset[int], int] = {}

        def walk(h: torch.Tensor, i: int, group: list[frozenset[int]]) -> None:
            if i == len(self.blocks):
                hits = int((self.model.head(h).argmax(1) == y).sum())
                counts.update(dict.fromkeys(group, hits))
                return
            keep, drop = [v for v in group if i not in v], [v for v in group if i in v]
            if keep:
                walk(self.blocks[i](h), i + 1, keep)
            if drop:
                walk(self.bypass[i](h), i + 1, drop)

        walk(self.model.stem(x.contiguous(memory_format=torch.channels_last)), 0, variants)
        return counts


def random_sets(removable: list[int], draws: int, seed: int) -> dict[int, list[frozenset[int]]]:
    """For k = 1…n, ``draws`` different random sets of k removable blocks (all of them where there are fewer)."""
    generator = torch.Generator().manual_seed(seed)
    sets: dict[int, list[frozenset[int]]] = {}
    n = len(removable)
    for k in range(1, n + 1):
        if math.comb(n, k) <= draws:
            sets[k] = [frozenset(c) for c in itertools.combinations(removable, k)]
            continue
        chosen: list[frozenset[int]] = []
        while len(chosen) < draws:
            pick = frozenset(removable[int(i)] for i in torch.randperm(n, generator=generator)[:k])
            if pick not in chosen:
                chosen.append(pick)
        sets[k] = chosen
    return sets


def lesion_study(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, draws: int = 4, seed: int = 0,
                 batch_size: int = 100, progress: Callable[[int, int], None] | None = None) -> dict:
    """Validation accuracy with nothing removed, with each block removed alone, and with k random blocks removed
    (``draws`` sets for each k). ``images`` are normalised float images. Accuracies are fractions."""
    if draws < 1:
        raise ConfigError(f"draws: {draws} — the random lesions need 1 or more per k")
    lesion = Lesion.of(model)
    singles = [frozenset((i,)) for i in lesion.removable]
    sets = random_sets(lesion.removable, draws, seed)
    wanted = list(dict.fromkeys([frozenset(), *singles, *itertools.chain.from_iterable(sets.values())]))
    correct = dict.fromkeys(wanted, 0)
    batches = math.ceil(len(images) / batch_size)
    for b in range(batches):
        x, y = images[b * batch_size:(b + 1) * batch_size], labels[b * batch_size:(b + 1) * batch_size]
        for removed, hits in lesion.correct(x, y, wanted).items():
            correct[removed] += hits
        if progress:
            progress(b + 1, batches)
    share = {removed: hits / len(images) for removed, hits in correct.items()}
    single = []
    for i, name in enumerate(lesion.names):
        reason = lesion.reasons[i]
        single.append({"block": name, "accuracy": share.get(frozenset((i,))), "removable": reason is None,
                       **({"why_not": reason} if reason else {})})
    return {"baseline": share[frozenset()], "images": len(images), "draws": draws, "seed": seed, "single": single,
            "random": [{"k": k, "accuracy": [share[s] for s in chosen],
                        "removed": [[lesion.names[i] for i in sorted(s)] for s in chosen]}
                       for k, chosen in sets.items()]}
