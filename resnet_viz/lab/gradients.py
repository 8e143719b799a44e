"""Gradients at initialisation (He et al. 2016, Sec. 4.2; Balduzzi et al. 2017, "The shattered gradients
problem"): for freshly initialised networks, the norm of the loss's gradient with respect to every convolution's
weights, for one batch, in network order. In a plain network the gradient fades (or swells) with the distance
from the loss; the skips of a residual network carry it to the first layers.

The batch is drawn from the seed (random images and labels), or taken from the data; batch norm runs as in the
first training step (batch statistics)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ResNetConfig
from ..errors import ConfigError
from ..model import build_model

MAX_BATCH = 512
_SEEDING = threading.Lock()


def seeded_model(config: ResNetConfig, seed: int) -> nn.Module:
    """The network a config describes, initialised from ``seed`` (the caller's random state is left as it was)."""
    with _SEEDING, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(config)


def init_gradients(config: ResNetConfig, seed: int = 0, batch_size: int = 64,
                   images: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> list[dict]:
    """One row per convolution (the stem, the branches' and the projections'), in network order: the layer, its
    depth among the weighted layers, and the norm of the loss's gradient with respect to its weights."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch size {batch_size} — the gradients at initialisation take 1 to {MAX_BATCH} images")
    model = seeded_model(config, seed).train()
    generator = torch.Generator().manual_seed(seed + 1)
    if images is None:
        images = torch.randn((batch_size, *config.input_shape), generator=generator)
        labels = torch.randint(0, config.num_classes, (batch_size,), generator=generator)
    loss = F.cross_entropy(model(images[:batch_size]), labels[:batch_size])
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads = torch.autograd.grad(loss, [m.weight for _, m in convs])
    rows, depth = [], 0
    for (name, module), grad in zip(convs, grads):
        shortcut = ".downsample" in name
        depth += 0 if shortcut else 1
        rows.append({"layer": name, "depth": depth, "kind": "shortcut" if shortcut else type(module).__name__.lower(),
                     "grad_norm": float(grad.norm()), "weight_norm": float(module.weight.detach().norm())})
    return rows


def gradient_study(configs: list[ResNetConfig], seed: int = 0, batch_size: int = 64,
                   images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, list[dict]]:
    """``init_gradients`` for each config, by its name (the same batch for all)."""
    found = {}
    for done, config in enumerate(configs, 1):
        found[config.name] = init_gradients(config, seed, batch_size, images, labels)
        if progress:
            progress(done, len(configs))
    return found
