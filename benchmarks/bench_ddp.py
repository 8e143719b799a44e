"""Training speed with 1 and with N processes (torchrun + DistributedDataParallel), in one run.

    .venv/bin/python -m benchmarks.bench_ddp --data PATH_TO/cifar10-jpeg-train.tar.gz [--nproc 2] [--steps 40]

The anchor is the 1-process run of the same command, measured in the same invocation: ResNet-20, the same
global batch (default 256), the same data, the same number of steps. On CPUs the 1-process run uses every
core (PyTorch's intra-op threads) and each of the N processes gets cores/N threads; on GPUs each process
gets its own GPU (``benchmarks.gpu_train --nproc_per_node N`` uses this). Images/s are steady-state: the
first steps are not counted. Prints one line per run and the ratio of N processes to 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks import machine

RESULT = "RESULT "


def worker(args: argparse.Namespace) -> None:
    """One process of a measured run (started by torchrun)."""
    import torch

    from resnet_viz import preset
    from resnet_viz.data import load_dataset
    from resnet_viz.training import Trainer, TrainSettings, distributed

    world = distributed.join(args.device)
    try:
        with distributed.local_first(world):
            data = load_dataset(args.data)
        settings = TrainSettings(epochs=1000, batch_size=args.batch_size, lr=0.2, device=args.device,
                                 compile=args.compile, low_res=0.0)  # every step at full size
        trainer = Trainer(preset(args.arch), data, settings, world=world)
        times: dict[int, float] = {}

        def on_progress(p) -> None:
            times[p.step] = p.elapsed
            if p.step >= args.warmup + args.steps:
                trainer.stop()

        trainer.run(on_progress=on_progress)
        start, end = times[args.warmup], times[args.warmup + args.steps]
        if world.main:
            print(RESULT + json.dumps({
                "processes": world.size, "device": str(trainer.device), "precision": trainer.precision,
                "threads": torch.get_num_threads(), "images_per_s": args.steps * args.batch_size / (end - start)}),
                flush=True)
    finally:
        distributed.leave()


def launch(nproc: int, argv: list[str], threads: int | None = None) -> dict:
    """Run the worker under torchrun with ``nproc`` processes; its result."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "benchmarks.bench_ddp", "--worker", *argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not lines:
        raise SystemExit(f"the {nproc}-process run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT):])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the CIFAR-10 JPEG .tar.gz, a folder, cifar10 or synthetic")
    p.add_argument("--nproc", type=int, default=2, help="processes to compare with one (default 2)")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", type=int, default=256, help="the global batch (default 256)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu, or cuda: one GPU per process")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def compare(args: argparse.Namespace) -> tuple[dict, dict]:
    argv = ["--data", args.data, "--arch", args.arch, "--batch-size", str(args.batch_size), "--steps",
            str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    if args.compile:
        argv.append("--compile")
    cores = os.cpu_count() or 1
    cpu = args.device == "cpu"
    one = launch(1, argv, threads=cores if cpu else None)
    several = launch(args.nproc, argv, threads=max(cores // args.nproc, 1) if cpu else None)
    return one, several


def main() -> None:
    args = parser().parse_args()
    print(machine.describe())
    if args.worker:
        worker(args)
        return
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} cores; {args.arch}, global batch {args.batch_size}, "
          f"{args.steps} steps after {args.warmup}")
    one, several = compare(args)
    for run in (one, several):
        print(f"{run['processes']} process{'es' if run['processes'] > 1 else ''} on {run['device']} "
              f"({run['precision']}, {run['threads']} thread{'s' if run['threads'] > 1 else ''} per process): "
              f"{run['images_per_s']:,.0f} images/s")
    print(f"{args.nproc} processes / 1 process: {several['images_per_s'] / one['images_per_s']:.2f}×")


if __name__ == "__main__":
    main()
