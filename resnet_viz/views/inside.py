"""Inside a trained network, for one image: the feature maps of the stem and of every stage, and for every
residual block its skip ``x``, its residual branch ``F(x)`` and their sum, read with forward hooks on one real
forward pass."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, require
from ..model import BLOCK_CLASSES, PreActBlock, branch_end, hooked_forward
from . import pictures


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

    def pictures(self, channel: int | None = None, cell: int = 96) -> dict[str, np.ndarray]:
        """``x``, ``F(x)`` and ``F(x) + x`` as pictures (the channel mean, or one channel), all three on one
        diverging scale centred on zero, so a branch that changes little looks faint. A plain block has no ``x``."""
        if channel is not None and not 0 <= channel < self.branch.shape[0]:
            raise ConfigError(f"channel {channel} is not one of block {self.name}'s {self.branch.shape[0]} channels "
                              f"(0 to {self.branch.shape[0] - 1})")
        parts = {"x": self.skip, "F(x)": self.branch, "F(x) + x" if self.skip is not None else "output": self.total}
        maps = {k: (t.float().mean(0) if channel is None else t[channel].float()) for k, t in parts.items()
                if t is not None}
        limit = max(float(m.abs().max()) for m in maps.values())
        return {k: pictures.enlarge(pictures.signed(m, limit), cell) for k, m in maps.items()}


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


def look_inside(model: nn.Module, x: torch.Tensor) -> dict[str, BlockLook]:
    """Every block of ``model`` (a network built by resnet_viz) on the first image of the batch ``x``: skip,
    branch and sum. One forward pass in eval mode; the model's mode and hooks are restored."""
    return _observe(model, x)[2]


def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first image's feature maps out of the stem (what the first stage receives) and out of every stage
    (``layer1``...), (C, H, W) each, from one forward pass in eval mode."""
    return _observe(model, x)[1]


def stage_names(model: nn.Module) -> list[str]:
    """The stages of a network built by resnet_viz: ``layer1``, ``layer2``..."""
    return [name for name, _ in model.named_children() if name.startswith("layer")]


def _observe(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, BlockLook]]:
    """The logits, the feature maps and every block's look, from one forward pass."""
    watch, maps = _Watch(model), {}
    stages = stage_names(model)

    def attach(handles: list) -> None:
        watch.attach(handles)
        handles.append(getattr(model, stages[0]).register_forward_pre_hook(
            lambda m, inputs: maps.__setitem__("stem", inputs[0][0].detach().clone())))
        for name in stages:
            handles.append(getattr(model, name).register_forward_hook(
                lambda m, inputs, output, name=name: maps.__setitem__(name, output[0].detach().clone())))

    logits = hooked_forward(model, x, attach)
    blocks = {name: BlockLook(name, seen.get("skip"), seen["branch"], seen["total"])
              for name, seen in watch.seen.items()}
    return logits[0].detach().float(), maps, blocks


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of class ``target`` at the output of the module ``layer``, by captum's
    ``LayerGradCam``: the ReLU of the feature maps weighted by their gradients' spatial mean, (h, w) at that
    layer's own resolution."""
    LayerGradCam = require("captum.attr", "inside", "Grad-CAM").LayerGradCam

    was_training = model.training
    model.eval()
    try:
        cam = LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=target, relu_attributions=True)
    finally:
        model.train(was_training)
    return cam[0, 0].detach()


INTEGRATION_STEPS = 32


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, steps: int = INTEGRATION_STEPS
                         ) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) of class ``target`` for the input pixels, by captum, from
    a baseline of zeros (after normalisation: the training set's mean colour), (C, H, W)."""
    IntegratedGradients = require("captum.attr", "inside", "Integrated Gradients").IntegratedGradients

    was_training = model.training
    model.eval()
    try:
        attribution = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                           n_steps=steps, internal_batch_size=steps)
    finally:
        model.train(was_training)
    return attribution[0].detach()


