"""The degradation experiment (He et al. 2016, Fig. 6), run here: plain and residual networks of two depths,
trained with one recipe on one dataset, then their training curves drawn together. Before it starts it says how
long it will take on this device, from a measured training step of each network."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import PRESETS, ResNetConfig
from ..data import Dataset
from ..errors import ConfigError
from ..model import build_model
from ..training import Progress, Result, Trainer, TrainSettings, pick_device
from ..training.defaults import device_batch

DEPTHS = (20, 56)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)


def degradation_configs(depths: tuple[int, ...], classes: int) -> list[ResNetConfig]:
    """plain-d and ResNet-d for each depth (the paper's CIFAR networks), with the dataset's classes."""
    if not depths or any(d not in CIFAR_DEPTHS for d in depths):
        given = ", ".join(map(str, depths)) or "none"
        raise ConfigError(f"depths {given} — pick from {', '.join(map(str, CIFAR_DEPTHS))}")
    return [dataclasses.replace(PRESETS[f"{kind}{d}"], num_classes=classes) for d in depths
            for kind in ("plain", "resnet")]


@dataclass(frozen=True)
class Estimate:
    """How long each network's training will take here, from one measured step."""

    rows: list[tuple[str, float]]  # (network, seconds for the whole run)

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.rows)

    def describe(self) -> str:
        each = ", ".join(f"{name} {_duration(s)}" for name, s in self.rows)
        return f"about {_duration(self.seconds)} in all on this device ({each}), measured from one training step each"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def estimate(configs: list[ResNetConfig], data: Dataset, settings: TrainSettings) -> Estimate:
    """Time a forward and backward of one batch of each network on the training device (after a warm-up), and
    scale it to the run's epochs."""
    device = pick_device(settings.device)
    batch = settings.batch_size or device_batch(device)
    shape = tuple(data.train.images.shape[1:])
    steps = settings.epochs * math.ceil(len(data.train) / batch)
    rows = []
    for config in configs:
        model = build_model(config, device=device).train()
        x = torch.randn((batch, *shape), device=device)
        y = torch.randint(0, config.num_classes, (batch,), device=device)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            F.cross_entropy(model(x), y).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rows.append((config.name, min(times[1:]) * steps * 1.15))  # plus the optimizer and data, roughly
    return Estimate(rows)


def train_all(configs: list[ResNetConfig], data: Dataset, settings: TrainSettings, out: Path,
              on_start: Callable[[str], None] | None = None,
              on_progress: Callable[[Progress], None] | None = None,
              stop: Callable[[], bool] | None = None) -> list[Result]:
    """Train each network with the same settings into ``out/NAME``; ``stop()`` ends the current run (saved as
    usual) and skips the rest."""
    results = []
    for config in configs:
        if stop and stop():
            break
        if on_start:
            on_start(config.name)
        trainer = Trainer(config, data, settings, out_dir=out / config.name)
        trainer.choose()

        def progress(p: Progress, trainer=trainer) -> None:
            if stop and stop():
                trainer.stop()
            if on_progress:
                on_progress(p)
        results.append(trainer.run(on_progress=progress))
    return results
