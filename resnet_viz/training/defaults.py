"""The batch size and learning rate a run takes when they are not given: chosen for the device and, with a time
budget, for the speed measured in the run's first seconds, so that the budget buys enough steps.

The rule (the README repeats it):

- The device's batch: 512 on a CUDA GPU, 128 on a CPU or an Apple GPU (on a CPU a batch of 512 runs no faster per
  image than one of 128 and makes a quarter of the steps).
- With a time budget, on one process, the first steps measure the images/s at that batch; the batch is then
  halved, down to 32 at least, until the budget buys at least ``MIN_STEPS`` steps at that speed.
- The peak learning rate follows the batch by the square root: 0.4 × √(batch / 512), so 0.4 at 512, 0.2 at 128.

An explicit batch size or learning rate always wins; under torchrun the device's batch is taken without a
measurement (the processes would have to agree on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GPU_BATCH = 512
OTHER_BATCH = 128
SMALLEST_BATCH = 32
MIN_STEPS = 500
BASE_LR, BASE_BATCH = 0.4, 512


@dataclass(frozen=True)
class Choice:
    """The batch size and peak learning rate a run takes, and why, in words."""

    batch_size: int
    lr: float
    why: str

    def describe(self) -> str:
        return f"batch {self.batch_size}, peak learning rate {self.lr:.3g} ({self.why})"


def device_batch(device: torch.device) -> int:
    return GPU_BATCH if device.type == "cuda" else OTHER_BATCH


def lr_for(batch_size: int) -> float:
    """The peak learning rate for a batch: square-root scaling from 0.4 at 512."""
    return round(BASE_LR * math.sqrt(batch_size / BASE_BATCH), 4)


def needs_measuring(batch_size: int | None, time_budget: float | None, processes: int) -> bool:
    """Whether the batch is chosen from the speed measured in the first steps."""
    return batch_size is None and time_budget is not None and processes == 1


def budget_batch(start: int, images_per_s: float, time_budget: float, multiple: int = 1) -> int:
    """The largest of ``start``, start/2, start/4 … (down to ``SMALLEST_BATCH``) at which ``time_budget`` seconds
    at ``images_per_s`` buy at least ``MIN_STEPS`` steps; a multiple of ``multiple``."""
    batch = start
    while batch // 2 >= max(SMALLEST_BATCH, multiple) and time_budget * images_per_s / batch < MIN_STEPS:
        batch //= 2
    return max(batch - batch % multiple, multiple)


def choose(batch_size: int | None, lr: float | None, device: torch.device, *, time_budget: float | None = None,
           images_per_s: float | None = None, multiple: int = 1) -> Choice:
    """The batch and learning rate for what was given (None: choose it). ``images_per_s``, measured at the
    device's batch, lets a time budget lower the batch; without it the device's batch stands. A chosen batch is
    a multiple of ``multiple`` (the processes × micro-batches it splits into)."""
    if batch_size is not None:
        why = "batch as given"
    else:
        start = device_batch(device)
        batch_size = max(start - start % multiple, multiple)
        why = f"{batch_size} suits {_DEVICE_WORDS.get(device.type, 'this device')}"
        if time_budget is not None and images_per_s is not None:
            batch_size = budget_batch(start, images_per_s, time_budget, multiple)
            steps = time_budget * images_per_s / batch_size
            why = (f"{batch_size}: {time_budget:g} s at the {images_per_s:,.0f} images/s measured buy about "
                   f"{steps:,.0f} steps")
    if lr is None:
        return Choice(batch_size, lr_for(batch_size), f"{why}; learning rate 0.4 × √(batch/512)")
    return Choice(batch_size, lr, f"{why}; learning rate as given")


_DEVICE_WORDS = {"cuda": "a CUDA GPU", "cpu": "the CPU", "mps": "an Apple GPU"}


def plan(batch_size: int | None, lr: float | None, device: torch.device, *, time_budget: float | None = None,
         processes: int = 1) -> str:
    """What a run will take, in words, before it starts (before any speed is measured)."""
    choice = choose(batch_size, lr, device)
    if not needs_measuring(batch_size, time_budget, processes):
        return choice.describe()
    lr_text = "its peak learning rate 0.4 × √(batch/512)" if lr is None else f"peak learning rate {lr:g}"
    return (f"batch {choice.batch_size} on this device; the first steps measure the speed there, and the batch "
            f"is halved (down to {SMALLEST_BATCH}) until {time_budget:g} s buy at least {MIN_STEPS:,} steps; "
            f"{lr_text}")
