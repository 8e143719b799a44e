"""The Lab's studies on the shipped ResNet-20 and plain-20, each against the plain forward (and backward) of the
same images, measured in the same run: how close a study gets to "one evaluation per point".

    .venv/bin/python -m benchmarks.bench_lab --data path/to/cifar10-jpeg-train.tar.gz [--repeat 3]

The cases and their targets on a 2-core CPU, for each of the two networks:

- lesion on 2,000 validation images (every single block, then 4 random sets for each k): under 30 s; the anchor
  is one forward of those 2,000 images, and the ratio says how many whole-network evaluations the study costs;
- layer responses on 500 images: under 2 s; anchor, a forward of those images;
- the effective receptive field of every stage on 32 images: under 10 s; anchor, a forward and backward of them;
- a 2-D landscape of 11 × 11 points (the 11-point line is its middle row) on 512 training images: under 90 s;
  anchor, a forward of those images, and the ratio against the points evaluated;
- gradients at initialisation for plain-110 and ResNet-110 together (batch 64): under 10 s; anchor, a forward
  and backward of the batch through both, built once.

Without --data, the lesion and landscape cases are left out. Results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks import machine
from benchmarks.bench_trace import best_of
from resnet_viz.config import PRESETS
from resnet_viz.lab import LabSettings, run_study
from resnet_viz.lab.networks import open_networks, study_images
from resnet_viz.model import build_model

PAIR = ["bundled:resnet20", "bundled:plain20"]


def forward(networks, images, backward: bool = False) -> None:
    """The anchor: the network as loaded, forward (and backward) in batches of 500."""
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


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def network_cases(ref: str, data, r: int) -> None:
    """Every study of one network that has an anchor of its own."""
    one, label = open_networks([ref]), ref.removeprefix("bundled:")
    print(f"-- {ref}")
    images = study_images(data, 500, "val")[0]
    seconds = best_of(lambda: run_study("responses", [ref], data, LabSettings(images=500)), r)
    case("layer responses, 500 images", seconds, best_of(lambda: forward(one, images), r), 2)
    images = study_images(data, 32, "val")[0]
    case("ERF, every stage, 32 images", best_of(lambda: run_study("erf", [ref], data, LabSettings(images=32)), r),
         best_of(lambda: forward(one, images, backward=True), r), 10)
    if data is None:
        print("lesion and landscape: left out (give --data)")
        return
    images = study_images(data, 2000, "val")[0]
    seconds, report = timed(lambda: run_study("lesion", [ref], data, LabSettings(images=2000)))
    lesions = sum(len(k["accuracy"]) for k in report.results[label]["random"]) + len(report.results[label]["single"])
    case("lesion, 2,000 images", seconds, best_of(lambda: forward(one, images), r), 30,
         f" (the network and {lesions} lesions of it)")
    images = study_images(data, 512, "train")[0]
    anchor = best_of(lambda: forward(one, images), r)
    seconds, report = timed(lambda: run_study("landscape", [ref], data, LabSettings(images=512)))
    points = report.results[label]["points"]
    case("landscape 11×11 + line, 512 images", seconds, anchor, 90,
         f" ({points} points: {seconds / (anchor * points):.2f}× one forward per point)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="the CIFAR-10 JPEG archive, a folder, or cifar10")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine.describe())
    data = None
    if args.data:
        from resnet_viz.data import load_dataset
        data = load_dataset(args.data)
    for ref in PAIR:
        network_cases(ref, data, args.repeat)
    pair = [build_model(PRESETS[n]).train() for n in ("plain110", "resnet110")]
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step() -> None:
        for m in pair:
            F.cross_entropy(m(x), y).backward()
            m.zero_grad(set_to_none=True)
    print("-- plain110 and resnet110, freshly initialised")
    case("gradients at init, batch 64", best_of(lambda: run_study(
        "gradients", ["plain110", "resnet110"], settings=LabSettings(batch_size=64)), args.repeat),
         best_of(step, args.repeat), 10)


if __name__ == "__main__":
    main()
