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
    return precision_and_why(setting, device)[0]


def precision_and_why(setting: str, device: torch.device) -> tuple[str, str]:
    """The precision a run uses ("bf16" autocast or "fp32") and why, in words, for a setting of "auto", "bf16"
    or "fp32": "auto" takes bf16 only where the hardware computes it natively."""
    if setting != "auto":
        return setting, "as asked"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "this GPU computes bf16 natively"
        return "fp32", "this GPU has no bf16"
    if device.type == "cpu":
        if _cpu_has_bf16():
            return "bf16", "this CPU computes bf16 natively (AVX-512 bf16 or AMX)"
        return "fp32", "this CPU has no native bf16 (no AVX-512 bf16, no AMX), where bf16 would be slower than fp32"
    return "fp32", f"bf16 autocast is not used on {device.type}"


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
