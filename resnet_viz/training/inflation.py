"""What a checkpoint file would inflate to, checked before ``torch.load`` reads a byte of it.

A checkpoint is a zip archive: a pickled record (``data.pkl``: names, the config as JSON text, small values) and
one entry per tensor. ``torch.load`` inflates every entry in full, so a small file of deflated zeros would take
gigabytes of memory before any other check ran. Here the archive's directory is read instead: every entry's
sizes, the record's size, and the config the record claims (found by walking the pickle's opcodes with
``pickletools``, which executes nothing). The tensors may then take no more than that config's weights,
optimizer state and buffers need, and no entry may be compressed much: ``torch.save`` stores its entries.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

from ..config import ResNetConfig
from ..errors import CheckpointError, ConfigError
from ..formatting import human_bytes
from ..limits import MiB, limits, over

SMALL_ENTRY = 1 * MiB  # entries this small may be compressed at any ratio (text compresses well)


def check_inflation(path: Path, header: str) -> None:
    """Refuse ``path`` unless its entries inflate to what the config it claims could need; a record without
    ``header`` (the checkpoint format's name) is not a checkpoint at all."""
    bounds = limits()
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            record = _record(path, archive, entries, bounds.checkpoint_record_bytes)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise CheckpointError(f"{path.name} is not a readable resnet-viz checkpoint (not a zip archive that "
                              "torch.save writes)") from None
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > SMALL_ENTRY and ratio > bounds.checkpoint_ratio:
            raise CheckpointError(f"{path.name} holds an entry that inflates {ratio:,.0f}-fold "
                                  f"({human_bytes(entry.compress_size)} to {human_bytes(entry.file_size)}), over "
                                  f"{over('checkpoint_ratio', bounds.checkpoint_ratio)}; torch.save compresses "
                                  "nothing, so this file was not written by it")
    claimed = _claimed_config(path, record, header)
    tensors = sum(e.file_size for e in entries if not e.filename.endswith("data.pkl"))
    allowed = checkpoint_bytes_allowed(claimed)
    if tensors > allowed:
        raise CheckpointError(f"{path.name} holds {human_bytes(tensors)} of tensors, but its config "
                              f"({claimed.describe()}) needs at most {human_bytes(allowed)}; refusing to read it")


def checkpoint_bytes_allowed(config: ResNetConfig) -> int:
    """The most a checkpoint of ``config`` can hold in tensors: float32 weights, as much again for the
    optimizer's momentum and once more for anything else a run keeps (BN statistics, counters), plus 16 MiB."""
    return 3 * 4 * config.num_params() + 16 * MiB


def _record(path: Path, archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], limit: int) -> bytes:
    records = [e for e in entries if e.filename.endswith("/data.pkl") or e.filename == "data.pkl"]
    if len(records) != 1:
        raise CheckpointError(f"{path.name} is not a resnet-viz checkpoint (no single data.pkl record)")
    if records[0].file_size > limit:
        raise CheckpointError(f"{path.name}'s record of names and values is {human_bytes(records[0].file_size)}, "
                              f"over {over('checkpoint_record_bytes', limit)}")
    with archive.open(records[0]) as f:
        return f.read(limit + 1)[:limit]


def _claimed_config(path: Path, record: bytes, header: str) -> ResNetConfig:
    """The config the record holds under its "config" key: the string that follows that key's string."""
    previous, found_header = None, False
    try:
        for opcode, arg, _ in pickletools.genops(record):
            if isinstance(arg, str) and opcode.name.endswith("UNICODE"):
                found_header = found_header or arg == header
                if previous == "config" and found_header:
                    return ResNetConfig.from_json(arg)
                previous = arg
            elif "PUT" not in opcode.name and opcode.name != "MEMOIZE":
                previous = None
    except ConfigError as e:
        raise CheckpointError(f"{path.name} holds a config that cannot describe a network: {e}") from None
    except (ValueError, TypeError):  # a malformed pickle
        pass
    missing = "its record holds no config" if found_header else f"no '{header}' header"
    raise CheckpointError(f"{path.name} is not a resnet-viz checkpoint ({missing})")
