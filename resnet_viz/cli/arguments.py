"""What the commands share: a parser that ends in one sentence, the network named by ARCH and its overrides,
the data flags and loading the data with a progress bar."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from ..config import PRESETS, SHORTCUTS, ResNetConfig, preset
from ..errors import ConfigError, UsageError
from ..training.settings import SETTINGS
from ..weights import PREFIX


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see --help)")


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'3x32x32' (or 3×32×32) -> (3, 32, 32)."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×,]\s*(\d+)\s*[x×,]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--input {text!r} — write it as CxHxW, e.g. 3x32x32")
    return tuple(int(g) for g in match.groups())


def load_arch(arch: str) -> ResNetConfig:
    """A preset name, or the path of a config JSON file (as the app saves it)."""
    if arch in PRESETS:
        return preset(arch)
    path = Path(arch)
    if path.suffix.lower() == ".json" or path.exists():
        return ResNetConfig.load(path)
    raise ConfigError(f"unknown preset {arch!r} — choose one of {', '.join(PRESETS)}, or give a config JSON file")


SHORTCUT_HELP = ("A: zero-pad identity, B: project where the shape changes, C: project every block, none: no skips "
                 "(a plain network)")


def add_arch_overrides(p: argparse.ArgumentParser, shortcut_help: str = SHORTCUT_HELP,
                       classes_help: str = "number of output classes",
                       input_help: str = "input channels, height and width") -> None:
    """--shortcut, --classes, --input and --dropout: changes to the network ARCH names."""
    p.add_argument("--shortcut", choices=SHORTCUTS, help=shortcut_help)
    p.add_argument("--classes", type=int, help=classes_help)
    p.add_argument("--input", metavar="CxHxW", help=input_help)
    p.add_argument("--dropout", type=float, metavar="P", help="dropout before each block's last conv (0 to 0.99)")


def config_from_args(args: argparse.Namespace, arch: str | None = None) -> ResNetConfig:
    config = load_arch(arch or args.arch)
    overrides = {}
    if args.shortcut:
        overrides["shortcut"] = args.shortcut
    if args.classes is not None:
        overrides["num_classes"] = args.classes
    if args.input:
        c, h, w = parse_input_size(args.input)
        overrides.update(in_channels=c, input_size=(h, w))
    if getattr(args, "dropout", None) is not None:
        overrides["dropout"] = args.dropout
    return dataclasses.replace(config, **overrides) if overrides else config


def add_data_arguments(p: argparse.ArgumentParser, device: bool = True, required: bool = True) -> None:
    p.add_argument("--data", required=required, metavar="NAME_OR_PATH",
                   help="cifar10, cifar100, synthetic, or an ImageFolder folder or .tar.gz")
    p.add_argument("--data-root", help="where CIFAR lives or is downloaded to (default: the cache folder)")
    p.add_argument("--download", action="store_true", help="download CIFAR with torchvision (needs the network)")
    p.add_argument("--limit-per-class", type=int, help="use at most this many training images per class")
    if device:
        p.add_argument("--device", default="auto", help=SETTINGS["device"].metadata["help"])


def load_data(args: argparse.Namespace, show: bool = True):
    """The dataset the data flags name, with a progress bar while images are decoded."""
    from tqdm.auto import tqdm

    from ..data import load_dataset

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="decoding images", unit="img", leave=False, disable=not show)
        bar.n = done
        bar.refresh()

    try:
        return load_dataset(args.data, root=args.data_root, download=args.download,
                            limit_per_class=args.limit_per_class, progress=progress)
    finally:
        if bar is not None:
            bar.close()


CHECKPOINT_HELP = "a checkpoint.pt written by train, or bundled:NAME, a network shipped with resnet-viz (see weights)"


def default_beside(checkpoint: str, name: str) -> Path:
    """Where a command writes by default: beside the checkpoint, or in the current folder for a bundled network
    (the package's own folder is not the user's)."""
    if checkpoint.startswith(PREFIX):
        return Path(f"{checkpoint.removeprefix(PREFIX)}-{name}")
    return Path(checkpoint).with_name(name)
