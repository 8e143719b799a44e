"""resnet-viz: build, trace and see inside residual networks."""

from .config import PRESETS, ResNetConfig, preset
from .errors import ConfigError, ResNetVizError
from .model import build_model
from .tracing import Trace, trace

__all__ = ["PRESETS", "ConfigError", "ResNetConfig", "ResNetVizError", "Trace", "build_model", "preset", "trace"]
