"""Where and in what precision a run computes: the device ("auto" picks cuda, then mps, then cpu), bf16
autocast where the hardware has it, and the autocast context for a device and precision."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import torch

from ..errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"device {name!r} is not a device name such as cpu, cuda, cuda:1 or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for, but PyTorch sees no CUDA GPU here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("device mps was asked for, but it is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_precision(setting: str, device: torch.device) -> str:
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and _cpu_has_bf16():
        return "bf16"
    return "fp32"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast on ``device`` for precision "bf16"; for "fp32", autocast explicitly off."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)
