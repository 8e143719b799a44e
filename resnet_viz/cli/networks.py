"""The commands that look at a network without training it: ``presets``, ``summary`` and ``export``."""

from __future__ import annotations

import argparse

from ..config import PRESETS, preset
from ..errors import UsageError
from ..formatting import human_bytes
from ..io import write_file
from ..tracing import trace
from ..views import compare, export, tables
from ..views.charts import CHARTS, charts_html
from ..views.diagram import LEVELS
from ..views.graph import DIRECTIONS, computational_graph
from .arguments import add_arch_overrides, config_from_args

WHAT = ("diagram", "graph", "table", "charts", "compare")


def register(sub) -> None:
    p = sub.add_parser("presets", help="list the presets with their parameters and MACs")
    p.set_defaults(run=cmd_presets)

    p = sub.add_parser("summary", help="every layer's shapes, parameters and MACs, with totals")
    p.add_argument("arch", metavar="ARCH", help="a preset name (see `presets`) or a config JSON file")
    add_arch_overrides(p, input_help="input channels, height and width, e.g. 3x64x64")
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
    p.add_argument("--study", choices=("depth", "shortcuts", "residual"), default="depth",
                   help="compare: the CIFAR depth series (default), shortcuts A/B/C for ARCH, or residual: ARCH "
                        "with and without its skips (without ARCH, the plain CIFAR series against the residual one)")
    p.add_argument("--vs", nargs="+", metavar="ARCH", help="compare: ARCH against these")
    add_arch_overrides(p, shortcut_help="shortcut option (the depth study defaults to A)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.set_defaults(run=cmd_export)


def cmd_presets(args: argparse.Namespace) -> str:
    header = ("Preset", "Block", "Depth", "Input", "Classes", "Shortcut", "Params", "MACs")
    rows = []
    for name, config in PRESETS.items():
        totals = trace(config).totals
        c, h, w = config.input_shape
        rows.append((name, config.block, str(config.depth), f"{c}×{h}×{w}", str(config.num_classes),
                     config.shortcut, f"{totals.params:,}", f"{totals.macs:,}"))
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
        fmt = export.format_of(args.output, args.format, export.DIAGRAM_FORMATS, "diagrams")
        graph = computational_graph(config_from_args(args), depth=3 if args.depth is None else args.depth,
                                    direction=args.direction, batch_size=args.batch)
        data = export.diagram_bytes(graph, fmt)
    elif args.what == "table":
        fmt = export.format_of(args.output, args.format, export.TABLE_FORMATS, "tables")
        data = export.table_bytes(trace(config_from_args(args), batch_size=args.batch), fmt, args.depth)
    else:
        data = _charts_bytes(args)
    path = write_file(args.output, data)
    return f"wrote {path} ({human_bytes(len(data))})"


def _charts_bytes(args: argparse.Namespace) -> bytes:
    fmt = export.format_of(args.output, args.format, export.CHART_FORMATS, "charts")
    result = trace(config_from_args(args), batch_size=args.batch)
    if fmt == "html":
        return charts_html({name: chart(result) for name, chart in CHARTS.items()},
                           result.describe()).encode("utf-8")
    if args.chart not in CHARTS:
        raise UsageError(f"a {fmt} file holds one chart: choose it with --chart ({', '.join(CHARTS)})")
    return export.figure_bytes(CHARTS[args.chart](result), fmt)


def _compare_bytes(args: argparse.Namespace) -> bytes:
    fmt = export.format_of(args.output, args.format, export.TABLE_FORMATS + ("html",), "comparisons")
    if args.vs:
        if not args.arch:
            raise UsageError("--vs compares ARCH with others: give ARCH first")
        configs = [config_from_args(args, arch) for arch in (args.arch, *args.vs)]
        result, title = compare.compare(configs, batch_size=args.batch), "comparison"
    elif args.study == "shortcuts":
        result = compare.shortcut_study(args.arch or "resnet20")
        title = f"shortcut options A, B and C on {args.arch or 'resnet20'}"
    elif args.study == "residual" and (args.arch or fmt == "html"):
        result = compare.residual_vs_plain(config_from_args(args) if args.arch else "resnet20")
        title = f"{result.totals['name'].iloc[0]} with and without skips"
    elif args.study == "residual":
        frame = compare.plain_depth_study(args.shortcut or "A")
        return export.frame_bytes(frame, fmt, "plain CIFAR networks against residual ones of the same depth")
    elif fmt == "html":
        configs = [preset(name, shortcut=args.shortcut or "A") for name in compare.CIFAR_DEPTHS]
        result, title = compare.compare(configs), "CIFAR depth series"
    else:
        frame = compare.depth_study(args.shortcut or "A")
        return export.frame_bytes(frame, fmt, "CIFAR depth series (ResNet paper, Table 6)")
    if fmt == "html":
        return charts_html(compare.comparison_charts(result), title).encode("utf-8")
    return export.comparison_bytes(result, fmt, title)
