"""``quantize``: a study of a trained network with fewer bits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..io import write_file
from ..progress import progress_bar
from ..quantization.qat import parse_schedule
from ..quantization.studies import MODES, QAT_METHODS, QatOptions, run_study
from ..views import export
from ..views.charts import charts_html
from .arguments import CHECKPOINT_HELP, add_data_arguments, load_data


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a checkpoint: real int8, bit sweeps, layer sensitivity, QAT")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    add_data_arguments(p)
    p.add_argument("--mode", choices=list(MODES), required=True,
                   help="; ".join(f"{name}: {mode.help}" for name, mode in MODES.items()))
    p.add_argument("--bits", type=int, nargs="+", help="bit widths (sweep: default 8 6 4 3 2; otherwise 4)")
    p.add_argument("--epochs", type=int, default=3, help="qat: fine-tuning epochs (default 3)")
    p.add_argument("--method", choices=list(QAT_METHODS), default="lsq",
                   help="qat: " + "; ".join(f"{k}: {v}" for k, v in QAT_METHODS.items()) + " (default lsq)")
    p.add_argument("--schedule", metavar="BITS:EPOCHS,…",
                   help="qat: a progressive schedule, each stage starting from the last, e.g. 4:2,3:4,2:6 "
                        "(instead of --bits and --epochs)")
    p.add_argument("--edge-bits", type=int, default=8, metavar="N",
                   help="qat: bits of the first conv and the fc (default 8; 0: the same as the rest)")
    p.add_argument("--plan", metavar="PLAN",
                   help="qat: bits by layer: 'sensitivity' (the most fragile fifth of the layers at 8 bits, found "
                        "by a sensitivity study first), a sensitivity.json that `--mode sensitivity --out` wrote, "
                        "or NAME=BITS,… (e.g. layer1.0.conv1=8)")
    p.add_argument("--no-distill", action="store_true",
                   help="qat (lsq, pact): learn from the labels alone, not also from the float32 network")
    p.add_argument("--compare", action="store_true",
                   help="qat: also post-training rounding and the other fine-tune (STE or LSQ) at every width")
    p.add_argument("--out", metavar="DIR", help="write the report as JSON and CSV here (qat: and each stage's "
                                                 "network, as a checkpoint and a packed .rvq file)")
    p.set_defaults(run=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> str:
    import pandas as pd

    data = load_data(args)
    with progress_bar(args.mode, leave=False) as bar:
        report = run_study(args.checkpoint, data, args.mode, args.bits, args.epochs, args.device,
                           progress=bar.count, on_step=bar.show, method=args.method, qat=qat_options(args))
    lines = report.summary_lines()
    if args.out:  # every file is made before any is written: a study that cannot make one leaves none
        files = {**report.files(), f"{args.mode}.json": json.dumps(report.to_json(), indent=2).encode(),
                 f"{args.mode}.csv": export.frame_bytes(pd.DataFrame(report.rows), "csv", "")}
        if report.figures():  # accuracy against bits, as the Quantize page draws it
            files[f"{args.mode}.html"] = charts_html(report.figures(),
                                                     f"{report.network}: accuracy against bits").encode()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        lines += [f"wrote {write_file(out / name, data_bytes)}" for name, data_bytes in files.items()]
    return "\n".join(lines)


def qat_options(args: argparse.Namespace) -> QatOptions:
    """The fine-tune's options from the command line, each checked with one clear sentence."""
    if not 0 <= args.edge_bits <= 16 or args.edge_bits == 1:
        raise ConfigError(f"--edge-bits {args.edge_bits}: give 2 to 16 bits, or 0 for the same as the rest")
    schedule = parse_schedule(args.schedule) if args.schedule else None
    return QatOptions(schedule=schedule, edge_bits=args.edge_bits or None, plan=parse_plan(args.plan),
                      distill=not args.no_distill, compare=args.compare)


def parse_plan(text: str | None) -> dict[str, int] | str | None:
    """--plan: "sensitivity", a sensitivity study's JSON file (its plan's 8-bit layers), or NAME=BITS,…"""
    if text is None or text == "sensitivity":
        return text
    if text.endswith(".json"):
        try:
            plan = json.loads(Path(text).read_text())["plan"]["plan"]
            return {str(name): 8 for name, bits in plan.items() if int(bits) == 8}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"--plan {text}: not a sensitivity.json that `quantize --mode sensitivity --out` "
                              "wrote") from None
    plan = {}
    for part in text.split(","):
        name, sep, bits = part.strip().partition("=")
        if not (sep and name and bits.isdigit()):
            raise ConfigError(f"--plan: {part!r} is not NAME=BITS (e.g. layer1.0.conv1=8)")
        plan[name] = int(bits)
    return plan
