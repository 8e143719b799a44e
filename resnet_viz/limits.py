"""How much work one request may cause: the bounds on reading files, decoding images, caching and running ``dot``.

Every bound has a default that fits a laptop and an environment variable that changes it; the error that a bound
raises names the bound and its variable, so a person who meets it knows what to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .errors import ConfigError
from .formatting import human_bytes

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limits:
    """The bounds, in bytes, pixels and seconds. ``Limits.from_env()`` reads ``RESNET_VIZ_<FIELD>`` overrides."""

    decoded_bytes: int = 4 * GiB  # the decoded images of one dataset, uint8 (CIFAR-10's train split is 150 MB)
    image_side: int = 1024  # pixels a side of one training image, read from its header before decoding
    archive_bytes: int = 8 * GiB  # what one .tar.gz may extract to
    archive_ratio: int = 100  # extracted bytes per compressed byte (a tar of JPEGs is about 1.1; zeros are 1000+)
    archive_members: int = 2_000_000  # files and folders in one archive
    checkpoint_ratio: int = 20  # inflated bytes per stored byte of any one checkpoint entry (torch.save stores)
    checkpoint_record_bytes: int = 64 * MiB  # the checkpoint's pickled record of names and small values
    dot_seconds: float = 120.0  # one run of Graphviz's dot
    cache_bytes: int = 1 * GiB  # traces and diagrams kept in memory by the app
    disk_cache_bytes: int = 8 * GiB  # decoded datasets and extracted archives kept on disk
    upload_bytes: int = 200 * MiB  # one uploaded file in the app
    image_bytes: int = 5 * MiB  # one image given to a trained network (an upload, a file on the command line)
    image_pixels: int = 40_000_000  # its width × height, read from its header before decoding

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            text = environ.get(env_name(f.name))
            if text is None or not text.strip():
                continue
            try:
                value = float(text) if f.type == "float" else int(text)
            except ValueError:
                raise ConfigError(f"{env_name(f.name)} must be a number, got {text[:40]!r}") from None
            if value <= 0:
                raise ConfigError(f"{env_name(f.name)} must be above 0, got {text[:40]!r}")
            values[f.name] = value
        return cls(**values)


def env_name(field: str) -> str:
    """The environment variable that overrides a bound: ``decoded_bytes`` → ``RESNET_VIZ_DECODED_BYTES``."""
    return f"RESNET_VIZ_{field.upper()}"


def limits() -> Limits:
    """The bounds in force now (read from the environment at each call: a test or a server may change them)."""
    return Limits.from_env()


def over(field: str, limit: float) -> str:
    """The end of a sentence about a bound that was passed: "the limit of 4.00 GiB (RESNET_VIZ_DECODED_BYTES)"."""
    shown = human_bytes(limit) if field.endswith("bytes") else f"{limit:,}" if isinstance(limit, int) else f"{limit:,g}"
    return f"the limit of {shown} ({env_name(field)})"
