"""Training curves, plain against residual (He et al. 2016, Fig. 6): the training and validation error of
several runs, epoch by epoch, from what each run recorded: a shipped network's card, or a run folder's
``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..training import load_checkpoint
from ..weights import PREFIX, get, is_bundled

MAX_METRICS_BYTES = 64 * 2**20


def history_of(source: str) -> tuple[str, str, bool, list[dict]]:
    """(label, network, whether it is residual, the history of every epoch) of ``bundled:NAME``, a run folder, its
    ``metrics.json`` or its ``checkpoint.pt`` (whose folder holds the metrics)."""
    if is_bundled(source):
        shipped = get(source.removeprefix(PREFIX))
        residual = load_checkpoint(shipped.ref)[1].shortcut != "none"
        return shipped.name, shipped.network, residual, list(shipped.card.get("history", []))
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "metrics.json"
    elif path.suffix == ".pt":
        path = path.parent / "metrics.json"
    if not path.is_file():
        raise ConfigError(f"no training record at {path}: name a run folder, its metrics.json, or bundled:NAME")
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise ConfigError(f"{path} is {path.stat().st_size:,} bytes: not the metrics.json of a training run")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        history = metrics["history"]
        network = metrics["config"]["name"]
        residual = metrics["config"].get("shortcut") != "none"
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not the metrics.json of a training run ({type(e).__name__})") from None
    if not isinstance(history, list):
        raise ConfigError(f"{path} is not the metrics.json of a training run (no history)")
    folder = path.parent.name
    return (network if folder == network else f"{folder}/{network}"), network, residual, history


def curve_rows(sources: list[str]) -> tuple[list[dict], dict[str, bool]]:
    """One row per run and epoch: run, network, epoch, training error and validation error (fractions); and which
    runs are of residual networks."""
    if not sources:
        raise ConfigError("name at least one run (a run folder, its metrics.json, or bundled:NAME)")
    rows, residual = [], {}
    for source in sources:
        label, network, residual[label], history = history_of(source)
        for point in history:
            try:
                rows.append({"run": label, "network": network, "epoch": int(point["epoch"]),
                             "train_error": 1 - float(point["train_acc"]), "val_error": 1 - float(point["val_acc"])})
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"the history of {label} is not a list of epochs with train_acc and val_acc") \
                    from None
    return rows, residual
