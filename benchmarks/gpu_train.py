"""Training speed and time-to-accuracy on a GPU machine, against the plain loop, in one run.

    python -m benchmarks.gpu_train --data cifar10-jpeg-train.tar.gz [--epochs 30] [--batch-size 512] [--compile]

Prints the plain loop's images/s (torchvision transforms + DataLoader with 8 workers, fp32, batch 128) and
ours (the split on the GPU, augmented there, bf16 autocast, channels_last, optional torch.compile), then
trains ResNet-20 and prints, after each epoch, the training time so far and the validation accuracy
(with and without flip test-time augmentation at the end). Targets on one H100/H200: at least 4× the
plain loop, at least 50,000 images/s, and ≥ 88% validation accuracy in under 40 s of training.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.plain_loop import plain_loop_images_per_s
from resnet_viz import preset
from resnet_viz.data import default_cache_dir, load_dataset
from resnet_viz.train import Trainer, TrainSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.4)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(), torch.__version__)
    data = load_dataset(args.data)
    folder = next((default_cache_dir() / "archives").glob("*/train"))
    print(data.describe())
    plain = plain_loop_images_per_s(folder, device, workers=8, steps=100, warmup=10)
    print(f"plain loop: {plain:,.0f} images/s")
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device="cuda",
                             compile=args.compile)
    trainer = Trainer(preset("resnet20"), data, settings)

    def on_epoch(row) -> None:
        print(f"epoch {row['epoch']:>3}  {row['seconds']:7.1f} s  validation {row['val_acc']:.2%}", flush=True)

    result = trainer.run(on_epoch=on_epoch)
    print(f"ours: {result.images_per_s:,.0f} images/s = {result.images_per_s / plain:.1f}× the plain loop "
          f"({result.precision}, compile={args.compile})")
    print(f"final: {result.val_acc:.2%} validation, {result.val_acc_flip:.2%} with flip TTA, "
          f"after {result.train_seconds:.1f} s of training")


if __name__ == "__main__":
    main()
