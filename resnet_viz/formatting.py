"""Numbers and shapes as people read them; every table, chart, diagram and message writes them through here."""

from __future__ import annotations

import re
from collections.abc import Sequence

Shape = tuple[int, ...]


def format_shape(shape: Sequence[int] | Sequence[Sequence[int]] | None, sep: str = "; ") -> str:
    """(1, 16, 32, 32) -> '1×16×32×32'; several shapes are joined by ``sep``; None is ''."""
    if shape is None:
        return ""
    if shape and not isinstance(shape[0], int):
        return sep.join(format_shape(s) for s in shape)
    return "×".join(str(s) for s in shape)


def format_pair(pair: Sequence[int] | None) -> str:
    """(3, 3) -> '3', (3, 5) -> '3×5'; None is ''."""
    if pair is None:
        return ""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


def shape_text(shape: Sequence[int] | list[Sequence[int]] | None) -> str:
    """(N, C, H, W) -> '(C,H,W)', the seed study's notation: the shape of one image, without the batch."""
    if shape is None:
        return ""
    if isinstance(shape, list):
        return " ".join(shape_text(s) for s in shape)
    return "(" + ",".join(str(s) for s in shape[1:]) + ")"


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def human_bytes(n: float) -> str:
    """1536 -> '1.50 KiB'."""
    for factor, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= factor:
            return f"{n / factor:.2f} {name}"
    return f"{int(n)} B"


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception's first line of text (or its type's name), at most ``limit`` characters: for messages that
    quote a library's error."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(text: str) -> str:
    """``text`` with every Markdown character escaped, so that a Markdown renderer shows it as it is: for
    messages that repeat what a user or a link gave (no link, image or HTML can come of it)."""
    return _MARKDOWN.sub(r"\\\1", text)


def ordinal(n: int) -> str:
    """1 -> '1st', 12 -> '12th', 22 -> '22nd'."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
