"""The command line: ``python -m resnet_viz presets|summary ...``.

Same core calls as the app. Bad input ends with exit status 2 and one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import tables
from .config import PRESETS, SHORTCUTS, ConfigError, ResNetConfig, preset
from .trace import trace


class UsageError(Exception):
    """Bad command-line input; the message is the whole story."""


class _Parser(argparse.ArgumentParser):
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


def config_from_args(args: argparse.Namespace) -> ResNetConfig:
    config = load_arch(args.arch)
    overrides = {}
    if args.shortcut:
        overrides["shortcut"] = args.shortcut
    if args.classes is not None:
        overrides["num_classes"] = args.classes
    if args.input:
        c, h, w = parse_input_size(args.input)
        overrides.update(in_channels=c, input_size=(h, w))
    return dataclasses.replace(config, **overrides) if overrides else config


def cmd_presets(args: argparse.Namespace) -> str:
    header = ("Preset", "Block", "Depth", "Input", "Classes", "Shortcut", "Params", "MACs")
    rows = []
    for name, config in PRESETS.items():
        totals = trace(config).totals
        c, h, w = config.input_shape
        rows.append((name, config.block, str(config.depth), f"{c}×{h}×{w}", str(config.num_classes),
                     config.shortcut, f"{totals['params']:,}", f"{totals['macs']:,}"))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    numeric = {2, 4, 6, 7}
    lines = ["  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                       for i, cell in enumerate(row)).rstrip() for row in (header, *rows)]
    lines.insert(1, "─" * len(lines[0]))
    lines.append("MACs: multiply-accumulates of conv and linear layers per image (FLOPs = 2 × MACs).")
    return "\n".join(lines)


def cmd_summary(args: argparse.Namespace) -> str:
    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth {args.depth} — it must be 0 or more")
    result = trace(config_from_args(args), batch_size=args.batch)
    return tables.FORMATS[args.format](result, args.depth).rstrip("\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m resnet_viz", description="Build, trace and count residual networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("presets", help="list the presets with their parameters and MACs")
    p.set_defaults(run=cmd_presets)

    p = sub.add_parser("summary", help="every layer's shapes, parameters and MACs, with totals")
    p.add_argument("arch", metavar="ARCH", help="a preset name (see `presets`) or a config JSON file")
    p.add_argument("--shortcut", choices=SHORTCUTS, help="A: zero-pad identity, B: project where the shape "
                   "changes, C: project every block")
    p.add_argument("--classes", type=int, help="number of output classes")
    p.add_argument("--input", metavar="CxHxW", help="input channels, height and width, e.g. 3x64x64")
    p.add_argument("--batch", type=int, default=1, help="batch size for shapes and memory (default 1)")
    p.add_argument("--depth", type=int, help="show layers down to this depth (0: the model only)")
    p.add_argument("--format", choices=tuple(tables.FORMATS), default="table", help="output format")
    p.set_defaults(run=cmd_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        output = args.run(args)
    except (UsageError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        print(output)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head` closed the pipe: not an error
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
