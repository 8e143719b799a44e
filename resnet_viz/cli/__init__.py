"""The command line: ``python -m resnet_viz presets|summary|export|train|evaluate|quantize|weights|inside|study ...``.

Same core calls as the app. Bad input ends with exit status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ResNetVizError
from ..training import distributed
from . import inside, lab, networks, quantize, train
from .arguments import Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m resnet_viz", description="Build, trace and count residual networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for commands in (networks, train, quantize, inside, lab):
        commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    rank, local_rank = distributed.env_ranks()
    who = f"rank {rank}: " if rank else ""
    fresh_line = "\n" if rank else ""  # rank 0's progress bar may hold the line
    try:
        args = build_parser().parse_args(argv)
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

