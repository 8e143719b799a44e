"""Shape rules: for each op a ResNet runs, its output's shape, receptive field and jump, its MACs and all ops,
by arithmetic on the probes. An op without a rule runs on the ``meta`` device instead (see ``tracer``), and its
FLOPs come from ``torch.utils.flop_counter``'s formulas (``FlopCount``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .probe import Allocator, Pair, Probe


@dataclass
class Result:
    out: Any
    macs: int = 0
    ops: int = 0
    geometry: tuple[Pair, Pair, Pair] | None = None  # kernel, stride, padding


def _pair(v) -> Pair:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1])) if v else None
    return (int(v), int(v))


def _bind(args, kwargs, names: Sequence[str], defaults: dict[str, Any]) -> list[Any]:
    values = dict(defaults)
    values.update(zip(names, args))
    values.update(kwargs)
    return [values.get(n) for n in names]


def _window(x: Probe, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)):
    """Output side, receptive field and jump after a sliding window over the last two dims."""
    size = tuple(
        (x.shape[-2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(2)
    )
    rf = tuple(x.rf[i] + (kernel[i] - 1) * dilation[i] * x.jump[i] for i in range(2))
    jump = tuple(x.jump[i] * stride[i] for i in range(2))
    return size, rf, jump


def _conv2d(t: Allocator, args, kwargs) -> Result | None:
    x, weight, bias, stride, padding, dilation, groups = _bind(
        args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
    )
    if isinstance(padding, str) or not isinstance(weight, torch.Tensor) or x.ndim != 4:
        return None
    kernel, stride, padding, dilation = (_pair(v) for v in (tuple(weight.shape[2:]), stride, padding, dilation))
    size, rf, jump = _window(x, kernel, stride, padding, dilation)
    out = t.new((x.shape[0], weight.shape[0], *size), x.dtype, rf, jump)
    macs = out.numel() * weight.shape[1] * kernel[0] * kernel[1]  # weight.shape[1] = in_channels / groups
    ops = 2 * macs + (out.numel() if bias is not None else 0)
    return Result(out, macs, ops, (kernel, stride, padding))


def _linear(t: Allocator, args, kwargs) -> Result | None:
    x, weight, bias = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    if not isinstance(weight, torch.Tensor):
        return None
    out = t.new((*x.shape[:-1], weight.shape[0]), x.dtype, x.rf, x.jump)
    macs = out.numel() * weight.shape[1]
    return Result(out, macs, 2 * macs + (out.numel() if bias is not None else 0))


def _same_shape(ops_per_element: int, inplace_arg: str | None = None, always_inplace: bool = False):
    def rule(t: Allocator, args, kwargs) -> Result:
        x = args[0]
        inplace = always_inplace or (inplace_arg is not None and bool(
            kwargs.get(inplace_arg, args[1] if len(args) > 1 else False)))
        out = t.alias(x) if inplace else t.new(x.shape, x.dtype, x.rf, x.jump)
        return Result(out, 0, ops_per_element * out.numel())

    return rule


def _max_pool2d(t: Allocator, args, kwargs) -> Result | None:
    x, kernel, stride, padding, dilation, ceil_mode, return_indices = _bind(
        args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
        {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False},
    )
    if ceil_mode or return_indices:
        return None
    return _pool(t, x, kernel, stride, padding, dilation)


def _avg_pool2d(t: Allocator, args, kwargs) -> Result | None:
    x, kernel, stride, padding, ceil_mode = _bind(
        args, kwargs, ("input", "kernel_size", "stride", "padding", "ceil_mode"),
        {"stride": None, "padding": 0, "ceil_mode": False},
    )
    if ceil_mode:
        return None
    return _pool(t, x, kernel, stride, padding, 1)


def _pool(t: Allocator, x: Probe, kernel, stride, padding, dilation) -> Result:
    kernel = _pair(kernel)
    stride = _pair(stride) or kernel  # stride=None (or []) means stride = kernel
    padding, dilation = _pair(padding), _pair(dilation)
    size, rf, jump = _window(x, kernel, stride, padding, dilation)
    out = t.new((*x.shape[:-2], *size), x.dtype, rf, jump)
    return Result(out, 0, out.numel() * kernel[0] * kernel[1], (kernel, stride, padding))


def _adaptive_avg_pool2d(t: Allocator, args, kwargs) -> Result:
    x, output_size = _bind(args, kwargs, ("input", "output_size"), {})
    if not isinstance(output_size, (list, tuple)):
        output_size = (output_size, output_size)
    size = tuple(x.shape[-2 + i] if s is None else int(s) for i, s in enumerate(output_size))
    # the widest window an output sees, and the step between windows
    kernel = tuple(-(-x.shape[-2 + i] // size[i]) for i in range(2))
    stride = tuple(max(1, x.shape[-2 + i] // size[i]) for i in range(2))
    rf = tuple(x.rf[i] + (kernel[i] - 1) * x.jump[i] for i in range(2))
    jump = tuple(x.jump[i] * stride[i] for i in range(2))
    out = t.new((*x.shape[:-2], *size), x.dtype, rf, jump)
    return Result(out, 0, x.numel(), (kernel, stride, (0, 0)))


def _elementwise(inplace: bool):
    def rule(t: Allocator, args, kwargs) -> Result:
        a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
        probes = [p for p in (a, b) if isinstance(p, Probe)]
        shapes = [p.shape for p in (a, b) if isinstance(p, (Probe, torch.Tensor))]
        shape = torch.broadcast_shapes(*shapes)
        rf = tuple(max(p.rf[i] for p in probes) for i in range(2))
        jump = tuple(max(p.jump[i] for p in probes) for i in range(2))
        if inplace and isinstance(a, Probe) and tuple(a.shape) == tuple(shape):
            out = t.alias(a, rf=rf, jump=jump)
        else:
            out = t.new(shape, probes[0].dtype, rf, jump)
        return Result(out, 0, out.numel())

    return rule


def _flatten(t: Allocator, args, kwargs) -> Result:
    x, start, end = _bind(args, kwargs, ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
    n = x.ndim
    start, end = start % n if n else 0, end % n if n else 0
    shape = (*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])
    rf, jump = x.rf, x.jump
    if n == 4 and start <= 2 and end == 3:  # folding a spatial map into features: it sees all of it
        rf = tuple(x.rf[i] + (x.shape[2 + i] - 1) * x.jump[i] for i in range(2))
        jump = tuple(x.jump[i] * x.shape[2 + i] for i in range(2))
    return Result(t.alias(x, shape=shape, rf=rf, jump=jump))


Rule = Callable[["Allocator", tuple, dict], "Result | None"]

RULES: dict[Any, Rule] = {
    torch.conv2d: _conv2d,
    F.linear: _linear,
    F.batch_norm: _same_shape(2),
    F.relu: _same_shape(1, inplace_arg="inplace"),
    torch.relu: _same_shape(1),
    torch.relu_: _same_shape(1, always_inplace=True),
    torch.Tensor.relu: _same_shape(1),
    torch.Tensor.relu_: _same_shape(1, always_inplace=True),
    F.max_pool2d: _max_pool2d,
    torch.max_pool2d: _max_pool2d,
    F.avg_pool2d: _avg_pool2d,
    F.adaptive_avg_pool2d: _adaptive_avg_pool2d,
    torch.add: _elementwise(inplace=False),
    torch.Tensor.add: _elementwise(inplace=False),
    torch.Tensor.__add__: _elementwise(inplace=False),
    torch.Tensor.__radd__: _elementwise(inplace=False),
    torch.Tensor.add_: _elementwise(inplace=True),
    torch.Tensor.__iadd__: _elementwise(inplace=True),
    torch.flatten: _flatten,
    torch.Tensor.flatten: _flatten,
}

_OP_NAMES = {"__add__": "add", "__radd__": "add", "__iadd__": "add", "add_": "add", "__getitem__": "getitem",
             "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul", "__sub__": "sub", "__rsub__": "sub",
             "__isub__": "sub", "__truediv__": "div", "__rtruediv__": "div", "__itruediv__": "div",
             "__matmul__": "matmul"}


def op_name(func) -> str:
    name = getattr(func, "__name__", type(func).__name__)
    return _OP_NAMES.get(name, name.strip("_"))


class FlopCount(TorchDispatchMode):
    """FLOPs of the aten ops one fallback runs, by torch.utils.flop_counter's formulas."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out
