"""``quantize``: a study of a trained network with fewer bits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..io import write_file
from ..quantization.studies import MODES, QAT_METHODS, run_study
from ..views import export
from .arguments import CHECKPOINT_HELP, add_data_arguments, load_data
from .train import progress_bar


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
    p.add_argument("--out", metavar="DIR", help="write the report as JSON and CSV here")
    p.set_defaults(run=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> str:
    import pandas as pd

    data = load_data(args)
    with progress_bar(args.mode, leave=False) as bar:
        report = run_study(args.checkpoint, data, args.mode, args.bits, args.epochs, args.device,
                           progress=bar.count, on_step=bar.show, method=args.method)
    lines = report.summary_lines()
    if args.out:  # every file is made before any is written: a study that cannot make one leaves none
        files = {**report.files(), f"{args.mode}.json": json.dumps(report.to_json(), indent=2).encode(),
                 f"{args.mode}.csv": export.frame_bytes(pd.DataFrame(report.rows), "csv", "")}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        lines += [f"wrote {write_file(out / name, data_bytes)}" for name, data_bytes in files.items()]
    return "\n".join(lines)
