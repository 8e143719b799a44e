"""``quantize``: a study of a trained network with fewer bits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import ResNetConfig
from ..io import write_file
from ..quantization.int8 import onnx_bytes, program_bytes
from ..quantization.studies import run_study
from ..training import checkpoint_bytes
from ..views import export
from .arguments import add_data_arguments, load_data


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a checkpoint: real int8, bit sweeps, layer sensitivity, QAT")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint.pt written by train")
    add_data_arguments(p)
    p.add_argument("--mode", choices=("int8", "sweep", "sensitivity", "qat"), required=True,
                   help="int8: real int8 against float32 on this CPU; sweep: accuracy at each bit width per scheme; "
                        "sensitivity: one layer at a time; qat: a short quantization-aware fine-tune")
    p.add_argument("--bits", type=int, nargs="+", help="bit widths (sweep: default 8 6 4 3 2; otherwise 4)")
    p.add_argument("--epochs", type=int, default=3, help="qat: fine-tuning epochs (default 3)")
    p.add_argument("--out", metavar="DIR", help="write the report as JSON and CSV here")
    p.set_defaults(run=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> str:
    import pandas as pd
    from tqdm import tqdm

    data = load_data(args)
    bar = tqdm(desc=args.mode, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    def on_step(p) -> None:  # a qat step
        bar.total, bar.n = 1000, int(1000 * min(p.progress, 1.0))
        bar.set_postfix_str(f"epoch {p.epoch}, loss {p.loss:.3f}", refresh=False)
        bar.refresh()

    try:
        report = run_study(args.checkpoint, data, args.mode, args.bits, args.epochs, args.device,
                                    progress=progress, on_step=on_step)
    finally:
        bar.close()
    lines = [f"{report['network']} on {report['data']}"]
    files: dict[str, bytes] = {}
    if args.mode == "sweep":
        rows = report["rows"]
        lines += [f"{r['scheme']:<36} {r['bits']:>2} bits  {r['accuracy']:.2%}" for r in rows]
    elif args.mode == "sensitivity":
        rows, plan = report["rows"], report["plan"]
        lines += [f"{r['rank']:>3}. {r['layer']:<28} {r['accuracy']:.2%}  (−{r['drop']:.2%})" for r in rows]
        lines.append(f"plan: the {sum(b == 8 for b in plan['plan'].values())} most fragile layers at 8 bits, "
                     f"the rest at 4: {plan['accuracy']:.2%}, {plan['weight_bytes']:,} bytes of weights "
                     f"(float32: {plan['float32_bytes']:,})")
    elif args.mode == "int8":
        rows = report["rows"]
        f32, i8 = rows
        lines += [f"{len(report['batch_norms_folded'])} batch norms folded into their convolutions first",
                  f"{'':<8}{'accuracy':>10}{'batch 1':>11}{'batch 256':>16}{'weights':>14}"]
        lines += [f"{r['model']:<8}{r['accuracy']:>10.2%}{r['latency_ms_batch_1']:>8.2f} ms"
                  f"{r['images_per_s_batch_256']:>10,.0f} img/s{r['weight_bytes']:>12,} B" for r in rows]
        lines.append(f"int8: {i8['images_per_s_batch_256'] / f32['images_per_s_batch_256']:.1f}× the throughput, "
                     f"{f32['weight_bytes'] / i8['weight_bytes']:.1f}× smaller weights, "
                     f"{(i8['accuracy'] - f32['accuracy']) * 100:+.2f} points")
        program, float32 = report.pop("program"), report.pop("float32_model")
        report.pop("int8_bytes_by_dtype", None)
        if args.out:  # the int8 program for PyTorch, and both networks as ONNX files for Netron
            shape = ResNetConfig.from_dict(report["config"]).input_shape
            files["int8.pt2"] = program_bytes(program)
            files["float32.onnx"] = onnx_bytes(float32, shape)
            files["int8.onnx"] = onnx_bytes(program, shape)
    else:
        model, config = report.pop("model"), ResNetConfig.from_dict(report["config"])
        rows = [{k: report[k] for k in ("bits", "float32", "before", "after")}]
        lines.append(f"{report['bits']}-bit accuracy: {report['before']:.2%} before the fine-tune, "
                     f"{report['after']:.2%} after {args.epochs} epochs (float32: {report['float32']:.2%})")
        meta = {"quantization": f"{report['bits']}-bit weights on their grids after QAT", "mean": list(data.mean),
                "std": list(data.std), "classes": list(data.classes)}
        files["qat-checkpoint.pt"] = checkpoint_bytes(model, config, meta)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        files[f"{args.mode}.json"] = json.dumps(report, indent=2).encode()
        files[f"{args.mode}.csv"] = export.frame_bytes(pd.DataFrame(rows), "csv", "")
        for name, data_bytes in files.items():
            lines.append(f"wrote {write_file(out / name, data_bytes)}")
    return "\n".join(lines)
