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


class MissingPackage(ResNetVizError, ImportError):
    """An optional package is not installed; the message names the extra of resnet-viz that brings it."""


def require(module: str, extra: str, purpose: str):
    """``module``, imported; or, where its package is not installed, one sentence: ``purpose`` needs it, and
    ``pip install 'resnet-viz[extra]'`` brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        package = module.partition(".")[0]
        if e.name != package:  # the package is there, and a part of it or something it needs is not
            raise
        raise MissingPackage(f"{purpose} needs the {package} package: pip install 'resnet-viz[{extra}]'") from None
