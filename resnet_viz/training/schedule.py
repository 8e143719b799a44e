"""The learning-rate schedule and the optimizer's parameter groups."""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """Share of the peak learning rate at a point of the run (0..1)."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup and progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    rest = (progress - warmup) / (1 - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * rest))
    return 1.0 - rest


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and fc weights; none on BN parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
