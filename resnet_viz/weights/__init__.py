"""Trained networks that ship with the package: each a checkpoint (``NAME.pt``, the usual format, read with
``weights_only=True``) and a card beside it (``NAME.json``): the command that trained it, the recipe, the data,
the validation accuracy with and without flip test-time augmentation, the training history, the torch version
and the date. Wherever a checkpoint is taken, ``bundled:NAME`` names one. ``scripts/bundle_weights.py`` makes
them from a finished ``train`` run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

WEIGHTS_DIR = Path(__file__).parent
PREFIX = "bundled:"


@dataclass(frozen=True)
class Bundled:
    """One shipped network: its name, its checkpoint file and its card."""

    name: str
    card: dict[str, Any]

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"

    @property
    def ref(self) -> str:
        """How a command or a page names it: ``bundled:NAME``."""
        return f"{PREFIX}{self.name}"

    @property
    def network(self) -> str:
        return self.card["network"]

    @property
    def val_acc(self) -> float:
        return float(self.card["val_acc"])

    @property
    def val_acc_flip(self) -> float:
        return float(self.card["val_acc_flip"])

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def summary(self) -> str:
        return (f"{self.name}: {self.network}, {self.val_acc:.2%} validation accuracy ({self.val_acc_flip:.2%} with "
                f"flip test-time augmentation) after {self.card['epochs']:g} epochs")


@cache
def bundled() -> tuple[Bundled, ...]:
    """Every shipped network, the most accurate first (the one pages open by default)."""
    found = []
    for card in WEIGHTS_DIR.glob("*.json"):
        if card.with_suffix(".pt").is_file():
            found.append(Bundled(card.stem, json.loads(card.read_text(encoding="utf-8"))))
    return tuple(sorted(found, key=lambda b: (-b.val_acc, b.name)))


def names() -> tuple[str, ...]:
    return tuple(b.name for b in bundled())


def get(name: str) -> Bundled:
    """The shipped network called ``name`` (with or without the ``bundled:`` prefix)."""
    name = name.removeprefix(PREFIX)
    for b in bundled():
        if b.name == name:
            return b
    raise CheckpointError(f"there is no bundled network {name!r}: choose one of "
                          f"{', '.join(names()) or '(none are installed)'}, or give a checkpoint file")


def is_bundled(checkpoint: str | Path) -> bool:
    return isinstance(checkpoint, str) and checkpoint.startswith(PREFIX)


def resolve(checkpoint: str | Path) -> Path:
    """The file a CHECKPOINT argument names: ``bundled:NAME`` is a shipped network, anything else a path."""
    return get(checkpoint).path if is_bundled(checkpoint) else Path(checkpoint)
