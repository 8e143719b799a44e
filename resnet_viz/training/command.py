"""The exact command that trains a network with given settings: plain ``python -m resnet_viz train`` for one
process, ``torchrun`` for several GPUs or machines. The flags come from ``TrainSettings``' own declarations, so
the command parses back to the same run."""

from __future__ import annotations

import dataclasses
import shlex

from ..config import PRESETS, ResNetConfig
from ..errors import ConfigError
from .settings import DEFAULTS, TrainSettings, flagged


def arch_arguments(config: ResNetConfig) -> tuple[list[str], bool]:
    """The ``train`` arguments that name ``config``: a preset and its overrides where that is enough, else the
    config's JSON file (``NAME.json``), which must then be saved beside the command. Returns (arguments,
    whether the JSON file is needed)."""
    base = PRESETS.get(config.name)
    if base is not None:
        flags: list[str] = []
        changes = {}
        if config.shortcut != base.shortcut:
            flags += ["--shortcut", config.shortcut]
            changes["shortcut"] = config.shortcut
        if config.num_classes != base.num_classes:
            flags += ["--classes", str(config.num_classes)]
            changes["num_classes"] = config.num_classes
        if (config.in_channels, config.input_size) != (base.in_channels, base.input_size):
            flags += ["--input", "x".join(str(v) for v in config.input_shape)]
            changes.update(in_channels=config.in_channels, input_size=config.input_size)
        if config.dropout != base.dropout:
            flags += ["--dropout", f"{config.dropout:g}"]
            changes["dropout"] = config.dropout
        if dataclasses.replace(base, **changes) == config:
            return [config.name, *flags], False
    return [f"{config.name}.json"], True


def launcher(nproc_per_node: int, nnodes: int, endpoint: str) -> list[str]:
    """``python -m resnet_viz`` for one process; torchrun on one machine or meeting at ``endpoint``."""
    if nproc_per_node * nnodes == 1:
        return ["python", "-m", "resnet_viz"]
    if nnodes == 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={nproc_per_node}", "-m", "resnet_viz"]
    return ["torchrun", f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}", "--rdzv_id=resnet-viz", "-m", "resnet_viz"]


def settings_arguments(settings: TrainSettings, processes: int) -> list[str]:
    """The flags that give ``settings``: each one that differs from its default, and epochs, batch size and
    learning rate always where they are given (left out, each process chooses them by the same rule). With
    several processes each takes its own GPU (or the CPU), so only "cpu" or "cuda" is passed as the device, and
    SyncBN only applies there."""
    args: list[str] = []
    always = {"epochs", "batch_size", "lr"}
    for f in flagged():
        value, flag = getattr(settings, f.name), f.metadata["flag"]
        if value is None or (value == getattr(DEFAULTS, f.name) and f.name not in always):
            continue
        if f.name == "device" and processes > 1 and value not in ("cpu", "cuda"):
            continue
        if f.name == "sync_bn" and processes == 1:
            continue
        if isinstance(value, bool):
            args.append(flag)
        else:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def train_command(config: ResNetConfig, settings: TrainSettings, data: str, out: str, *,
                  nproc_per_node: int = 1, nnodes: int = 1, endpoint: str = "HOST:29500",
                  limit_per_class: int | None = None) -> tuple[str, bool]:
    """The exact command that trains ``config`` with ``settings`` on ``data``: ``torchrun`` with
    ``nproc_per_node`` processes on each of ``nnodes`` machines (the machines meet at ``endpoint``), or plain
    ``python -m resnet_viz`` for one process. Returns (command, whether ``NAME.json`` must be saved with it)."""
    if nproc_per_node < 1 or nnodes < 1:
        raise ConfigError("the number of machines and of processes per machine must be 1 or more")
    arch, needs_file = arch_arguments(config)
    args = ["train", *arch, "--data", data]
    if limit_per_class:
        args += ["--limit-per-class", str(limit_per_class)]
    args += [*settings_arguments(settings, nproc_per_node * nnodes), "--out", out]
    return shlex.join(launcher(nproc_per_node, nnodes, endpoint) + args), needs_file
