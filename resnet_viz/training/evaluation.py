"""How well a network does on a split: accuracy and a per-class table, with or without flip test-time
augmentation, on one process or split over several."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ResNetConfig
from ..data import Dataset, DeviceBatches, flip
from ..errors import ConfigError
from .checkpoints import load_checkpoint
from .devices import autocast, pick_device, pick_precision


def check_classes(config: ResNetConfig, data: Dataset, what: str = "the network", hint: str = "") -> None:
    """Refuse a network whose outputs are not the dataset's classes."""
    if config.num_classes != len(data.classes):
        raise ConfigError(f"{what} has {config.num_classes} outputs but {data.name} has {len(data.classes)} "
                          f"classes{hint}")


@torch.no_grad()
def evaluate(model: nn.Module, split: DeviceBatches, num_classes: int, precision: str = "fp32",
             flip_tta: bool = False, batch_size: int = 1024,
             part: tuple[int, int] = (0, 1)) -> tuple[float, torch.Tensor]:
    """Accuracy over a split (or over its ``part=(rank, parts)``) and a (num_classes, 2) tensor of
    (correct, total) per class. ``precision`` "bf16" runs the model under bf16 autocast."""
    model.eval()
    table = torch.zeros(num_classes, 2, dtype=torch.long)
    for x, y in split.epoch(batch_size, augment=False, generator=None, drop_last=False, part=part):
        with autocast(split.device, precision):
            logits = model(x).float()
            if flip_tta:
                logits = logits.softmax(1) + model(flip(x)).float().softmax(1)
        hit = (logits.argmax(1) == y).cpu()
        y = y.cpu()
        table[:, 1] += torch.bincount(y, minlength=num_classes)
        table[:, 0] += torch.bincount(y[hit], minlength=num_classes)
    return share(table), table


def share(table: torch.Tensor) -> float:
    """Accuracy from a (classes, 2) table of (correct, total)."""
    return int(table[:, 0].sum()) / max(int(table[:, 1].sum()), 1)


def accuracy(model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 512,
             flip_tta: bool = False) -> float:
    """Validation accuracy, in float32 (with flip test-time augmentation if asked)."""
    batches = DeviceBatches(data.val, device, data.mean, data.std)
    return evaluate(model, batches, len(data.classes), batch_size=batch_size, flip_tta=flip_tta)[0]


def per_class_rows(classes: tuple[str, ...], table: torch.Tensor,
                   flipped: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """One row per class: images, correct, accuracy, and with ``flipped`` the accuracy with flip TTA."""
    rows = []
    for i, name in enumerate(classes):
        row = {"class": name, "images": int(table[i, 1]), "correct": int(table[i, 0]),
               "accuracy": float(table[i, 0] / max(table[i, 1], 1))}
        if flipped is not None:
            row["accuracy_flip"] = float(flipped[i, 0] / max(flipped[i, 1], 1))
        rows.append(row)
    return rows


def evaluate_checkpoint(path: str | Path, data: Dataset, split: str = "val", device: str = "auto",
                        flip_tta: bool = False, opener=load_checkpoint) -> tuple[float, list[dict[str, Any]]]:
    """Accuracy of a saved model on a dataset's split, and its per-class table. ``opener(path, device)`` opens
    the file as (model, config, meta): a low-bit network's opener returns it computing as quantized."""
    device = pick_device(device)
    model, config, meta = opener(path, device)
    check_classes(config, data, "the checkpoint")
    chosen = {"val": data.val, "train": data.train}[split]
    # normalise as in training: with the training set's statistics stored in the checkpoint
    batches = DeviceBatches(chosen, device, tuple(meta["mean"]), tuple(meta["std"]), channels_last=False)
    acc, table = evaluate(model, batches, len(data.classes), pick_precision("auto", device), flip_tta)
    return acc, per_class_rows(data.classes, table)
