"""Shape rules: for each op a ResNet runs, its output's shape, receptive field and jump, its MACs and all ops,
by arithmetic on the probes. An op without a rule, or one a rule does not take (arguments that do not fit, which
the meta device then reports as PyTorch would), runs on the ``meta`` device instead (see ``tracer``), and its
FLOPs come from ``torch.utils.flop_counter``'s formulas (``FlopCount``). A receptive field or jump of None is
unknown, and stays unknown downstream."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    if x.rf is None or x.jump is None:
        return size, None, None
    rf = tuple(x.rf[i] + (kernel[i] - 1) * dilation[i] * x.jump[i] for i in range(2))
    jump = tuple(x.jump[i] * stride[i] for i in range(2))
    return size, rf, jump


def _conv2d(t: Allocator, args, kwargs) -> Result | None:
    x, weight, bias, stride, padding, dilation, groups = _bind(
        args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
    )
    if (isinstance(padding, str) or not isinstance(weight, torch.Tensor) or x.ndim != 4 or weight.ndim != 4
            or x.shape[1] != weight.shape[1] * groups):
        return None
    kernel, stride, padding, dilation = (_pair(v) for v in (tuple(weight.shape[2:]), stride, padding, dilation))
    size, rf, jump = _window(x, kernel, stride, padding, dilation)
    out = t.new((x.shape[0], weight.shape[0], *size), x.dtype, rf, jump)
    macs = out.numel() * weight.shape[1] * kernel[0] * kernel[1]  # weight.shape[1] = in_channels / groups
    ops = 2 * macs + (out.numel() if bias is not None else 0)
    return Result(out, macs, ops, (kernel, stride, padding))


def _linear(t: Allocator, args, kwargs) -> Result | None:
    x, weight, bias = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
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


def _float_same_shape(inplace_arg: str | None = None):
    """An elementwise function of a float tensor that FlopCounterMode counts as no FLOPs (GELU, SiLU...)."""
    same = _same_shape(0, inplace_arg)

    def rule(t: Allocator, args, kwargs) -> Result | None:
        if not args or not isinstance(args[0], Probe) or not args[0].dtype.is_floating_point:
            return None
        return same(t, args, kwargs)

    return rule


def _layer_norm(t: Allocator, args, kwargs) -> Result | None:
    x, shape, weight = _bind(args, kwargs, ("input", "normalized_shape", "weight"), {"weight": None})
    shape = tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
    if (not isinstance(x, Probe) or not x.dtype.is_floating_point or len(shape) > x.ndim
            or tuple(x.shape[x.ndim - len(shape):]) != shape
            or (isinstance(weight, torch.Tensor) and tuple(weight.shape) != shape)):
        return None
    return Result(t.new(x.shape, x.dtype, x.rf, x.jump))


def _dropout(t: Allocator, args, kwargs) -> Result | None:
    x, p, training = _bind(args, kwargs, ("input", "p", "training"), {"p": 0.5, "training": True})
    if not isinstance(x, Probe) or (training and p != 0):
        return None
    return Result(t.alias(x))  # in eval mode dropout gives back its input


def _batch_norm(t: Allocator, args, kwargs) -> Result | None:
    x = args[0] if args else kwargs.get("input")
    mean = args[1] if len(args) > 1 else kwargs.get("running_mean")
    if not isinstance(x, Probe) or x.ndim < 2 or (
            isinstance(mean, torch.Tensor) and tuple(mean.shape) != (x.shape[1],)):
        return None
    out = t.new(x.shape, x.dtype, x.rf, x.jump)
    return Result(out, 0, 2 * out.numel())


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
    rf = jump = None
    if x.rf is not None and x.jump is not None:
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
        rf, jump = _widest(probes)
        if inplace and isinstance(a, Probe) and tuple(a.shape) == tuple(shape):
            out = t.alias(a, rf=rf, jump=jump)
        else:
            out = t.new(shape, probes[0].dtype, rf, jump)
        return Result(out, 0, out.numel())

    return rule


def _widest(probes: Sequence[Probe]) -> tuple[Pair | None, Pair | None]:
    """The widest receptive field and jump among the probes (unknown if one is unknown)."""
    if any(p.rf is None or p.jump is None for p in probes):
        return None, None
    return (tuple(max(p.rf[i] for p in probes) for i in range(2)),
            tuple(max(p.jump[i] for p in probes) for i in range(2)))


def _flatten(t: Allocator, args, kwargs) -> Result:
    x, start, end = _bind(args, kwargs, ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
    n = x.ndim
    start, end = start % n if n else 0, end % n if n else 0
    shape = (*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])
    rf, jump = x.rf, x.jump
    # folding a spatial map into features: it sees all of it
    if n == 4 and start <= 2 and end == 3 and rf is not None and jump is not None:
        rf = tuple(x.rf[i] + (x.shape[2 + i] - 1) * x.jump[i] for i in range(2))
        jump = tuple(x.jump[i] * x.shape[2 + i] for i in range(2))
    return Result(t.alias(x, shape=shape, rf=rf, jump=jump))


Rule = Callable[["Allocator", tuple, dict], "Result | None"]

RULES: dict[Any, Rule] = {
    torch.conv2d: _conv2d,
    F.linear: _linear,
    F.batch_norm: _batch_norm,
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
    F.layer_norm: _layer_norm,
    F.dropout: _dropout,
    F.gelu: _float_same_shape(),
    F.silu: _float_same_shape("inplace"),
    F.hardswish: _float_same_shape("inplace"),
    F.hardsigmoid: _float_same_shape("inplace"),
    torch.sigmoid: _float_same_shape(),
    torch.Tensor.sigmoid: _float_same_shape(),
    torch._assert: lambda t, args, kwargs: Result(None),  # a check on values: the real forward passes it
}

_OP_NAMES = {"add_": "add", **{f"__{p}{n}__": "div" if n == "truediv" else n for p in ("", "r", "i")
                                for n in ("add", "sub", "mul", "truediv", "div", "floordiv", "mod", "pow", "matmul",
                                          "and", "or", "xor", "lshift", "rshift")}}


def op_name(func) -> str:
    if isinstance(func, torch._ops.OpOverload):  # an aten op ("addmm.default"): its name without the overload
        return func.overloadpacket.__name__
    name = getattr(func, "__name__", type(func).__name__)
    if name == "__get__":  # a property read as a function (x.T): its name
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return _OP_NAMES.get(name, name.strip("_"))


class Sink(Protocol):
    macs: int
    ops: int


# the formulas, and the CPU kernel of scaled_dot_product_attention counted as its CUDA kernels are
_FORMULAS = {**flop_registry, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
             flop_registry[torch.ops.aten._scaled_dot_product_flash_attention]}


class FlopCount(TorchDispatchMode):
    """While on, every aten op that runs (on the meta device or on the model's own tensors) adds its FLOPs, by
    torch.utils.flop_counter's formulas, to ``sink.ops``, and half of them to ``sink.macs``."""

    def __init__(self, sink: Sink):
        super().__init__()
        self.sink = sink

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = _FORMULAS.get(getattr(func, "_overloadpacket", None))
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)  # every formula is 2 × multiply-accumulates
            self.sink.macs += flops // 2
            self.sink.ops += flops
        return out
