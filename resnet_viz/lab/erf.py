"""The effective receptive field (Luo et al. 2016, "Understanding the effective receptive field in deep
convolutional neural networks"): how strongly each input pixel moves the centre unit of a stage's output, as the
gradient of that unit (summed over its channels) with respect to the input, in absolute value, summed over the
colour channels and averaged over images. Eval mode, so each image's gradient is its own (batch statistics would
mix the images, and spread the gradient over every pixel).

The theoretical receptive field comes from the trace: its side, and the jump (the input pixels between
neighbouring output positions). Every convolution and pool of these networks pads so that output position i is
centred on input pixel i × jump, so the centre unit's field is the square of that side around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..model import ResNet
from ..tracing import trace


@dataclass(frozen=True)
class Field:
    """One stage's effective receptive field on (H, W) inputs."""

    stage: str  # "stem", "layer1"...
    gradient: np.ndarray  # (H, W) mean |∂ centre unit / ∂ input|, summed over colour channels
    centre: tuple[int, int]  # the input pixel the centre unit is centred on
    unit: tuple[int, int]  # the centre unit's position in the stage's output
    theoretical: tuple[int, int] | None  # side of the theoretical receptive field (from the trace)

    def box(self) -> tuple[int, int, int, int] | None:
        """The theoretical field as (top, left, bottom, right), inclusive, clipped to the image."""
        if self.theoretical is None:
            return None
        h, w = self.gradient.shape
        (cy, cx), (sy, sx) = self.centre, self.theoretical
        return (max(cy - (sy - 1) // 2, 0), max(cx - (sx - 1) // 2, 0),
                min(cy + sy // 2, h - 1), min(cx + sx // 2, w - 1))

    def mass_side(self, share: float) -> int:
        """The side of the smallest square centred on the centre pixel that holds ``share`` of the gradient mass."""
        total = float(self.gradient.sum())
        if total <= 0:
            return 0
        h, w = self.gradient.shape
        cy, cx = self.centre
        for r in range(max(h, w)):
            inside = self.gradient[max(cy - r, 0):cy + r + 1, max(cx - r, 0):cx + r + 1].sum()
            if inside >= share * total * (1 - 1e-9):
                return 2 * r + 1
        return 2 * max(h, w) - 1

    def row(self) -> dict:
        box, side = self.box(), self.theoretical
        return {"stage": self.stage, "unit": list(self.unit), "centre": list(self.centre),
                "theoretical_side": None if side is None else side[0], "erf_50": self.mass_side(0.5),
                "erf_90": self.mass_side(0.9), "box": None if box is None else list(box),
                "gradient_outside": None if box is None else float(self._outside(box))}

    def _outside(self, box: tuple[int, int, int, int]) -> float:
        top, left, bottom, right = box
        mask = np.ones_like(self.gradient, dtype=bool)
        mask[top:bottom + 1, left:right + 1] = False
        return float(np.abs(self.gradient[mask]).sum())


def stage_fields(model: ResNet, input_size: tuple[int, int, int]) -> dict[str, tuple[tuple[int, int] | None,
                                                                                         tuple[int, int] | None]]:
    """Each stage's theoretical receptive field side and jump, from a trace of the network."""
    layers = {layer.name: layer for layer in trace(model, input_size).layers}
    stem = "maxpool" if model.maxpool is not None else ("bn1" if model.bn1 is not None else "conv1")
    names = {"stem": stem, **{f"layer{i}": f"layer{i}" for i in range(1, len(model.stages) + 1)}}
    return {stage: (layers[name].receptive_field, layers[name].jump) for stage, name in names.items()}


def _stage_output(model: ResNet, x: torch.Tensor, stage: str) -> torch.Tensor:
    h = model.stem(x)
    if stage == "stem":
        return h
    for i, block in enumerate(model.stages, 1):
        h = block(h)
        if stage == f"layer{i}":
            return h
    raise ConfigError(f"no stage {stage!r}")


def effective_fields(model: nn.Module, images: torch.Tensor,
                     progress: Callable[[int, int], None] | None = None) -> list[Field]:
    """The effective receptive field of the stem and of every stage, on normalised float ``images``."""
    if not isinstance(model, ResNet):
        raise ConfigError("the receptive-field study needs a network built by resnet_viz")
    fields = stage_fields(model, tuple(images.shape[1:]))
    was_training = model.training
    model.eval()
    found = []
    try:
        for done, (stage, (side, jump)) in enumerate(fields.items(), 1):
            x = images.detach().clone().requires_grad_(True)
            out = _stage_output(model, x, stage)
            unit = (out.shape[2] // 2, out.shape[3] // 2)
            # each image's unit depends on that image alone, so one backward gives every image's gradient
            (grad,) = torch.autograd.grad(out[:, :, unit[0], unit[1]].sum(), x)
            gradient = grad.abs().sum(1).mean(0).double().numpy()
            centre = (unit[0] * jump[0], unit[1] * jump[1]) if jump else (x.shape[2] // 2, x.shape[3] // 2)
            found.append(Field(stage, gradient, centre, unit, side))
            if progress:
                progress(done, len(fields))
    finally:
        model.train(was_training)
    return found
