"""``study``: the Lab's experiments from the command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from ..errors import ConfigError
from ..io import csv_bytes, write_file
from ..lab import STUDIES, LabSettings, run_study
from ..lab.charts import figures, safe_name
from ..lab.degradation import DEPTHS, degradation_configs, estimate, train_all
from ..progress import progress_bar
from ..tracing import trace
from ..training import TrainSettings
from ..views import export
from ..views.charts import charts_html
from ..views.diagram import block_diagram
from .arguments import add_data_arguments, load_data

WHAT = {"networks": "trained networks: checkpoints or bundled:NAME",
        "configs": "presets or checkpoints, initialised afresh (default: plain and residual at 20, 56 and 110 layers)",
        "runs": "run folders, their metrics.json, or bundled:NAME"}


def register(sub) -> None:
    p = sub.add_parser("study", help="the Lab: gradients, curves, responses, lesion, erf, landscape",
                       description="Reproduce an experiment of the ResNet literature on trained networks. "
                       + " ".join(f"{s.name}: {s.title} ({s.paper}), of {WHAT[s.takes]}." for s in STUDIES.values()))
    p.add_argument("name", choices=[*STUDIES, "degradation"], metavar="NAME", help=", ".join(STUDIES) + ", or "
                   "degradation: train plain and residual networks at two depths with one recipe, then draw their "
                   "curves (needs --data and --out)")
    p.add_argument("sources", nargs="*", metavar="CHECKPOINT", help="what to study (see above)")
    add_data_arguments(p, required=False)
    p.add_argument("--images", type=int, help="how many images (default: " + ", ".join(
        f"{s.name} {s.images}" for s in STUDIES.values() if s.data != "none") + ")")
    p.add_argument("--seed", type=int, default=0, help="random draws: lesion sets, landscape directions, weights")
    p.add_argument("--draws", type=int, default=4, help="lesion: random sets of k blocks for each k (default 4)")
    p.add_argument("--steps", type=int, default=11, help="landscape: points along each axis of the surface")
    p.add_argument("--line-steps", type=int, default=11, help="landscape: points along the line (default 11: the "
                   "surface's middle row, at no extra cost)")
    p.add_argument("--span", type=float, default=1.0, help="landscape: from -SPAN to SPAN along each direction")
    p.add_argument("--batch-size", type=int, help="gradients: the batch (default 64); degradation: the training "
                   "batch (default: the device's, as train chooses it)")
    p.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS),
                   help="degradation: the depths (default 20 56; from 20, 32, 44, 56, 110)")
    p.add_argument("--epochs", type=int, default=10, help="degradation: epochs for every network (default 10)")
    p.add_argument("--out", metavar="DIR", help="write JSON, CSV, HTML charts (and --image files) here")
    p.add_argument("--image", choices=("png", "svg"), help="also each chart as a static image (needs kaleido)")
    p.set_defaults(run=cmd_study)


def cmd_study(args: argparse.Namespace) -> str:
    if args.name == "degradation":
        return cmd_degradation(args)
    study = STUDIES[args.name]
    if study.takes != "configs" and not args.sources:
        raise ConfigError(f"name what to study: {WHAT[study.takes]}")
    if study.data in ("val", "train") and not args.data:
        raise ConfigError(f"the {args.name} study needs data: give a dataset (--data)")
    data = load_data(args) if args.data and study.data != "none" else None
    settings = LabSettings(images=args.images, seed=args.seed, draws=args.draws, steps=args.steps,
                           line_steps=args.line_steps, span=args.span, batch_size=args.batch_size or 64)
    with progress_bar(study.title, leave=False) as bar:
        report = run_study(args.name, args.sources, data, settings, progress=bar.count)
    lines = [f"{study.title} ({study.paper}) on {report.data}", *report.summary_lines()]
    if args.out:
        lines += [f"wrote {path}" for path in write_report(report, Path(args.out), args.image)]
    return "\n".join(lines)


def cmd_degradation(args: argparse.Namespace) -> str:
    if not args.data or not args.out:
        raise ConfigError("the degradation study trains networks: give a dataset (--data) and a folder (--out)")
    data = load_data(args)
    configs = degradation_configs(tuple(args.depths), len(data.classes))
    settings = TrainSettings(epochs=args.epochs, seed=args.seed, device=args.device, batch_size=args.batch_size)
    out = Path(args.out)
    print(f"training {', '.join(c.name for c in configs)} for {args.epochs} epochs each on {data.describe()}: "
          f"{estimate(configs, data, settings).describe()}", file=sys.stderr)
    stopping = []

    def on_signal(signum, frame) -> None:
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        print("\nstopping: the current network is saved, the rest are left out (Ctrl-C again to abort)",
              file=sys.stderr)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progress_bar("training", leave=False) as bar:
            results = train_all(configs, data, settings, out, on_start=lambda name: bar.tqdm.set_description(name),
                                on_progress=bar.show, stop=lambda: bool(stopping))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    report = run_study("curves", [str(out / r.config.name) for r in results])
    lines = [f"{r.config.name}: validation accuracy {r.val_acc:.2%} after {r.epochs_done:g} epochs, "
             f"{r.train_seconds / 60:.1f} min" for r in results]
    return "\n".join([*lines, *report.summary_lines(), *(f"wrote {p}" for p in write_report(report, out))])


def report_files(report, image: str | None = None) -> dict[str, bytes]:
    """Every file of a report, by name: JSON, CSV, the charts as one HTML page, and each chart as an image."""
    name = report.study
    drawn = figures(report)
    files = {f"{name}.json": json.dumps(report.to_json(), indent=1).encode(),
             f"{name}.csv": csv_bytes(report.rows()),
             f"{name}.html": charts_html(drawn, f"{report.info.title}: {', '.join(report.networks)}").encode()}
    if image:
        files.update({f"{key}.{image}": export.figure_bytes(fig, image) for key, fig in drawn.items()})
    if name == "lesion":  # each network's own JSON and block diagram, every block painted by what its removal costs
        for net in report.networks:
            files[f"lesion-{safe_name(net)}.json"] = json.dumps(report.results[net], indent=1).encode()
            graph = block_diagram(trace(report.config(net)), "block", heat=report.block_drops(net),
                                  heat_label="accuracy lost without the block")
            files[f"lesion-{safe_name(net)}.dot"] = graph.source.encode()
            if export.has_dot():
                files[f"lesion-{safe_name(net)}.svg"] = export.diagram_bytes(graph, "svg")
    return files


def write_report(report, out: Path, image: str | None = None) -> list[Path]:
    """Make every file first, then write them: a report that cannot make one leaves none."""
    files = report_files(report, image)
    out.mkdir(parents=True, exist_ok=True)
    return [write_file(out / name, data) for name, data in files.items()]
