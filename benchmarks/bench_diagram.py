"""Diagram speed: build and render our block diagrams, against torchview on the same network, in one run.

    .venv/bin/python -m benchmarks.bench_diagram [--repeat 3]

Each time covers the whole job from a config: trace (ours) or meta-device forward (torchview),
the Graphviz graph, and `dot` rendering it to SVG. Best of --repeat, after one warm-up.
Results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import machine
from resnet_viz import preset, trace
from resnet_viz.views.export import block_diagram_bytes, diagram_bytes
from resnet_viz.views.graph import computational_graph


def best_of(fn, repeat: int) -> tuple[float, int]:
    size = len(fn())
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), size


def ours(name: str, level: str, fold: bool = True):
    return lambda: block_diagram_bytes(trace(preset(name)), "svg", level, fold=fold)


def torchview_svg(name: str, depth: int):
    return lambda: diagram_bytes(computational_graph(preset(name), depth=depth), "svg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine.describe())
    cases = [
        ("resnet110 block diagram (folded)", ours("resnet110", "block")),
        ("resnet152 block diagram (folded)", ours("resnet152", "block")),
        ("resnet110 stage diagram", ours("resnet110", "stage")),
        ("resnet110 block diagram, every block", ours("resnet110", "block", fold=False)),
        ("resnet152 block diagram, every block", ours("resnet152", "block", fold=False)),
        ("resnet50 torchview graph, depth 3", torchview_svg("resnet50", 3)),
        ("resnet110 torchview graph, depth 3 (anchor)", torchview_svg("resnet110", 3)),
        ("resnet152 torchview graph, depth 3 (anchor)", torchview_svg("resnet152", 3)),
    ]
    times = {}
    print(f"{'case':<46}{'time':>9}{'SVG':>10}")
    for label, fn in cases:
        seconds, size = best_of(fn, args.repeat)
        times[label] = seconds
        print(f"{label:<46}{seconds:>8.3f}s{size / 1024:>8.0f} KiB")
    for name in ("resnet110", "resnet152"):
        anchor = times[f"{name} torchview graph, depth 3 (anchor)"]
        print(f"{name}: folded block diagram is {anchor / times[f'{name} block diagram (folded)']:.1f}× faster "
              f"than torchview's graph of the same network")


if __name__ == "__main__":
    main()
