"""Ship a finished ``train`` run as a bundled network: its weights and a card beside them.

    .venv/bin/python scripts/bundle_weights.py runs/resnet20 --name resnet20 \\
        --command "python -m resnet_viz train resnet20 --data cifar10-jpeg-train.tar.gz --epochs 30 --out runs/resnet20"

Writes resnet_viz/weights/NAME.pt (the run's checkpoint without the optimizer and run record: config, facts and
weights, still read with weights_only=True) and NAME.json: the command, the recipe, the epochs, the data, the
validation accuracy with and without flip test-time augmentation, per class, the history, the machine, the torch
version and the date.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import platform
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from resnet_viz.training import CHECKPOINT_FORMAT, load_checkpoint  # noqa: E402
from resnet_viz.weights import WEIGHTS_DIR  # noqa: E402

LIMIT_BYTES = 5 * 1024 * 1024
RECIPE = ("SGD with Nesterov momentum {momentum}, weight decay {weight_decay:g}, batch {batch_size}, one-cycle "
          "learning rate to {lr:g} ({warmup:.0%} warm-up), label smoothing {label_smoothing:g}; random crop (4-pixel "
          "padding) and horizontal flip; the first {low_res:.0%} of the epochs at 3/4 resolution; in {trained_in}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def weights_only(checkpoint: Path) -> bytes:
    """The checkpoint's config, facts and weights, without what only a resumed run needs."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if data.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"{checkpoint} is not a resnet-viz checkpoint")
    buffer = io.BytesIO()
    torch.save({key: data[key] for key in ("format", "config", "meta", "state_dict")}, buffer)
    return buffer.getvalue()


def card(name: str, metrics: dict, command: str, note: str, size: int, digest: str) -> dict:
    settings = metrics["settings"]
    return {
        "name": name,
        "network": metrics["config"]["name"],
        "command": command,
        "note": note,
        "recipe": RECIPE.format(**settings, trained_in=metrics["precision"]),
        "settings": settings,
        "epochs": settings["epochs"],
        "epochs_done": metrics["epochs_done"],
        "data": metrics["data"],
        "val_acc": metrics["val_acc"],
        "val_acc_flip": metrics["val_acc_flip"],
        "per_class": metrics["per_class"],
        "history": metrics["history"],
        "train_seconds": round(metrics["train_seconds"], 1),
        "machine": f"{metrics['device']} ({cpu_model()})" if metrics["device"] == "cpu" else metrics["device"],
        "precision": metrics["precision"],
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "bytes": size,
        "sha256": digest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the --out folder of a finished train run")
    parser.add_argument("--name", required=True, help="the bundled name (bundled:NAME)")
    parser.add_argument("--command", required=True, help="the exact command that trained it")
    parser.add_argument("--note", default="", help="anything else a reader should know about the run")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where to write (default: the package)")
    args = parser.parse_args()
    metrics = json.loads((args.run / "metrics.json").read_text())
    load_checkpoint(args.run / "checkpoint.pt")  # it must load as any checkpoint does
    blob = weights_only(args.run / "checkpoint.pt")
    if len(blob) > LIMIT_BYTES:
        raise SystemExit(f"{len(blob):,} bytes is over the {LIMIT_BYTES:,} a bundled network may have")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.pt").write_bytes(blob)
    info = card(args.name, metrics, args.command, args.note, len(blob), hashlib.sha256(blob).hexdigest())
    (args.out / f"{args.name}.json").write_text(json.dumps(info, indent=1) + "\n")
    load_checkpoint(args.out / f"{args.name}.pt")
    print(f"wrote {args.out / args.name}.pt ({len(blob):,} bytes) and its card: {info['val_acc']:.2%} "
          f"({info['val_acc_flip']:.2%} with flip TTA)")


if __name__ == "__main__":
    main()
