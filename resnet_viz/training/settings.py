"""How a network is trained: ``TrainSettings``, one frozen dataclass whose fields declare, once, their
command-line flag, their help and whether they define the run (a resumed run keeps those) or only say where and
how fast it runs. The ``train`` command's parser, the torchrun command, the resume rules and the app's Train page
all read these declarations."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

SCHEDULES = ("onecycle", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")


def setting(default: Any, help: str, *, flag: str | None = None, run: bool = True, metavar: str | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A field of TrainSettings: ``help`` says what it is; ``flag`` is its command-line option (None: not one);
    ``run``: it defines the run (what is computed), so a resumed run keeps it; else it only says where and how
    fast the run goes, and a resumed run may change it."""
    meta = {"help": help, "flag": flag, "run": run, "metavar": metavar, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainSettings:
    """How to train. Learning rates are per step, for the batch size given."""

    epochs: int = setting(10, "epochs to train", flag="--epochs")
    batch_size: int | None = setting(None, "the global batch, over all processes (default: chosen for the device "
                                     "and the time budget; see the README)", flag="--batch-size")
    lr: float | None = setting(None, "peak learning rate (default: 0.4 × √(batch/512))", flag="--lr")
    momentum: float = setting(0.9, "Nesterov momentum")
    weight_decay: float = setting(5e-4, "weight decay, on conv and fc weights only")
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss")
    schedule: str = setting("onecycle", "onecycle: linear up, linear down; cosine: linear up, cosine down",
                            flag="--schedule", choices=SCHEDULES)
    warmup: float = setting(0.2, "share of the run spent warming up")
    low_res: float = setting(0.5, "share of the run, from its start, trained on images downscaled to 3/4 of their "
                             "side (progressive resizing; 0: none)", flag="--low-res", metavar="SHARE")
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps", flag="--device",
                          run=False)
    precision: str = setting("auto", "auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
                             flag="--precision", run=False, choices=PRECISIONS)
    compile: bool = setting(False, "torch.compile the model", flag="--compile", run=False)
    time_budget: float | None = setting(None, "seconds of training; the schedule anneals into it and the run stops "
                                        "there", flag="--time-budget", metavar="S")
    seed: int = setting(0, "seed of the initial weights, the data order and the augmentations", flag="--seed")
    inspect_every: int = setting(0, "steps between looks inside the blocks (0: once an epoch)", run=False)
    micro_batches: int = setting(1, "take each process's share of a batch in this many passes, gradients "
                                 "accumulated", flag="--micro-batches", run=False, metavar="K")
    sync_bn: bool = setting(False, "several GPU processes: BatchNorm statistics over the global batch "
                            "(SyncBatchNorm)", flag="--sync-bn", run=False)

    def __post_init__(self) -> None:
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ConfigError("epochs and batch size must be 1 or more")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate {self.lr} — it must be a positive number")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"time budget {self.time_budget} s — it must be more than 0")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warm-up {self.warmup} — it is a share of the run, from 0 to below 1")
        if self.micro_batches < 1:
            raise ConfigError(f"micro-batches {self.micro_batches} — it must be 1 or more")
        if not 0 <= self.low_res < 1:
            raise ConfigError(f"low-resolution share {self.low_res} — it is a share of the run, from 0 to below 1")
        if self.batch_size is not None and self.batch_size % self.micro_batches:
            raise ConfigError(f"the batch size {self.batch_size} does not split into {self.micro_batches} "
                              "micro-batches: use a multiple of it")


SETTINGS = {f.name: f for f in dataclasses.fields(TrainSettings)}
DEFAULTS = TrainSettings()
# settings a resumed run may change: where and how fast it runs, not what it computes
RESUME_MAY_CHANGE = tuple(name for name, f in SETTINGS.items() if not f.metadata["run"])


def flagged() -> list[dataclasses.Field]:
    """The settings that have a command-line flag, in declaration order."""
    return [f for f in SETTINGS.values() if f.metadata["flag"]]


def help_of(name: str) -> str:
    """A setting's help as a sentence of its own: for a form's tooltip."""
    text = SETTINGS[name].metadata["help"]
    return f"{text[:1].upper()}{text[1:]}"


def changed_run_setting(a: TrainSettings, b: TrainSettings) -> str | None:
    """The first setting that defines the run and differs between ``a`` and ``b``, or None."""
    return next((name for name, f in SETTINGS.items() if f.metadata["run"] and getattr(a, name) != getattr(b, name)),
                None)
