"""Training speed and time-to-accuracy on a GPU machine, against the plain loop, in one run.

    python -m benchmarks.gpu_train --data cifar10-jpeg-train.tar.gz [--epochs 30] [--batch-size 512] [--compile]
    python -m benchmarks.gpu_train --data cifar10-jpeg-train.tar.gz --nproc_per_node 8   # scaling over GPUs

Prints the plain loop's images/s (torchvision transforms + DataLoader with 8 workers, fp32, batch 128) and
ours (the split on the GPU, augmented there, bf16 autocast, channels_last, optional torch.compile), then
trains ResNet-20 and prints, after each epoch, the training time so far and the validation accuracy
(with and without flip test-time augmentation at the end). Targets on one H100/H200: at least 4× the
plain loop, at least 50,000 images/s, and ≥ 88% validation accuracy in under 40 s of training.

With ``--nproc_per_node N`` (N > 1) it measures scaling instead: images/s of ResNet-20 (or ``--arch``) at
the global batch ``--batch-size`` on 1 GPU and on N GPUs (torchrun, DistributedDataParallel, NCCL), the
ratio of the two, and then trains to accuracy on the N GPUs with the same command people run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch

from benchmarks import machine
from benchmarks.plain_loop import plain_loop_images_per_s
from resnet_viz import preset
from resnet_viz.data import default_cache_dir, load_dataset
from resnet_viz.training import DEFAULTS, Trainer, TrainSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.4)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--low-res", type=float, default=DEFAULTS.low_res, help="share of the run at 3/4 size "
                        f"(default {DEFAULTS.low_res}; 0: none)")
    parser.add_argument("--nproc_per_node", type=int, default=1, help="GPUs to scale over (default 1: no scaling)")
    parser.add_argument("--arch", default="resnet20", help="the network for the scaling run (default resnet20)")
    args = parser.parse_args()
    print(machine.describe())
    if args.nproc_per_node > 1:
        scaling(args)
        return
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(), torch.__version__)
    data = load_dataset(args.data)
    folder = next((default_cache_dir() / "archives").glob("*/train"))
    print(data.describe())
    plain = plain_loop_images_per_s(folder, device, workers=8, steps=100, warmup=10)
    print(f"plain loop: {plain:,.0f} images/s")
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device="cuda",
                             compile=args.compile, low_res=args.low_res)
    trainer = Trainer(preset("resnet20"), data, settings)

    def on_epoch(row) -> None:
        print(f"epoch {row['epoch']:>3}  {row['seconds']:7.1f} s  validation {row['val_acc']:.2%}", flush=True)

    result = trainer.run(on_epoch=on_epoch)
    print(f"ours: {result.images_per_s:,.0f} images/s = {result.images_per_s / plain:.1f}× the plain loop "
          f"({result.precision}, compile={args.compile})")
    print(f"final: {result.val_acc:.2%} validation, {result.val_acc_flip:.2%} with flip TTA, "
          f"after {result.train_seconds:.1f} s of training")


def scaling(args: argparse.Namespace) -> None:
    from benchmarks import bench_ddp

    print(torch.cuda.get_device_name(), f"× {torch.cuda.device_count()}", torch.__version__)
    ddp = bench_ddp.parser().parse_args(["--data", args.data, "--nproc", str(args.nproc_per_node), "--arch",
                                         args.arch, "--batch-size", str(args.batch_size), "--steps", "100",
                                         "--warmup", "20", "--device", "cuda"] + (["--compile"] if args.compile
                                                                                  else []))
    one, several = bench_ddp.compare(ddp)
    for run in (one, several):
        print(f"{run['processes']} GPU{'s' if run['processes'] > 1 else ''} ({run['precision']}): "
              f"{run['images_per_s']:,.0f} images/s")
    ratio = several["images_per_s"] / one["images_per_s"]
    print(f"{args.nproc_per_node} GPUs / 1 GPU: {ratio:.2f}× ({ratio / args.nproc_per_node:.0%} of linear)")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.nproc_per_node}", "-m", "resnet_viz", "train", args.arch, "--data",
               args.data, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--out", f"runs/gpu-train-{args.nproc_per_node}gpus"] + (["--compile"] if args.compile else [])
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
