"""The command line: ``python -m resnet_viz presets|summary|export ...``.

Same core calls as the app. Bad input ends with exit status 2 and one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import export, tables
from .config import PRESETS, SHORTCUTS, ConfigError, ResNetConfig, preset
from .diagram import DIRECTIONS, LEVELS
from .trace import trace

WHAT = ("diagram", "graph", "table", "charts", "compare")


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


def cmd_export(args: argparse.Namespace) -> str:
    if args.what != "compare" and not args.arch:
        raise UsageError(f"--what {args.what} needs ARCH: a preset name or a config JSON file")
    if args.what == "compare":
        data = _compare_bytes(args)
    elif args.what == "diagram":
        fmt = export.format_of(args.output, args.format, export.DIAGRAM_FORMATS, "diagrams")
        result = trace(config_from_args(args), batch_size=args.batch)
        data = export.block_diagram_bytes(result, fmt, args.level, args.direction, fold=not args.no_fold)
    elif args.what == "graph":
        from .diagram import computational_graph

        fmt = export.format_of(args.output, args.format, export.DIAGRAM_FORMATS, "diagrams")
        graph = computational_graph(config_from_args(args), depth=3 if args.depth is None else args.depth,
                                    direction=args.direction, batch_size=args.batch)
        data = export.diagram_bytes(graph, fmt)
    elif args.what == "table":
        fmt = export.format_of(args.output, args.format, export.TABLE_FORMATS, "tables")
        data = export.table_bytes(trace(config_from_args(args), batch_size=args.batch), fmt, args.depth)
    else:
        data = _charts_bytes(args)
    path = export.write_file(args.output, data)
    return f"wrote {path} ({tables.human_bytes(len(data))})"


def _charts_bytes(args: argparse.Namespace) -> bytes:
    from .charts import CHARTS, charts_html

    fmt = export.format_of(args.output, args.format, export.CHART_FORMATS, "charts")
    result = trace(config_from_args(args), batch_size=args.batch)
    if fmt == "html":
        return charts_html({name: chart(result) for name, chart in CHARTS.items()},
                           tables.describe(result)).encode("utf-8")
    if args.chart not in CHARTS:
        raise UsageError(f"a {fmt} file holds one chart: choose it with --chart ({', '.join(CHARTS)})")
    return export.figure_bytes(CHARTS[args.chart](result), fmt)


def _compare_bytes(args: argparse.Namespace) -> bytes:
    from . import compare

    fmt = export.format_of(args.output, args.format, export.TABLE_FORMATS + ("html",), "comparisons")
    if args.vs:
        if not args.arch:
            raise UsageError("--vs compares ARCH with others: give ARCH first")
        configs = [config_from_args(args, arch) for arch in (args.arch, *args.vs)]
        result, title = compare.compare(configs, batch_size=args.batch), "comparison"
    elif args.study == "shortcuts":
        result = compare.shortcut_study(args.arch or "resnet20")
        title = f"shortcut options A, B and C on {args.arch or 'resnet20'}"
    elif fmt == "html":
        configs = [preset(name, shortcut=args.shortcut or "A") for name in compare.CIFAR_DEPTHS]
        result, title = compare.compare(configs), "CIFAR depth series"
    else:
        frame = compare.depth_study(args.shortcut or "A")
        return export.frame_bytes(frame, fmt, "CIFAR depth series (ResNet paper, Table 6)")
    if fmt == "html":
        from .charts import charts_html

        return charts_html(compare.comparison_charts(result), title).encode("utf-8")
    return export.comparison_bytes(result, fmt, title)


def _load_data(args: argparse.Namespace, show: bool = True):
    from tqdm import tqdm

    from .data import load_dataset

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


# what defines a run: given again with --resume, it is refused (the run goes on as it was started)
RUN_FLAGS = {"arch": "ARCH", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
             "schedule": "--schedule", "time_budget": "--time-budget", "seed": "--seed", "shortcut": "--shortcut",
             "classes": "--classes", "input": "--input"}


def _run_setup(args: argparse.Namespace):
    """The config, the settings and, with --resume, the saved run to go on with."""
    from .train import TrainSettings, load_resume

    how = {"device": args.device, "compile": args.compile, "sync_bn": args.sync_bn}
    if args.precision is not None:
        how["precision"] = args.precision
    if args.micro_batches is not None:
        how["micro_batches"] = args.micro_batches
    if args.resume:
        given = [flag for name, flag in RUN_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise UsageError(f"--resume goes on with the run saved in the checkpoint, network and settings alike: "
                             f"leave out {given[0]}")
        resume = load_resume(args.resume)
        return resume.config, resume.settings_with(**how), resume
    if args.arch is None:
        raise UsageError("give ARCH (a preset name or a config JSON file), or --resume CHECKPOINT (see --help)")
    defaults = TrainSettings()
    run = {name: getattr(args, name) for name in ("epochs", "batch_size", "lr", "schedule", "time_budget", "seed")}
    run = {name: getattr(defaults, name) if value is None else value for name, value in run.items()}
    return config_from_args(args), TrainSettings(**run, **how), None


def cmd_train(args: argparse.Namespace) -> str:
    import signal
    import time

    from tqdm import tqdm

    from . import distributed
    from .train import Trainer

    config, settings, resume = _run_setup(args)
    world = distributed.join(args.device)  # under torchrun: this process's place in the run
    with distributed.local_first(world):  # one process per machine decodes a folder into the cache first
        data = _load_data(args, show=world.local_rank == 0)
    trainer = Trainer(config, data, settings, out_dir=args.out, world=world, resume=resume)
    if world.main:
        where = f", {world.describe()}" if world.distributed else ""
        again = f"\ngoing on from step {resume.position.step:,} of {resume.path}" if resume else ""
        print(f"{config.describe()}\n{data.describe()}\ndevice {trainer.device}, {trainer.precision}{where}{again}",
              file=sys.stderr)
    bar = tqdm(total=1000, desc="training", unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
               disable=not world.main)

    def on_progress(p) -> None:
        bar.n = int(1000 * min(p.progress, 1.0))
        bar.set_postfix_str(f"epoch {p.epoch}, loss {p.loss:.3f}, acc {p.train_acc:.1%}, {p.images_per_s:,.0f} img/s",
                            refresh=False)
        bar.refresh()

    first_signal = 0.0

    def on_signal(signum, frame) -> None:  # Ctrl-C or SIGTERM: stop cleanly; a second Ctrl-C aborts
        nonlocal first_signal
        if trainer.stopping():
            # torchrun passes a Ctrl-C on to its processes, which the terminal has already signalled
            if world.distributed and time.monotonic() - first_signal < 2.0:
                return
            raise KeyboardInterrupt
        first_signal = time.monotonic()
        trainer.stop()
        if world.main:
            bar.write("stopping after this step; the model is still evaluated and saved (Ctrl-C again to abort)")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = trainer.run(on_progress=on_progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bar.close()
    if not world.main:
        return ""
    lines = [
        f"validation accuracy {result.val_acc:.2%} ({result.val_acc_flip:.2%} with flip test-time augmentation)",
        f"{result.steps:,} steps, {result.epochs_done:g} epochs in {result.train_seconds:.1f} s, "
        f"{result.images_per_s:,.0f} images/s on {result.device} ({result.precision}"
        f"{', ' + result.processes if world.distributed else ''}); ended by: {result.stopped}",
    ]
    lines += [f"wrote {path}" for path in result.files.values()]
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> str:
    import pandas as pd

    from .train import evaluate_checkpoint

    data = _load_data(args)
    accuracy, rows = evaluate_checkpoint(args.checkpoint, data, args.split, args.device, args.flip)
    width = max(len(r["class"]) for r in rows)
    lines = [f"{args.split} accuracy {accuracy:.2%} on {data.describe()}", ""]
    lines += [f"{r['class']:<{width}}  {r['correct']:>6,} / {r['images']:<6,}  {r['accuracy']:7.2%}" for r in rows]
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name(f"evaluation-{args.split}.csv")
    export.write_file(out, export.frame_bytes(pd.DataFrame(rows), "csv", ""))
    lines.append(f"wrote {out}")
    return "\n".join(lines)


def cmd_quantize(args: argparse.Namespace) -> str:
    import pandas as pd
    from tqdm import tqdm

    from . import quantize

    data = _load_data(args)
    bar = tqdm(desc=args.mode, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    def on_step(p) -> None:  # a qat step
        bar.total, bar.n = 1000, int(1000 * min(p.progress, 1.0))
        bar.set_postfix_str(f"epoch {p.epoch}, loss {p.loss:.3f}", refresh=False)
        bar.refresh()

    try:
        report = quantize.run_study(args.checkpoint, data, args.mode, args.bits, args.epochs, args.device,
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
        from .int8 import program_bytes

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
            from .int8 import onnx_bytes

            shape = ResNetConfig.from_dict(report["config"]).input_shape
            files["int8.pt2"] = program_bytes(program)
            files["float32.onnx"] = onnx_bytes(float32, shape)
            files["int8.onnx"] = onnx_bytes(program, shape)
    else:
        from .train import checkpoint_bytes

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
            lines.append(f"wrote {export.write_file(out / name, data_bytes)}")
    return "\n".join(lines)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="cifar10, cifar100, synthetic, or an ImageFolder folder or .tar.gz")
    p.add_argument("--data-root", help="where CIFAR lives or is downloaded to (default: the cache folder)")
    p.add_argument("--download", action="store_true", help="download CIFAR with torchvision (needs the network)")
    p.add_argument("--limit-per-class", type=int, help="use at most this many training images per class")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")


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

    p = sub.add_parser("export", help="write a diagram, table, charts or comparison to a file",
                       description="Files are written whole or not at all; the format comes from --format or "
                                   "the file's extension.")
    p.add_argument("arch", metavar="ARCH", nargs="?", help="a preset name or a config JSON file")
    p.add_argument("--what", choices=WHAT, required=True,
                   help="diagram (block diagram), graph (torchview), table, charts, or compare")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the file to write")
    p.add_argument("--format", metavar="FMT", help="svg png pdf dot | csv json md tex | html (default: from PATH)")
    p.add_argument("--level", choices=LEVELS, default="block", help="diagram detail (default block)")
    p.add_argument("--direction", choices=DIRECTIONS, default="TB", help="top-to-bottom or left-to-right")
    p.add_argument("--no-fold", action="store_true", help="draw every block, even identical ones")
    p.add_argument("--depth", type=int, help="table rows down to this depth; torchview nesting depth (default 3)")
    p.add_argument("--chart", help="the chart for a png/svg/pdf file (html holds them all)")
    p.add_argument("--study", choices=("depth", "shortcuts"), default="depth",
                   help="compare: the CIFAR depth series (default) or shortcuts A/B/C for ARCH")
    p.add_argument("--vs", nargs="+", metavar="ARCH", help="compare: ARCH against these")
    p.add_argument("--shortcut", choices=SHORTCUTS, help="shortcut option (the depth study defaults to A)")
    p.add_argument("--classes", type=int, help="number of output classes")
    p.add_argument("--input", metavar="CxHxW", help="input channels, height and width")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("train", help="train the network on CIFAR, a folder of images, or synthetic data",
                       description="On several GPUs or machines, start it with torchrun: torchrun --standalone "
                                   "--nproc_per_node=N -m resnet_viz train ... (see the README).")
    p.add_argument("arch", metavar="ARCH", nargs="?", help="a preset name or a config JSON file")
    _data_arguments(p)
    p.add_argument("--epochs", type=int, help="default 10")
    p.add_argument("--batch-size", type=int, help="the global batch, over all processes (default 512)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.4 at batch 512)")
    p.add_argument("--schedule", choices=("onecycle", "cosine"), help="default onecycle")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="auto (default): bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--time-budget", type=float, metavar="S", help="seconds of training; the schedule fits into it")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--micro-batches", type=int, metavar="K",
                   help="take each process's share of a batch in K passes, gradients accumulated (default 1)")
    p.add_argument("--sync-bn", action="store_true",
                   help="several GPU processes: BatchNorm statistics over the global batch (SyncBatchNorm)")
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="go on with the run saved in this checkpoint.pt, on any number of processes")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the checkpoint and the metrics")
    p.add_argument("--shortcut", choices=SHORTCUTS, help="shortcut option")
    p.add_argument("--classes", type=int, help="number of output classes (default: the preset's)")
    p.add_argument("--input", metavar="CxHxW", help="input channels, height and width")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a checkpoint, overall and per class")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint.pt written by train")
    _data_arguments(p)
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    p.add_argument("--out", metavar="CSV", help="per-class table (default: evaluation-SPLIT.csv beside the checkpoint)")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("quantize", help="quantize a checkpoint: real int8, bit sweeps, layer sensitivity, QAT")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint.pt written by train")
    _data_arguments(p)
    p.add_argument("--mode", choices=("int8", "sweep", "sensitivity", "qat"), required=True,
                   help="int8: real int8 against float32 on this CPU; sweep: accuracy at each bit width per scheme; "
                        "sensitivity: one layer at a time; qat: a short quantization-aware fine-tune")
    p.add_argument("--bits", type=int, nargs="+", help="bit widths (sweep: default 8 6 4 3 2; otherwise 4)")
    p.add_argument("--epochs", type=int, default=3, help="qat: fine-tuning epochs (default 3)")
    p.add_argument("--out", metavar="DIR", help="write the report as JSON and CSV here")
    p.set_defaults(run=cmd_quantize)
    return parser


def _domain_errors() -> tuple[type[Exception], ...]:
    from .data import DataError
    from .train import CheckpointError

    return DataError, CheckpointError


def main(argv: Sequence[str] | None = None) -> int:
    from . import distributed

    rank, local_rank = distributed.env_ranks()
    who = f"rank {rank}: " if rank else ""
    fresh_line = "\n" if rank else ""  # rank 0's progress bar may hold the line
    try:
        args = build_parser().parse_args(argv)
        output = args.run(args)
    except (UsageError, ConfigError, export.ExportError, *_domain_errors()) as e:
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


if __name__ == "__main__":
    sys.exit(main())
