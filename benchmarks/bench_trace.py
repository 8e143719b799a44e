"""Trace speed against torchinfo.summary, measured in one run on this machine.

    .venv/bin/python -m benchmarks.bench_trace [--repeat 5] [--json out.json]

For each case it times, on the same model object, warm and best of --repeat calls:
  - torchinfo.summary (the anchor: runs the real forward),
  - a plain forward on the meta device with forward hooks (the obvious approach),
  - resnet_viz.trace(model),
and, cold, resnet_viz.trace(config) including building the weightless meta model.
Ratios are anchor time / our time. Results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torchinfo

from benchmarks import machine
from resnet_viz import build_model, preset, trace
from resnet_viz.tracing.tracer import _META_MODELS

CASES = [  # (preset, batch, input side)
    ("resnet50", 1, 224),
    ("resnet50", 64, 224),
    ("resnet50", 1, 448),
    ("resnet152", 1, 224),
    ("resnet1202", 1, 32),
    ("resnet20", 1, 32),
    ("wrn-28-10", 1, 32),
    ("preresnet164", 1, 32),
    ("resnext101_32x8d", 1, 224),
]


def best_of(fn, repeat: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def meta_forward_with_hooks(meta_model, shape) -> None:
    shapes = []

    def hook(module, inputs, output):
        shapes.append(tuple(output.shape))

    handles = [m.register_forward_hook(hook) for m in meta_model.modules()]
    try:
        with torch.no_grad():
            meta_model(torch.empty(shape, device="meta"))
    finally:
        for h in handles:
            h.remove()


def measure(name: str, batch: int, side: int, repeat: int) -> dict:
    cfg = preset(name, input_size=(side, side))
    model = build_model(cfg).eval()
    shape = (batch, *cfg.input_shape)
    info_repeat = repeat if batch == 1 else min(repeat, 3)  # torchinfo takes seconds at batch 64
    t_info = best_of(lambda: torchinfo.summary(model, input_size=shape, verbose=0, device="cpu"), info_repeat)
    meta = build_model(cfg, device="meta")
    t_meta = best_of(lambda: meta_forward_with_hooks(meta, shape), repeat)
    t_ours = best_of(lambda: trace(model, batch_size=batch), repeat)

    def cold():
        _META_MODELS.clear()
        trace(cfg, batch_size=batch)

    t_cold = best_of(cold, repeat)
    return {"case": f"{name} b{batch} {side}×{side}", "torchinfo_s": t_info, "meta_hooks_s": t_meta,
            "ours_s": t_ours, "ours_cold_s": t_cold, "speedup_vs_torchinfo": t_info / t_ours,
            "speedup_vs_meta_hooks": t_meta / t_ours}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    print(machine.describe())
    torch.set_grad_enabled(True)
    print(f"torchinfo {torchinfo.__version__}")

    # our trace before anything else runs a real forward: at batch 64 the peak RSS must not move
    big = build_model(preset("resnet50"))
    trace(big)  # first-call imports and caches
    before = rss_mib()
    trace(big, batch_size=64)
    rss_growth = rss_mib() - before
    print(f"peak RSS growth while tracing resnet50 at batch 64: {rss_growth:.1f} MiB")

    results = []
    header = f"{'case':<28}{'torchinfo':>11}{'meta+hooks':>12}{'ours':>10}{'ours cold':>11}{'vs torchinfo':>14}"
    print(header)
    print("-" * len(header))
    for name, batch, side in CASES:
        row = measure(name, batch, side, args.repeat)
        print(f"{row['case']:<28}{row['torchinfo_s']:>10.3f}s{row['meta_hooks_s']:>11.3f}s{row['ours_s']:>9.4f}s"
              f"{row['ours_cold_s']:>10.3f}s{row['speedup_vs_torchinfo']:>13.1f}×")
        results.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rss_growth_mib": rss_growth, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
