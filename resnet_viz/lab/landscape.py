"""The loss landscape (Li et al. 2018, "Visualizing the loss landscape of neural nets"): the training loss at
θ + α·δ (a line) and θ + α·δ + β·η (a surface), for random directions δ, η with *filter normalisation*: each
filter of a direction (a conv's output channel, a linear layer's output row) is rescaled to the norm of the weight
filter it belongs to. Biases and batch-norm parameters get no direction (the paper's ``--xignore biasbn``).

Batch norm is evaluated as the paper's code evaluates it (``net.eval()`` in its ``eval_loss``): with the trained
running statistics, unchanged at every point."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .networks import folded_pairs, inference_copy, refold

MAX_STEPS = 51


def direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction, filter-normalised to ``model``'s weights; zero for every 1-D parameter."""
    found = {}
    for name, weight in model.named_parameters():
        if weight.dim() <= 1:
            found[name] = torch.zeros_like(weight)
            continue
        d = torch.randn(weight.shape, generator=generator, dtype=weight.dtype).to(weight.device)
        w_norms = weight.detach().flatten(1).norm(dim=1)
        d_norms = d.flatten(1).norm(dim=1)
        found[name] = d * (w_norms / (d_norms + 1e-10)).view(-1, *([1] * (d.dim() - 1)))
    return found


def grid(span: float, steps: int) -> np.ndarray:
    if not 2 <= steps <= MAX_STEPS:
        raise ConfigError(f"steps: {steps} — a landscape needs 2 to {MAX_STEPS} points along each axis")
    if not 0 < span <= 10:
        raise ConfigError(f"span: {span} — the distance along each direction must be above 0 and at most 10")
    return np.linspace(-span, span, steps)


class Walker:
    """A copy of the network whose weights can be set to θ + Σ cᵢ·dᵢ, and its loss and accuracy there."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128):
        self.model = copy.deepcopy(model).float().eval()
        self.origin = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.pairs = folded_pairs(self.model)
        self.fast = inference_copy(self.model)  # what evaluates: refolded from the moved weights at each point

    @torch.no_grad()
    def move(self, steps: list[tuple[float, dict[str, torch.Tensor]]]) -> None:
        for name, p in self.model.named_parameters():
            p.copy_(self.origin[name])
            for size, d in steps:
                p.add_(d[name], alpha=float(size))

    @torch.no_grad()
    def loss(self) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over the images (in eval mode: the trained BN statistics), computed by
        a copy of the moved network with its batch norms folded into the convs."""
        refold(self.fast, self.model, self.pairs)
        fast = self.fast
        total, hits = 0.0, 0
        for start in range(0, len(self.images), self.batch_size):
            x, y = self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]
            logits = fast(x.contiguous(memory_format=torch.channels_last)).float()
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            hits += int((logits.argmax(1) == y).sum())
        return total / len(self.images), hits / len(self.images)


def loss_landscape(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, span: float = 1.0,
                   steps: int = 11, line_steps: int = 11, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """The loss along one direction (``line_steps`` points) and over two (``steps`` × ``steps``), both from
    -``span`` to ``span``. Directions are drawn from ``seed``. A point of the line that lies on the surface's
    middle row (β = 0) is computed once: with ``line_steps`` equal to ``steps`` (odd), the line costs nothing."""
    xs, line = grid(span, steps), grid(span, line_steps)
    generator = torch.Generator().manual_seed(seed)
    walker = Walker(model, images, labels)
    d1, d2 = direction(walker.model, generator), direction(walker.model, generator)
    points = list(dict.fromkeys([(_key(b), _key(a)) for b in xs for a in xs] + [(0.0, _key(a)) for a in line]))
    found: dict[tuple[float, float], tuple[float, float]] = {}
    for done, (b, a) in enumerate(points, 1):
        walker.move([(a, d1), (b, d2)])
        found[(b, a)] = walker.loss()
        if progress:
            progress(done, len(points))
    walker.move([])
    origin_loss, origin_acc = found.get((0.0, 0.0)) or walker.loss()
    surface = [[found[(_key(b), _key(a))][0] for a in xs] for b in xs]  # rows: the second direction
    return {"origin_loss": origin_loss, "origin_accuracy": origin_acc, "images": len(images), "seed": seed,
            "points": len(points),
            "line": {"alpha": line.tolist(), "loss": [found[(0.0, _key(a))][0] for a in line],
                     "accuracy": [found[(0.0, _key(a))][1] for a in line]},
            "surface": {"alpha": xs.tolist(), "beta": xs.tolist(), "loss": surface}}


def _key(value: float) -> float:
    """A grid coordinate as a key: the line's and the surface's points that coincide get the same one."""
    return round(float(value), 9) + 0.0  # + 0.0 turns -0.0 into 0.0
