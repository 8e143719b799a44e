"""Files written whole or not at all: into a temporary file beside the target, then an atomic rename. Nothing
here knows what the bytes are."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from .errors import ExportError, FileWriteError


@contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through: the target appears only when the block ends without an error,
    and a failed write leaves nothing behind (an earlier file at ``path`` stays as it was). The folder must exist.
    An ``OSError`` on the way (a full disk, a quota, a read-only file system, no permission) becomes a
    ``FileWriteError`` that names the file and the reason."""
    path = Path(path)
    target = _target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, _mode_for(target))  # mkstemp makes files only their owner may read
        os.replace(tmp, target)
    except BaseException as e:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, ExportError):
            raise write_error(path, e) from None
        raise


def _mode_for(target: Path) -> int:
    """The permissions a file written here gets: those of the file it replaces, else what open() would give."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK


def _read_umask() -> int:
    mask = os.umask(0o022)  # reading the process's umask means setting it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _target(path: Path) -> Path:
    """The file to replace: ``path``, or the file a link at ``path`` points to (the link stays). A folder, a device
    or a pipe is refused: renaming a file over it would replace it."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"{str(folder)!r} is not a folder" if folder.exists()
                          else f"folder {str(folder)!r} does not exist")
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists() and not target.is_file():
        raise FileWriteError(f"cannot write {path}: it exists and is not a regular file")
    return target


def write_error(path: str | Path, error: OSError) -> FileWriteError:
    """The sentence for a file that could not be written: "cannot write run/checkpoint.pt: no space left on
    device"."""
    reason = error.strerror or str(error) or type(error).__name__
    return FileWriteError(f"cannot write {path}: {reason[:1].lower()}{reason[1:]}")


def write_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows of one shape as CSV with a header (empty for no rows)."""
    if not rows:
        return b""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()
