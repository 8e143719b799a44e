"""The command line: ``resnet-viz`` (or ``python -m resnet_viz``)
``presets|summary|export|train|evaluate|quantize|weights|inside|study|app ...``.

Same core calls as the app. Bad input ends with exit status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ResNetVizError
from ..training import distributed
from . import app, inside, lab, networks, quantize, train
from .arguments import Parser


def build_parser() -> argparse.ArgumentParser:
    called = Path(sys.argv[0]).name
    parser = Parser(prog="resnet-viz" if called.startswith("resnet-viz") else "python -m resnet_viz",
                    description="Build, trace and count residual networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for commands in (networks, train, quantize, inside, lab, app):
        commands.register(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; the flags a command does not know go on (as ``args.flags``) where it passes them on."""
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "passes_flags_on", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.flags = unknown
    return args


def main(argv: Sequence[str] | None = None) -> int:
    rank, local_rank = distributed.env_ranks()
    who = f"rank {rank}: " if rank else ""
    fresh_line = "\n" if rank else ""  # rank 0's progress bar may hold the line
    try:
        args = parse(build_parser(), argv)
        output = args.run(args)
    except ResNetVizError as e:
        if local_rank == 0:  # every process of a run meets the same bad input: one message per machine
            print(f"{fresh_line}error: {who}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if local_rank == 0:
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if distributed.launched() and distributed.peer_failed(e):
            return 1  # another process failed and said why; this one only lost touch with it
        if type(e).__name__ == "OutOfMemoryError":
            print(f"{fresh_line}error: {who}the device ran out of memory: use a smaller --batch-size, more "
                  "--micro-batches or more processes", file=sys.stderr)
            return 2
        raise
    finally:
        distributed.leave()
    try:
        if output:
            print(output)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head` closed the pipe: not an error
        sys.stderr.close()
    return 0

