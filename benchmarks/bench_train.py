"""Training speed on this machine: our loop against the plain loop people write, in one run.

    .venv/bin/python -m benchmarks.bench_train --data PATH_TO/cifar10-jpeg-train.tar.gz [--steps 40]
    .venv/bin/python -m benchmarks.bench_train --data ... --budget 240     # also: accuracy in 4 minutes, defaults
    .venv/bin/python -m benchmarks.bench_train --data ... --precision fp32  # the fp32 path on a bf16 CPU

The plain loop (the anchor): torchvision's ImageFolder over the extracted JPEGs with RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor and Normalize, a DataLoader (batch 128, shuffled, 2 workers), fp32, SGD with
Nesterov momentum. Ours: resnet_viz.training.Trainer (the split decoded once and held as one tensor, augmented
on the device, bf16 autocast where the CPU has it, channels_last). Same model (ResNet-20), same machine.
Images/s are steady-state: the first steps (warm-up, worker start) are not counted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks import machine
from benchmarks.plain_loop import plain_loop_images_per_s
from resnet_viz import preset, trace
from resnet_viz.data import default_cache_dir, load_dataset
from resnet_viz.training import DEFAULTS, Trainer, TrainSettings


def our_images_per_s(data, steps: int, warmup: int = 5, batch_size: int = 256, compile: bool = False,
                     precision: str = "auto", low_res: bool = False) -> tuple[float, str]:
    """Steady-state images/s of our loop; ``low_res``: every step on the downscaled (24×24) images of the first
    part of a run with progressive resizing."""
    rates: list[tuple[int, float]] = []
    settings = TrainSettings(epochs=1000, batch_size=batch_size, lr=0.2, compile=compile, precision=precision,
                             low_res=0.99 if low_res else 0.0)
    trainer = Trainer(preset("resnet20"), data, settings)

    def on_progress(p) -> None:
        rates.append((p.step, p.elapsed))
        if p.step >= warmup + steps:
            trainer.stop()

    trainer.run(on_progress=on_progress)
    (s0, t0), (s1, t1) = rates[warmup - 1], rates[warmup + steps - 1]
    return (s1 - s0) * batch_size / (t1 - t0), trainer.precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the CIFAR-10 JPEG .tar.gz (or its extracted folder)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budget", type=float, help="also train ResNet-20 at the default settings for this many "
                        "seconds and report accuracy")
    parser.add_argument("--compile", action="store_true", help="our loop with torch.compile (the compile is warm-up)")
    parser.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                        help="fp32: our loop in fp32 even on a CPU with bf16 (the path of CPUs without it)")
    args = parser.parse_args()
    print(machine.describe())
    data = load_dataset(args.data)
    extracted = next((default_cache_dir() / "archives").glob("*/train")) if args.data.endswith("gz") else \
        Path(args.data) / "train"
    print(f"{data.describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    plain = plain_loop_images_per_s(extracted, torch.device("cpu"), workers=2, steps=args.steps)
    print(f"plain loop (DataLoader + torchvision transforms, fp32, batch 128): {plain:,.0f} images/s")
    rates = {"plain loop": plain}
    for batch, low_res in ((256, False), (128, False), (128, True)):
        rate, precision = our_images_per_s(data, args.steps, batch_size=batch, compile=args.compile,
                                           precision=args.precision, low_res=low_res)
        how = f"{precision}, channels_last{', torch.compile' if args.compile else ''}, batch {batch}" + \
            (", 24×24 (the low-resolution share of a run)" if low_res else "")
        rates[how] = rate
        print(f"ours ({how}): {rate:,.0f} images/s = {rate / plain:.2f}× the plain loop")
    full, low = rates[next(k for k in rates if k.endswith("batch 128"))], rates[next(k for k in rates if "24×24" in k)]
    share = DEFAULTS.low_res
    mixed = 1 / (share / low + (1 - share) / full)
    print(f"ours over a run with the default low-resolution share {share:g} at batch 128: {mixed:,.0f} images/s = "
          f"{mixed / plain:.2f}× the plain loop")
    # a training image costs a forward pass and a backward pass of about twice its FLOPs
    flops = 3 * trace(preset("resnet20")).totals.flops
    peak, how = machine.fp32_peak_gflops()
    # bf16 dot products do twice the fp32 work a cycle: a bf16 run may pass the fp32 peak
    for name, rate in (("plain loop (fp32)", plain), (f"ours at batch 128, 32×32 ({precision})", full)):
        print(f"{name}: {rate * flops / 1e9:.1f} GFLOP/s ({flops / 1e9:.3f} GFLOP a training image), "
              f"{rate * flops / 1e9 / peak:.1%} of the fp32 FMA peak of {peak:.0f} GFLOP/s ({how})")
    if args.budget:
        trainer = Trainer(preset("resnet20"), data, TrainSettings(time_budget=args.budget,
                                                                   precision=args.precision))
        print(f"{trainer.precision}: {trainer.choose().describe()}")
        result = trainer.run()
        print(f"ResNet-20 in {result.train_seconds:.0f} s of training ({result.epochs_done:g} epochs, "
              f"{result.images_per_s:,.0f} images/s, {trainer.precision}): validation {result.val_acc:.2%}, "
              f"{result.val_acc_flip:.2%} with flip TTA")


if __name__ == "__main__":
    main()
