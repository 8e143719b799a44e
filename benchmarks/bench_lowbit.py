"""Low-bit quantization of the shipped ResNet-20 that holds: a progressive LSQ schedule (each stage starting from
the last stage's weights on their grids), with the fine-tune epochs and the CPU time of every stage, and the accuracy as
quantized with and without flip TTA against float32, on the validation split of the shared CIFAR-10 archive.

    .venv/bin/python -m benchmarks.bench_lowbit --data path/to/cifar10-jpeg-train.tar.gz \\
        [--schedule 4:2,3:4,2:6] [--method lsq] [--init mse] [--lr 0.005] [--no-distill] [--out runs/lowbit] \\
        [--start runs/lowbit/W4A4.pt]

Targets (against float32, with and without flip TTA): W4A4 within 1.0 point, W3A3 within 2.0, W2A2 within 5.0;
the first conv and the fc stay at 8 bits. With --out, each stage's fine-tuned network is saved there as a
checkpoint (``W4A4.pt`` …) and as a packed file (``W4A4.rvq``), with ``lowbit.json``. Results go in
benchmarks/README.md. ``--start`` goes on from a stage saved that way (``--schedule 3:4,2:6 --start W4A4.pt``):
its weights, on their grids, are where the first stage starts; the shipped float32 network stays the teacher and
the reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from benchmarks import machine
from resnet_viz.data import load_dataset
from resnet_viz.quantization.lsq import bake_learned
from resnet_viz.quantization.packed import SUFFIX, packed_bytes, weight_sizes
from resnet_viz.quantization.qat import LEARNED_LR, parse_schedule, progressive_finetune
from resnet_viz.training import checkpoint_bytes, load_checkpoint

TARGETS = {4: 1.0, 3: 2.0, 2: 5.0}  # points below float32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--schedule", default="4:2,3:4,2:6")
    p.add_argument("--method", default="lsq", choices=["lsq", "pact"])
    p.add_argument("--lr", type=float, default=LEARNED_LR)
    p.add_argument("--init", default="mse", choices=["mse", "lsq"], help="where each step starts")
    p.add_argument("--no-distill", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--start", help="a stage's checkpoint (W4A4.pt) for the first stage to start from")
    p.add_argument("--limit", type=int, help="images per class (a quick check; the figures use all of them)")
    args = p.parse_args()
    print(machine.describe())
    model, config, meta = load_checkpoint("bundled:resnet20")
    data = load_dataset(args.data, limit_per_class=args.limit)
    data = dataclasses.replace(data, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    float_flip = meta.get("val_acc_flip")
    start_from = load_checkpoint(args.start)[0] if args.start else None
    rows, start = [], time.perf_counter()

    def stage(i: int, r: dict) -> None:
        row = {k: r[k] for k in ("bits", "method", "epochs", "distilled", "float32", "before", "after", "after_flip",
                                 "train_seconds")}
        row.update(init=args.init, lr=args.lr, start=args.start, float32_flip=float_flip,
                   wall_seconds=time.perf_counter() - start, layer_bits=r["layer_bits"])
        rows.append(row)
        gap, gap_flip = 100 * (r["float32"] - r["after"]), 100 * ((float_flip or 0) - r["after_flip"])
        target = TARGETS.get(r["bits"])
        verdict = "" if target is None else f" target {target}: {'met' if max(gap, gap_flip) <= target else 'MISSED'}"
        print(f"W{r['bits']}A{r['bits']} {r['epochs']} epochs, {r['train_seconds']:.0f} s: before {r['before']:.2%}, "
              f"after {r['after']:.2%} ({gap:.2f} points below float32), flip TTA {r['after_flip']:.2%} "
              f"({gap_flip:.2f} below){verdict}", flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            baked, quantization = bake_learned(r["model"])
            facts = {"mean": meta["mean"], "std": meta["std"], "classes": meta["classes"], "quantization": quantization}
            (args.out / f"W{r['bits']}A{r['bits']}.pt").write_bytes(checkpoint_bytes(baked.float(), config, facts))
            packed = packed_bytes(baked.float(), config, facts)
            (args.out / f"W{r['bits']}A{r['bits']}{SUFFIX}").write_bytes(packed)
            row.update(file_bytes=len(packed), **{f"weight_bytes_{k}": v for k, v in
                                                  weight_sizes(baked, quantization["layers"]).items()})
            (args.out / "lowbit.json").write_text(json.dumps({"machine": machine.describe(), "stages": rows},
                                                             indent=2))

    progressive_finetune(model, config, data, torch.device("cpu"), parse_schedule(args.schedule),
                         distill=not args.no_distill, on_stage=stage, method=args.method, lr=args.lr,
                         init=args.init, start=start_from)


if __name__ == "__main__":
    main()
