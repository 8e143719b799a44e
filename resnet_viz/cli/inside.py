"""``weights`` lists the trained networks that ship with resnet-viz; ``inside`` opens one (or any checkpoint) on an
image and writes what the Inside page shows, as PNGs and one JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.images import read_image
from ..errors import DataError, UsageError
from ..formatting import human_bytes
from ..io import write_file
from ..samples import by_name
from ..training import load_checkpoint
from ..views.inside import inside_files, open_inside
from ..weights import bundled
from .arguments import CHECKPOINT_HELP

SAMPLE = "sample:"


def register(sub) -> None:
    p = sub.add_parser("weights", help="the trained networks that ship with resnet-viz (bundled:NAME)")
    p.set_defaults(run=cmd_weights)
    p = sub.add_parser("inside", help="a trained network on one image: prediction, feature maps, each block's "
                                      "skip and residual branch, Grad-CAM and Integrated Gradients, as PNGs and JSON")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("image", metavar="IMAGE", help="a PNG, JPEG or WebP file, or sample:NAME for a shipped sample "
                                                  "image (e.g. sample:cat-4550)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs and inside.json")
    p.add_argument("--class", dest="target", metavar="NAME", help="the class Grad-CAM and Integrated Gradients "
                                                                  "explain (default: the predicted one)")
    p.add_argument("--channels", type=int, default=16, help="feature maps: the N most active channels (default 16)")
    p.add_argument("--channel", type=int, help="blocks: show this channel rather than the mean over channels")
    p.set_defaults(run=cmd_inside)


def cmd_weights(args: argparse.Namespace) -> str:
    found = bundled()
    if not found:
        return "no trained networks are installed with this copy of resnet-viz"
    rows = [("name", "network", "accuracy", "flip TTA", "size", "file")]
    rows += [(b.ref, b.network, f"{b.val_acc:.2%}", f"{b.val_acc_flip:.2%}", human_bytes(b.size_bytes), str(b.path))
             for b in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append("accuracy: on the validation part of the training split (the last 10% of each class); "
                 "each file's .json beside it says how it was trained")
    return "\n".join(lines)


def image_bytes(ref: str) -> tuple[bytes, str, str | None]:
    """The image IMAGE names: its bytes, its name and, for a sample, its true class."""
    if ref.startswith(SAMPLE):
        name = ref.removeprefix(SAMPLE).removesuffix(".png")
        if (sample := by_name().get(name)) is not None:
            return sample.path.read_bytes(), sample.file, sample.class_name
        raise UsageError(f"there is no sample image {name!r}: names look like cat-4550 (a class and a number "
                         f"from 4500 to 4950 in steps of 50)")
    path = Path(ref)
    if not path.is_file():
        raise DataError(f"image {ref!r} does not exist")
    return path.read_bytes(), path.name, None


def cmd_inside(args: argparse.Namespace) -> str:
    model, config, meta = load_checkpoint(args.checkpoint)
    data, name, truth = image_bytes(args.image)
    pixels = read_image(data, config.input_size, name).numpy()
    classes = list(meta.get("classes") or [])
    target = None
    if args.target is not None:
        if args.target not in classes:
            raise UsageError(f"--class {args.target!r} is not one of the network's classes: {', '.join(classes)}")
        target = classes.index(args.target)
    inside = open_inside(model, pixels, meta, target)
    facts = {"network": config.name, "checkpoint": args.checkpoint, "image": name, "true_class": truth}
    files = inside_files(inside, pixels, facts, channels=max(1, args.channels), channel=args.channel)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_file(out / file, content) for file, content in files.items()]
    top = ", ".join(f"{c} {p:.1%}" for c, p in inside.top(5))
    lines = [f"{name}{f' (true class: {truth})' if truth else ''}: {top}"]
    lines += [f"{r['block']}: ‖F(x)‖/‖x‖ = {r['ratio']:.3f}" if r["ratio"] is not None
              else f"{r['block']}: no skip (a plain block); ‖F(x)‖ = {r['branch_norm']:.1f}"
              for r in inside.block_rows()]
    lines.append(f"wrote {len(written)} files to {out}")
    return "\n".join(lines)