@dataclass(frozen=True)
class Inside:
    """What a trained network does with one image: its prediction, its feature maps, each block's skip, branch
    and sum, where it looks (Grad-CAM at every stage's output, Integrated Gradients on the pixels) and its first
    layer's filters."""

    classes: tuple[str, ...]
    probabilities: torch.Tensor  # (classes,)
    target: int  # the class the attributions explain
    maps: dict[str, torch.Tensor]  # "stem", "layer1"...: (C, H, W)
    blocks: dict[str, BlockLook]
    cams: dict[str, torch.Tensor]  # stage -> Grad-CAM at its own resolution, (h, w)
    pixels_attribution: torch.Tensor | None  # Integrated Gradients, (C, H, W); None when not asked for
    stem_filters: torch.Tensor  # the first conv's weights, (out, in, k, k)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        values, indices = self.probabilities.topk(min(k, len(self.probabilities)))
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def residual(self) -> bool:
        return any(look.skip is not None for look in self.blocks.values())

    def block_rows(self) -> list[dict[str, float | str | None]]:
        return [{"block": name, "branch_norm": look.branch_norm, "skip_norm": look.skip_norm, "ratio": look.ratio}
                for name, look in self.blocks.items()]

    def to_json(self) -> dict:
        return {
            "predictions": [{"class": name, "probability": p} for name, p in self.top(5)],
            "predicted": self.classes[self.predicted],
            "explained_class": self.classes[self.target],
            "feature_maps": {name: list(t.shape) for name, t in self.maps.items()},
            "blocks": self.block_rows(),
        }


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def class_names(meta: dict, count: int) -> tuple[str, ...]:
    """The classes a checkpoint's facts name, or "class 0", "class 1"... when it names none."""
    names = tuple(meta.get("classes") or ())
    return names if len(names) == count else tuple(f"class {i}" for i in range(count))


def normalise(pixels: np.ndarray, meta: dict) -> torch.Tensor:
    """RGB uint8 (C, H, W) as the network was trained to see it: (x / 255 - mean) / std with the training set's
    statistics stored in the checkpoint, (1, C, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float().div(255)
    c = x.shape[0]
    mean = torch.tensor(meta.get("mean") or [0.0] * c).view(-1, 1, 1)
    std = torch.tensor(meta.get("std") or [1.0] * c).view(-1, 1, 1)
    return ((x - mean) / std)[None]


def open_inside(model: nn.Module, pixels: np.ndarray, meta: dict, target: int | None = None,
                attribution: bool = True) -> Inside:
    """Everything the Inside page and ``inside`` show for one image, RGB uint8 (C, H, W) at the network's input
    size, and a checkpoint's ``meta`` (its normalisation and class names): one hooked forward, Grad-CAM of
    ``target`` (default: the predicted class) at every stage and, with ``attribution``, Integrated Gradients."""
    wanted = first_conv(model).in_channels
    if pixels.shape[0] != wanted:
        raise ConfigError(f"this network takes {wanted}-channel images, and the image has {pixels.shape[0]} channels")
    x = normalise(pixels, meta).to(next(model.parameters()).device)
    logits, maps, blocks = _observe(model, x)
    probabilities = logits.softmax(0).cpu()
    target = int(probabilities.argmax()) if target is None else target
    if not 0 <= target < len(probabilities):
        raise ConfigError(f"class {target} is not one of the network's {len(probabilities)} outputs")
    cams = {stage: grad_cam(model, x, stage, target) for stage in stage_names(model)}
    ig = integrated_gradients(model, x, target) if attribution else None
    return Inside(class_names(meta, len(probabilities)), probabilities, target, maps, blocks, cams, ig,
                  first_conv(model).weight.detach().float().cpu())


def inside_files(inside: Inside, pixels: np.ndarray, facts: dict, channels: int = 16, channel: int | None = None
                 ) -> dict[str, bytes]:
    """What ``inside`` writes: the image as the network sees it, the feature maps (the ``channels`` most active of
    each), every block's x, F(x) and sum, Grad-CAM at every stage, Integrated Gradients, the stem's filters, as
    PNGs, and ``inside.json`` (``facts`` first: the network, the image...)."""
    files = {"input.png": pictures.png(pictures.enlarge(pictures.image(pixels), 128))}
    for name, maps in inside.maps.items():
        shown = pictures.most_active(maps, channels)
        files[f"features-{name}.png"] = pictures.png(pictures.feature_grid(maps, shown))
    for name, look in inside.blocks.items():
        files[f"block-{name}.png"] = pictures.png(pictures.tile(list(look.pictures(channel).values()), 3, gap=8))
    for stage, cam in inside.cams.items():
        files[f"gradcam-{stage}.png"] = pictures.png(pictures.enlarge(pictures.overlay(pixels, cam), 128))
    if inside.pixels_attribution is not None:
        files["integrated-gradients.png"] = pictures.png(pictures.enlarge(
            pictures.overlay(pixels, inside.pixels_attribution.abs().sum(0)), 128))
    files["stem-filters.png"] = pictures.png(pictures.filters(inside.stem_filters))
    files["inside.json"] = (json.dumps({**facts, **inside.to_json()}, indent=2) + "\n").encode()
    return files


def pixel_attribution(model: nn.Module, pixels: np.ndarray, meta: dict, target: int) -> torch.Tensor:
    """Integrated Gradients of class ``target`` for an image, RGB uint8 (C, H, W): what ``open_inside`` adds with
    ``attribution=True``, on its own (the page computes it only when it is shown)."""
    return integrated_gradients(model, normalise(pixels, meta).to(next(model.parameters()).device), target)
