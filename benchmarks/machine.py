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
    return (f"{model}{_family()}, {os.cpu_count()} cores, flags: {vector} ({bf16}); torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def _family() -> str:
    """" (family F, model M)" from /proc/cpuinfo: it tells CPUs apart whose model name is only "AMD EPYC" (family
    25 is Zen 3 and Zen 4: model 1 is Milan, Zen 3; model 17 is Genoa, Zen 4)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    if "cpu family" not in fields:
        return ""
    return f" (family {fields['cpu family']}, model {fields.get('model', '?')})"


def fp32_peak_gflops() -> tuple[float, str]:
    """The CPU's nominal fp32 peak (all cores, fused multiply-adds on every lane) and how it was worked out:
    cores × clock × FLOPs a cycle, with two FMA units a core (Zen 3, Zen 4 and most Xeons have two; Zen 4's
    are 256 bits wide, so AVX-512 does not double its peak). Rough, as any
    peak: the clock is the one /proc/cpuinfo reports, without turbo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        mhz = float(next(line.split(":")[1] for line in text.splitlines() if line.startswith("cpu MHz")))
    except (OSError, StopIteration, ValueError):
        return float("nan"), "unknown (no /proc/cpuinfo clock)"
    model, flags = cpu()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4  # fp32 values in one vector register
    if "AMD" in model:  # Zen 4 runs AVX-512 on its 256-bit units, two passes an instruction
        lanes = min(lanes, 8)
    fused = "fma" in flags or "avx512f" in flags  # a multiply and an add in one instruction
    per_cycle = 2 * lanes * (2 if fused else 1)  # two units, each on every lane
    cores = os.cpu_count() or 1
    return cores * mhz * per_cycle / 1000, f"{cores} cores × {mhz / 1000:.2f} GHz × {per_cycle:g} FLOPs a cycle"
