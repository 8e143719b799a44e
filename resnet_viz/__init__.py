"""resnet-viz: build, trace and see inside residual networks."""

from .config import PRESETS, ConfigError, ResNetConfig, preset
from .model import build_model
from .trace import Trace, trace

__all__ = ["PRESETS", "ConfigError", "ResNetConfig", "Trace", "build_model", "preset", "trace"]
