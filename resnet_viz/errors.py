"""The errors a person can fix. Each message is one sentence that says what to change; the command line
prints it and exits with status 2, the app shows it in a box, and neither shows a traceback."""

from __future__ import annotations


class ResNetVizError(Exception):
    """Bad input of any kind: a config, data, a checkpoint, a file to write, a model to quantize."""


class ConfigError(ResNetVizError, ValueError):
    """A config or a setting that cannot describe a network or a run; the message says what to change."""


class DataError(ResNetVizError):
    """Data that cannot be loaded; the message says what to fix or where to put the files."""


class CheckpointError(ResNetVizError):
    """A checkpoint that cannot be loaded; the message says why."""


class ExportError(ResNetVizError):
    """A file that cannot be made here; the message says what to install or change."""


class FileWriteError(ExportError, OSError):
    """A file the system would not let be written (a full disk, a quota, a read-only file system, no permission);
    the message names the file and the reason. Still an ``OSError``, for code that treats any failed write as one."""


class QuantizationError(ResNetVizError):
    """A model that cannot be quantized, saved, loaded or compiled here; the message says why."""


class UsageError(ResNetVizError):
    """Bad command-line input; the message is the whole story."""
