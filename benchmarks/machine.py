"""The machine a benchmark ran on, in one line: the CPU model, its cores and the vector flags that decide
PyTorch's kernels (AVX2, AVX-512, native bf16, AMX), and torch's version and threads."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu() -> tuple[str, set[str]]:
    """The CPU's model name and flags, from /proc/cpuinfo (elsewhere: platform's name, no flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", platform.machine()), set(fields.get("flags", "").split())


def describe() -> str:
    import torch

    model, flags = cpu()
    vector = " ".join(f for f in FLAGS if f in flags) or "none of " + " ".join(FLAGS)
    bf16 = "native bf16" if {"avx512_bf16", "amx_bf16"} & flags else "no native bf16"
    return (f"{model}, {os.cpu_count()} cores, flags: {vector} ({bf16}); torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
