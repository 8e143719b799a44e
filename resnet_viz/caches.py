"""Caches with a size limit, least recently used first out: in memory (``SizedLRU``, for the app's traces and
diagrams) and on disk (``prune_least_recent``, for decoded datasets, extracted archives and run folders)."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any


class SizedLRU:
    """A thread-safe mapping that keeps at most ``max_bytes`` of values, by ``size(value)``, evicting the least
    recently used. A value larger than the whole budget is computed and returned but not kept."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int] = sys.getsizeof):
        self.max_bytes, self._size = max_bytes, size
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = make()  # outside the lock: two sessions may make the same value once each, never wait on another
        size = self._size(value)
        with self._lock:
            if key not in self._items and size <= self.max_bytes:
                self._items[key] = (value, size)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self.bytes -= dropped
        return value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


def tree_stats(folder: Path, skip: str | None = None) -> dict[str, int]:
    """How many files a folder holds, however deep, and their bytes (links not followed); ``skip`` names a file
    at its top that is not counted."""
    files = size = 0
    for top, _, names in os.walk(folder):
        for name in names:
            if top != str(folder) or name != skip:
                files, size = files + 1, size + os.lstat(os.path.join(top, name)).st_size
    return {"files": files, "bytes": size}


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links not followed)."""
    if not path.is_dir():
        return path.stat().st_size if path.exists() else 0
    return tree_stats(path)["bytes"]


def remove(path: Path) -> None:
    """Delete a file or a folder with all it holds; what is already gone is no error."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prune_least_recent(entries: Iterable[Path], limit: int, keep: Iterable[Path] = (),
                       size: Callable[[Path], int] = tree_bytes) -> list[Path]:
    """Delete the least recently modified of ``entries`` (files or folders) until they hold at most ``limit``
    bytes; those in ``keep`` stay whatever their age. Returns what was deleted."""
    keep = {Path(p) for p in keep}
    aged = sorted(((p.stat().st_mtime, p, size(p)) for p in map(Path, entries) if p.exists()), key=lambda e: e[0])
    total = sum(s for _, _, s in aged)
    removed = []
    for _, path, bytes_ in aged:
        if total <= limit:
            break
        if path in keep:
            continue
        remove(path)
        total -= bytes_
        removed.append(path)
    return removed


def touch(path: Path) -> None:
    """Mark an entry as just used."""
    try:
        os.utime(path)
    except OSError:
        pass
