"""Inside a trained network, for one image: the feature maps of the stem and of every stage, and for every
residual block its skip ``x``, its residual branch ``F(x)`` and their sum, read with forward hooks on one real
forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model import BLOCK_CLASSES, PreActBlock, branch_end, hooked_forward


@dataclass(frozen=True)
class BlockLook:
    """One block on one image (tensors of the first image in the batch, (C, H, W))."""

    name: str
    skip: torch.Tensor | None  # what the skip carries to the addition; None in a plain block
    branch: torch.Tensor  # F(x): the residual branch's output, just before the addition
    total: torch.Tensor  # F(x) + skip, before any ReLU: the block's sum (its branch alone in a plain block)

    @property
    def branch_norm(self) -> float:
        return float(self.branch.norm())

    @property
    def skip_norm(self) -> float | None:
        return None if self.skip is None else float(self.skip.norm())

    @property
    def ratio(self) -> float | None:
        """‖F(x)‖ / ‖x‖: how much the block changes what the skip carries (None without a skip)."""
        skip = self.skip_norm
        return None if skip is None else self.branch_norm / max(skip, 1e-12)


class _Watch:
    """Hooks that copy, as the forward runs, what each block adds (its tensors change in place afterwards)."""

    def __init__(self, model: nn.Module):
        self.blocks = {name: m for name, m in model.named_modules() if isinstance(m, BLOCK_CLASSES)}
        self.seen: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.blocks}
        self.handles: list = []

    def attach(self, handles: list) -> None:
        self.handles = handles  # hooked_forward removes them
        for name, block in self.blocks.items():
            seen = self.seen[name]
            self._hook(branch_end(block), "branch", seen)
            if block.skip and block.downsample is not None:
                self._hook(block.downsample, "skip", seen)
            elif block.skip:
                self.handles.append(block.register_forward_pre_hook(
                    lambda m, inputs, seen=seen: seen.__setitem__("skip", inputs[0][0].detach().clone())))
            if isinstance(block, PreActBlock):  # nothing follows the addition: the block's output is the sum
                self._hook(block, "total", seen)
            else:  # the last ReLU's input is the sum (the ReLU then works in place on it)
                self.handles.append(block.relu.register_forward_pre_hook(
                    lambda m, inputs, seen=seen: seen.__setitem__("total", inputs[0][0].detach().clone())))

    def _hook(self, module: nn.Module, key: str, seen: dict) -> None:
        self.handles.append(module.register_forward_hook(
            lambda m, inputs, output: seen.__setitem__(key, output[0].detach().clone())))


@torch.no_grad()
def look_inside(model: nn.Module, x: torch.Tensor) -> dict[str, BlockLook]:
    """Every block of ``model`` (a network built by resnet_viz) on the first image of the batch ``x``: skip,
    branch and sum. One forward pass in eval mode; the model's mode and hooks are restored."""
    watch = _Watch(model)
    hooked_forward(model, x, watch.attach)
    return {name: BlockLook(name, seen.get("skip"), seen["branch"], seen["total"])
            for name, seen in watch.seen.items()}


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first image's feature maps out of the stem (what the first stage receives) and out of every stage
    (``layer1``...), (C, H, W) each, from one forward pass in eval mode."""
    stages = [name for name, _ in model.named_children() if name.startswith("layer")]
    maps: dict[str, torch.Tensor] = {}

    def attach(handles: list) -> None:
        handles.append(getattr(model, stages[0]).register_forward_pre_hook(  # the stem's output: stage 1's input
            lambda m, inputs: maps.__setitem__("stem", inputs[0][0].detach().clone())))
        for name in stages:
            handles.append(getattr(model, name).register_forward_hook(
                lambda m, inputs, output, name=name: maps.__setitem__(name, output[0].detach().clone())))

    hooked_forward(model, x, attach)
    return maps
