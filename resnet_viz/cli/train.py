"""``train`` and ``evaluate``: a run on one device or, under torchrun, on several processes; the accuracy of a
saved checkpoint. The train flags are declared by ``TrainSettings`` itself."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError
from ..io import write_file
from ..progress import ProgressBar, progress_bar
from ..quantization.packed import open_quantized, quantized_description
from ..training import Trainer, TrainSettings, distributed, evaluate_checkpoint, load_resume
from ..training.settings import DEFAULTS, SETTINGS, flagged
from ..views import export
from .arguments import (
    CHECKPOINT_HELP,
    add_arch_overrides,
    add_data_arguments,
    config_from_args,
    default_beside,
    load_data,
)

ARCH_FLAGS = {"arch": "ARCH", "shortcut": "--shortcut", "classes": "--classes", "input": "--input"}


def register(sub) -> None:
    p = sub.add_parser("train", help="train the network on CIFAR, a folder of images, or synthetic data",
                       description="On several GPUs or machines, start it with torchrun: torchrun --standalone "
                                   "--nproc_per_node=N -m resnet_viz train ... (see the README).")
    p.add_argument("arch", metavar="ARCH", nargs="?", help="a preset name or a config JSON file")
    add_data_arguments(p, device=False)
    add_settings_arguments(p)
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="go on with the run saved in this checkpoint.pt, on any number of processes")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the checkpoint and the metrics")
    add_arch_overrides(p, shortcut_help="shortcut option", classes_help="number of output classes (default: the "
                       "preset's)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a checkpoint, overall and per class")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP + "; or a low-bit network that "
                   "quantize --mode qat wrote (qat-W4A4.pt or the packed qat-W4A4.rvq), evaluated as quantized")
    add_data_arguments(p)
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    p.add_argument("--out", metavar="CSV", help="per-class table (default: evaluation-SPLIT.csv beside the checkpoint)")
    p.set_defaults(run=cmd_evaluate)


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per flagged TrainSettings field. Left out, a flag is None, so that a resumed run can tell what was
    given; a switch is False (a resumed run is compiled, or uses SyncBN, only when asked again)."""
    for f in flagged():
        meta, default = f.metadata, getattr(DEFAULTS, f.name)
        if isinstance(default, bool):
            p.add_argument(meta["flag"], action="store_true", help=meta["help"])
            continue
        kind = float if f.type in ("float", "float | None") else int if f.type in ("int", "int | None") else str
        shown = "" if default is None else f" (default {default})"
        p.add_argument(meta["flag"], type=kind, choices=meta["choices"], metavar=meta["metavar"],
                       help=f"{meta['help']}{shown}")


def run_setup(args: argparse.Namespace):
    """The config, the settings and, with --resume, the saved run to go on with."""
    given = {f.name: getattr(args, f.name) for f in flagged() if getattr(args, f.name) is not None}
    how = {name: value for name, value in given.items() if not SETTINGS[name].metadata["run"]}
    if args.resume:
        fixed = [flag for name, flag in ARCH_FLAGS.items() if getattr(args, name) is not None]
        fixed += [SETTINGS[name].metadata["flag"] for name in given if name not in how]
        if fixed:
            raise UsageError(f"--resume goes on with the run saved in the checkpoint, network and settings alike: "
                             f"leave out {fixed[0]}")
        resume = load_resume(args.resume)
        return resume.config, resume.settings_with(**how), resume
    if args.arch is None:
        raise UsageError("give ARCH (a preset name or a config JSON file), or --resume CHECKPOINT (see --help)")
    return config_from_args(args), TrainSettings(**given), None


def cmd_train(args: argparse.Namespace) -> str:
    config, settings, resume = run_setup(args)
    world = distributed.join(args.device or "auto")  # under torchrun: this process's place in the run
    with distributed.local_first(world):  # one process per machine decodes a folder into the cache first
        data = load_data(args, show=world.local_rank == 0)
    trainer = Trainer(config, data, settings, out_dir=args.out, world=world, resume=resume)
    if world.main:
        where = f", {world.describe()}" if world.distributed else ""
        again = f"\ngoing on from step {resume.position.step:,} of {resume.path}" if resume else ""
        print(f"{config.describe()}\n{data.describe()}\ndevice {trainer.device}, {trainer.precision} "
              f"({trainer.precision_reason}){where}{again}", file=sys.stderr)
        if trainer.measuring():
            print(f"measuring the speed at batch {trainer.choice.batch_size}…", file=sys.stderr)
    choice = trainer.choose()
    if world.main:
        print(choice.describe(), file=sys.stderr)
    with progress_bar("training", enabled=world.main) as bar, stop_on_signals(trainer, world, bar):
        result = trainer.run(on_progress=bar.show)
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


@contextmanager
def stop_on_signals(trainer: Trainer, world: distributed.World, bar: ProgressBar) -> Iterator[None]:
    """Ctrl-C or SIGTERM stops the run cleanly after the current step; a second Ctrl-C aborts."""
    first_signal = 0.0

    def on_signal(signum, frame) -> None:
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
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_evaluate(args: argparse.Namespace) -> str:
    import pandas as pd

    data = load_data(args)
    opened = {}

    def opener(path, device):  # a low-bit checkpoint or packed file computes as quantized
        opened["network"] = open_quantized(path, device)
        return opened["network"]

    accuracy, rows = evaluate_checkpoint(args.checkpoint, data, args.split, args.device, args.flip, opener=opener)
    width = max(len(r["class"]) for r in rows)
    how = quantized_description(opened["network"][2])
    lines = [f"{args.split} accuracy {accuracy:.2%}{' with flip TTA' if args.flip else ''} on {data.describe()}"
             + (f" ({how})" if how else ""), ""]
    lines += [f"{r['class']:<{width}}  {r['correct']:>6,} / {r['images']:<6,}  {r['accuracy']:7.2%}" for r in rows]
    out = Path(args.out) if args.out else default_beside(args.checkpoint, f"evaluation-{args.split}.csv")
    write_file(out, export.frame_bytes(pd.DataFrame(rows), "csv", ""))
    lines.append(f"wrote {out}")
    return "\n".join(lines)
