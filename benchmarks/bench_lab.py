"""The Lab's studies on the shipped ResNet-20 and plain-20, each against the plain forward (and backward) of the
same images, measured in the same run: how close a study gets to "one evaluation per point".

    .venv/bin/python -m benchmarks.bench_lab --data path/to/cifar10-jpeg-train.tar.gz [--repeat 3]

The cases and their targets on a 2-core CPU, for the pair of networks together:

- lesion on 2,000 validation images (every single block, then 4 random sets for each k): under 30 s; the anchor
  is one forward of those 2,000 images through both networks, and the ratio says how many whole-network
  evaluations the study costs;
- layer responses on 500 images: under 2 s; anchor, a forward of those images;
- the effective receptive field of every stage on 32 images: under 10 s; anchor, a forward and backward of them;
- a 2-D landscape of 11 × 11 points (and the 21-point line) on 512 training images: under 90 s; anchor, a forward
  of those images, and the ratio against the 142 points evaluated;
- gradients at initialisation for plain-110 and ResNet-110 (batch 64): under 10 s; anchor, a forward and
  backward of the batch through both, built once.

Without --data, the lesion and landscape cases are left out. Results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks import machine
from resnet_viz.config import PRESETS
from resnet_viz.lab import LabSettings, run_study
from resnet_viz.lab.networks import open_networks, study_images
from resnet_viz.model import build_model

PAIR = ["bundled:resnet20", "bundled:plain20"]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def forward(networks, images, backward: bool = False) -> None:
    for n in networks:
        x = n.normalise(images)
        if backward:
            x.requires_grad_(True)
            n.model(x).sum().backward()
            n.model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                for start in range(0, len(x), 500):
                    n.model(x[start:start + 500])


def case(name: str, seconds: float, anchor: float, target: float, note: str = "") -> None:
    print(f"{name:<34} {seconds:8.2f} s   anchor {anchor:7.3f} s   {seconds / anchor:7.1f}× the anchor   "
          f"target {target:g} s: {'met' if seconds < target else 'MISSED'}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="the CIFAR-10 JPEG archive, a folder, or cifar10")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine.describe())
    networks = open_networks(PAIR)
    data = None
    if args.data:
        from resnet_viz.data import load_dataset
        data = load_dataset(args.data)
    r = args.repeat

    images = study_images(data, 500, "val")[0]
    anchor = best(lambda: forward(networks, images), r)
    case("layer responses, 500 images", best(lambda: run_study("responses", PAIR, data, LabSettings(images=500)), r),
         anchor, 2)
    images = study_images(data, 32, "val")[0]
    anchor = best(lambda: forward(networks, images, backward=True), r)
    case("ERF, every stage, 32 images", best(lambda: run_study("erf", PAIR, data, LabSettings(images=32)), r),
         anchor, 10)
    pair = [build_model(PRESETS[n]).train() for n in ("plain110", "resnet110")]
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step() -> None:
        for m in pair:
            F.cross_entropy(m(x), y).backward()
            m.zero_grad(set_to_none=True)
    anchor = best(step, r)
    case("gradients at init, 110 pair, b64",
         best(lambda: run_study("gradients", ["plain110", "resnet110"], settings=LabSettings(batch_size=64)), r),
         anchor, 10)
    if data is None:
        print("lesion and landscape: left out (give --data)")
        return
    images = study_images(data, 2000, "val")[0]
    anchor = best(lambda: forward(networks, images), r)
    case("lesion, 2,000 images", best(lambda: run_study("lesion", PAIR, data, LabSettings(images=2000)), 1), anchor,
         30)
    images = study_images(data, 512, "train")[0]
    anchor = best(lambda: forward(networks, images), r)
    seconds = best(lambda: run_study("landscape", PAIR, data, LabSettings(images=512)), 1)
    case("landscape 11×11 + 21, 512 images", seconds, anchor, 90,
         f" ({seconds / (anchor * 142):.2f}× one forward per point)")


if __name__ == "__main__":
    main()
