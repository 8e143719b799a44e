"""The anchor of the training benchmarks: the loop people write with torchvision transforms and a DataLoader."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from resnet_viz import build_model, preset
from resnet_viz.data import CIFAR_MEAN, CIFAR_STD
from resnet_viz.training import param_groups


def plain_loop_images_per_s(folder: Path, device: torch.device, workers: int, steps: int, warmup: int = 5) -> float:
    """Images/s of ResNet-20 trained in fp32 at batch 128 from ImageFolder(folder) with RandomCrop(32, padding=4),
    RandomHorizontalFlip, ToTensor and Normalize, over ``steps`` steps after ``warmup``."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    loader = torch.utils.data.DataLoader(ImageFolder(folder, transform), batch_size=128, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0, drop_last=True,
                                         pin_memory=device.type == "cuda")
    model = build_model(preset("resnet20"), device=device)
    optimizer = torch.optim.SGD(param_groups(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    images, start, step = 0, 0.0, 0
    while True:
        for x, y in loader:
            if step == warmup:
                _sync(device)
                images, start = 0, time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(y)
            step += 1
            if step > warmup + steps:
                _sync(device)
                return images / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
