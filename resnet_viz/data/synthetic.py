"""Random CIFAR-shaped data that can be learned: no download, for demos and tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .splits import Dataset, Split, make_dataset, scaled_limit

SYNTHETIC_NAME = "synthetic (random) data"


def synthetic_dataset(seed: int = 0, train_per_class: int = 500, val_per_class: int = 100, num_classes: int = 10,
                      limit_per_class: int | None = None) -> Dataset:
    """Random CIFAR-shaped images that can be learned: each class has its own smooth random template
    (4×4 noise upsampled to 32×32), and each image is its class's template plus pixel noise."""
    if limit_per_class is not None and limit_per_class < train_per_class:
        val_per_class = scaled_limit(limit_per_class, val_per_class, train_per_class)
        train_per_class = limit_per_class
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    templates = 40 + 175 * F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)

    def sample(per_class: int) -> Split:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        noise = 48 * torch.randn(len(labels), 3, 32, 32, generator=g)
        return Split((templates[labels] + noise).round().clamp(0, 255).to(torch.uint8), labels)

    train, val = sample(train_per_class), sample(val_per_class)
    classes = tuple(f"class {i}" for i in range(num_classes))
    return make_dataset(SYNTHETIC_NAME, classes, train, val, "a separate synthetic sample", synthetic=True)
