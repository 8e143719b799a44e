"""One split on the training device, served as normalised batches and augmented there on the whole batch:
no DataLoader and no per-image Python work sits in the training loop."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..errors import DataError
from .splits import Split

CROP_PADDING = 4


class DeviceBatches:
    """One split on a device, served as normalised float32 batches, augmented there on the whole batch.

    The ``generator`` given to ``epoch`` must live on the same device as the data
    (``torch.Generator(device=device)``): the order, crops and flips are drawn from it there.
    """

    def __init__(self, split: Split, device: torch.device | str, mean: tuple[float, ...], std: tuple[float, ...],
                 *, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.images = split.images.to(self.device)  # uint8 (N, C, H, W)
        self.labels = split.labels.to(self.device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.channels_last = channels_last
        std_t = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add
        self._scale, self._shift = 1 / (255 * std_t), -mean_t / std_t

    def __len__(self) -> int:
        return self.images.shape[0]

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        _check_batch_size(batch_size)
        return len(self) // batch_size if drop_last else math.ceil(len(self) / batch_size)

    def epoch(self, batch_size: int, *, augment: bool, generator: torch.Generator | None,
              drop_last: bool = True, part: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(x, y)``: with ``augment``, in a random order with random crops and flips; else in order.
        ``part=(rank, parts)`` serves only every ``parts``-th image from the ``rank``-th on (evaluation split
        over processes); the parts together hold each image once."""
        _check_batch_size(batch_size)
        rank, parts = part
        images, labels = (self.images, self.labels) if parts == 1 else (self.images[rank::parts],
                                                                         self.labels[rank::parts])
        n = images.shape[0]
        if augment:
            if generator is None or generator.device.type != self.device.type:
                raise DataError(f"augmenting needs a torch.Generator on the data's device ({self.device}), "
                                f"got {'none' if generator is None else generator.device}")
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        batches = n // batch_size if drop_last else math.ceil(n / batch_size)
        for start in range(0, batches * batch_size, batch_size):
            index = order[start:start + batch_size]
            batch = images[index]
            if augment:
                batch = crop_and_flip(batch, generator)
            yield self._normalise(batch), labels[index]

    def shard_indices(self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Which images a process trains on in an epoch: row k holds its share of the epoch's k-th global batch.

        The epoch's order is one permutation drawn from ``(seed, epoch)``, the same in every process; global
        batch k is ``order[k*batch_size:(k+1)*batch_size]`` and process ``rank`` of ``world`` takes the
        ``rank``-th of its ``world`` equal slices. So the global batches do not depend on the number of
        processes, and the processes' shards together hold each image of the epoch once (the last
        ``len % batch_size`` images of the order sit the epoch out)."""
        _check_batch_size(batch_size)
        share = _share(batch_size, world)
        order = torch.randperm(len(self), generator=_generator(self.device, seed, epoch), device=self.device)
        steps = len(self) // batch_size
        return order[:steps * batch_size].view(steps, world, share)[:, rank]

    def global_batches(self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                       start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share ``(x, y)`` of each global training batch of an epoch, from batch ``start`` on,
        cropped and flipped. Each batch's crops and flips are drawn for the whole global batch from
        ``(seed, epoch, k)`` (each process draws them on its own device and keeps its slice), so the images a
        step trains on are the same for any number of processes, and a run resumed at batch ``start`` sees
        exactly what the uninterrupted run saw."""
        index = self.shard_indices(batch_size, seed=seed, epoch=epoch, rank=rank, world=world)
        share = index.shape[1]
        mine = slice(rank * share, (rank + 1) * share)
        for k in range(start, index.shape[0]):
            shifts = crop_shifts(batch_size, _generator(self.device, seed, epoch, k), self.device)
            images = shift_and_flip(self.images[index[k]], *(t[mine] for t in shifts))
            yield self._normalise(images), self.labels[index[k]]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = images.to(torch.float32, memory_format=fmt)
        return x.mul_(self._scale).add_(self._shift)


def downscale(x: torch.Tensor, factor: float = 0.75) -> torch.Tensor:
    """A batch (B, C, H, W) resized to ``factor`` of its side (antialiased bilinear), in the same memory format:
    the low-resolution images of progressive resizing."""
    size = (max(1, round(x.shape[2] * factor)), max(1, round(x.shape[3] * factor)))
    small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return small.contiguous(memory_format=fmt)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"the batch size must be a whole number of 1 or more, got {batch_size!r}")


def crop_and_flip(images: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """The standard CIFAR augmentation on a whole batch (B, C, H, W) at once: each image shifted by up to
    ``padding`` pixels each way with zeros filling in (a random crop of the zero-padded image), and
    mirrored left-right with probability 0.5. One gather does both; the result is channels_last in memory."""
    return shift_and_flip(images, *crop_shifts(images.shape[0], generator, images.device, padding), padding)


def crop_shifts(n: int, generator: torch.Generator, device: torch.device | str,
                padding: int = CROP_PADDING) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``n`` images: vertical and horizontal shifts in [-padding, padding] and mirror flags, each (n, 1)."""
    dy = torch.randint(-padding, padding + 1, (n, 1), generator=generator, device=device)
    dx = torch.randint(-padding, padding + 1, (n, 1), generator=generator, device=device)
    mirror = torch.rand(n, 1, generator=generator, device=device) < 0.5
    return dy, dx, mirror


def shift_and_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mirror: torch.Tensor,
                   padding: int = CROP_PADDING) -> torch.Tensor:
    """Each image shifted by (dy, dx) with zeros filling in, and mirrored where ``mirror``: one gather."""
    b, _, h, w = images.shape
    device = images.device
    cols = torch.arange(w, device=device).expand(b, w)
    cols = torch.where(mirror, w - 1 - cols, cols)
    rows = torch.arange(h, device=device) + dy + padding  # (B, H), into the padded image
    cols = cols + dx + padding  # (B, W)
    padded = F.pad(images, (padding, padding, padding, padding))
    batch = torch.arange(b, device=device).view(b, 1, 1)
    # advanced indices around a slice: the result is (B, H, W, C)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _share(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise DataError(f"the batch size {batch_size} does not split evenly over {world} processes: "
                        f"use a multiple of {world}")
    return batch_size // world


def _generator(device: torch.device, *parts: int) -> torch.Generator:
    """A generator on ``device`` seeded from a few whole numbers, mixed so that nearby tuples give unrelated
    streams (splitmix64 finaliser)."""
    seed = 0
    for part in parts:
        seed = (seed ^ (part & (2**64 - 1))) * 0x9E3779B97F4A7C15 % 2**64
        seed ^= seed >> 30
        seed = seed * 0xBF58476D1CE4E5B9 % 2**64
        seed ^= seed >> 27
    return torch.Generator(device=device).manual_seed(seed % 2**63)


def flip(x: torch.Tensor) -> torch.Tensor:
    """A batch (B, C, H, W) mirrored left-right, for test-time augmentation."""
    return x.flip(3)
