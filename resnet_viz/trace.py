"""Trace every layer of a network with forward hooks, without computing anything.

A *probe* stands in for the input tensor: an object that carries a shape, a
dtype and a receptive field, and that speaks PyTorch's ``__torch_function__``
protocol. Every op the model's forward runs on it (``conv2d``, ``batch_norm``,
``relu``, the residual ``+=``...) arrives at the probe, which works out the
output shape and the op's MACs by arithmetic. Forward hooks on every module
record what goes in and what comes out. No weight is read, no activation is
allocated, and the cost does not depend on batch size or resolution. An op
without a shape rule here runs once on the ``meta`` device instead, and its
FLOPs are counted with the formulas of ``torch.utils.flop_counter``.

Counting conventions (see the README): MACs are the multiply-accumulates of
convolutions and matrix products (the ResNet paper's "FLOPs" column); FLOPs are
2 × MACs (what ``FlopCounterMode`` reports); "all ops" adds bias adds, BN
(2 per element), ReLU (1), additions (1) and pooling (1 per input element read).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

from .config import ConfigError, ResNetConfig
from .model import build_model

Shape = tuple[int, ...]
Pair = tuple[int, int]

MAX_BATCH = 1_000_000
_STAGE = re.compile(r"layer\d+")


@dataclass
class Layer:
    """One row of a trace: one call of a module, or one op a container's forward runs itself."""

    name: str  # module path ("" is the whole model); "#2" marks a module's second call
    type: str  # class name ("Conv2d") or op name ("add")
    kind: str  # "module" or "op"
    depth: int  # 0 for the model, 1 for its children, ...
    parent: str | None  # name of the enclosing module's row
    leaf: bool  # no layer below it
    input_shapes: list[Shape]
    output_shape: Shape | list[Shape] | None
    sources: list[str] = field(default_factory=list)  # the leaf layer that produced each input ("input": the model's)
    params: int = 0  # parameters of this module and everything inside it
    trainable_params: int = 0
    macs: int = 0  # multiply-accumulates of everything inside, for the whole batch
    all_ops: int = 0
    output_bytes: int = 0  # size of the output tensor(s)
    alloc_bytes: int = 0  # activation memory written inside (in-place ops and views write none)
    kernel: Pair | None = None
    stride: Pair | None = None
    padding: Pair | None = None
    receptive_field: Pair | None = None  # input pixels that one output position sees
    jump: Pair | None = None  # cumulative stride: input pixels between neighbouring outputs

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class Trace:
    """Every layer of one network for one input size and batch, with totals."""

    model_name: str
    config: ResNetConfig | None
    batch_size: int
    input_shape: Shape  # without the batch dimension
    layers: tuple[Layer, ...]
    totals: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Layer:
        return self._by_name[name]

    @functools.cached_property
    def _by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def training_bytes(self, optimizer: str = "sgd") -> int:
        """Estimated memory of a training step: saved activations + weights + gradients + optimizer state."""
        states = {"sgd": 0, "momentum": 1, "adam": 2}
        if optimizer not in states:
            raise ValueError(f"optimizer {optimizer!r} is not one of {', '.join(states)}")
        t = self.totals
        return t["activation_bytes"] + t["param_bytes"] * (2 + states[optimizer]) + t["buffer_bytes"]

    def stage_of(self, layer: Layer) -> str:
        """'stem', a stage's module name ('layer1'...), 'head', or 'model' for the root row."""
        return self._stage_by_name[layer.name]

    @functools.cached_property
    def _stage_by_name(self) -> dict[str, str]:
        stages, current, seen_stage = {}, "stem", False
        for layer in self.layers:  # pre-order: a row's children follow it
            top = layer.name.split(".")[0].split("#")[0]
            if layer.depth == 0:
                stages[layer.name] = "model"
                continue
            if layer.depth == 1:
                if _STAGE.fullmatch(top):
                    current, seen_stage = top, True
                else:
                    current = "head" if seen_stage else "stem"
            stages[layer.name] = current
        return stages

    def stage_table(self):
        """One row per part (stem, layer1..., head): parameters, MACs, all ops, activation bytes, output shape."""
        import pandas as pd

        rows: dict[str, dict[str, Any]] = {}
        for layer in self.layers:
            if layer.depth == 0:
                continue
            row = rows.setdefault(self.stage_of(layer), {"params": 0, "macs": 0, "all_ops": 0,
                                                         "activation_bytes": 0, "output_shape": None})
            if layer.depth == 1:
                row["params"] += layer.params if "#" not in layer.name else 0
                row["macs"] += layer.macs
                row["all_ops"] += layer.all_ops
                row["output_shape"] = layer.output_shape
            if layer.leaf:
                row["activation_bytes"] += layer.output_bytes
        return pd.DataFrame([{"stage": k, **v} for k, v in rows.items()])

    def to_dataframe(self, layers: Sequence[Layer] | None = None):
        """The layers (all, or those given) as a pandas DataFrame, shapes written like 1×16×32×32."""
        import pandas as pd

        return pd.DataFrame([layer_record(layer, text=True) for layer in (self.layers if layers is None else layers)])

    def to_dict(self, depth: int | None = None, layers: Sequence[Layer] | None = None) -> dict[str, Any]:
        """JSON-ready, with all layers, those down to ``depth``, or those given; the config reloads with
        ``ResNetConfig.from_dict``."""
        if layers is None:
            layers = [layer for layer in self.layers if depth is None or layer.depth <= depth]
        return {
            "config": self.config.to_dict() if self.config else None,
            "model": self.model_name,
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "totals": dict(self.totals),
            "layers": [layer_record(layer) for layer in layers],
        }


def layer_record(layer: Layer, text: bool = False) -> dict[str, Any]:
    """A layer as a flat dict (JSON-ready lists, or ``text=True`` for a table)."""
    d = dataclasses.asdict(layer)
    d["flops"] = layer.flops
    shape_fmt = format_shape if text else list
    d["input_shapes"] = [shape_fmt(s) for s in layer.input_shapes]
    out = layer.output_shape
    d["output_shape"] = (
        None if out is None else shape_fmt(out) if isinstance(out, tuple) else [shape_fmt(s) for s in out]
    )
    for key in ("kernel", "stride", "padding", "receptive_field", "jump"):
        pair = d[key]
        d[key] = None if pair is None else (format_pair(pair) if text else list(pair))
    if text:
        d["input_shapes"] = ", ".join(d["input_shapes"])
        if isinstance(d["output_shape"], list):
            d["output_shape"] = ", ".join(d["output_shape"])
    return d


def format_shape(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape)


def format_pair(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


# -- the probe --------------------------------------------------------------------


class _Probe:
    """A tensor that is only a shape. Every op on it goes to its tracer."""

    __slots__ = ("shape", "dtype", "rf", "jump", "buf", "src", "tracer")

    def __init__(self, tracer: _Tracer, shape: Shape, dtype: torch.dtype, rf: Pair, jump: Pair, buf: int):
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.rf = rf
        self.jump = jump
        self.buf = buf  # which activation buffer holds it (views and in-place ops share one)
        self.src = "input"  # name of the leaf layer that produced it
        self.tracer = tracer

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return _probes((args, kwargs))[0].tracer.run(func, args, kwargs or {})

    # the small tensor surface that forward code reads directly
    device = torch.device("meta")
    is_cuda = False

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    def __getattr__(self, name: str):
        # any other Tensor method (x.flatten(1), x.mean(...)) becomes a traced op
        method = getattr(torch.Tensor, name)
        return lambda *args, **kwargs: self.tracer.run(method, (self, *args), kwargs)

    def __repr__(self) -> str:
        return f"Probe({format_shape(self.shape)})"


def _probes(obj: Any) -> list[_Probe]:
    """The probes inside nested tuples, lists and dicts (a lean tree_flatten: this is the hot path)."""
    if isinstance(obj, _Probe):
        return [obj]
    found: list[_Probe] = []
    if isinstance(obj, (tuple, list)):
        for item in obj:
            found += _probes(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            found += _probes(item)
    return found


def _binary(name: str):
    method = getattr(torch.Tensor, name)

    def op(self, other):
        return self.tracer.run(method, (self, other), {})

    return op


for _name in ("__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__",
              "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__matmul__",
              "__getitem__"):
    setattr(_Probe, _name, _binary(_name))


# -- shape rules ------------------------------------------------------------------------------


@dataclass
class _Result:
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


def _window(x: _Probe, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)):
    """Output side, receptive field and jump after a sliding window over the last two dims."""
    size = tuple(
        (x.shape[-2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(2)
    )
    rf = tuple(x.rf[i] + (kernel[i] - 1) * dilation[i] * x.jump[i] for i in range(2))
    jump = tuple(x.jump[i] * stride[i] for i in range(2))
    return size, rf, jump


def _conv2d(t: _Tracer, args, kwargs) -> _Result | None:
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
    return _Result(out, macs, ops, (kernel, stride, padding))


def _linear(t: _Tracer, args, kwargs) -> _Result | None:
    x, weight, bias = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    if not isinstance(weight, torch.Tensor):
        return None
    out = t.new((*x.shape[:-1], weight.shape[0]), x.dtype, x.rf, x.jump)
    macs = out.numel() * weight.shape[1]
    return _Result(out, macs, 2 * macs + (out.numel() if bias is not None else 0))


def _same_shape(ops_per_element: int, inplace_arg: str | None = None, always_inplace: bool = False):
    def rule(t: _Tracer, args, kwargs) -> _Result:
        x = args[0]
        inplace = always_inplace or (inplace_arg is not None and bool(
            kwargs.get(inplace_arg, args[1] if len(args) > 1 else False)))
        out = t.alias(x) if inplace else t.new(x.shape, x.dtype, x.rf, x.jump)
        return _Result(out, 0, ops_per_element * out.numel())

    return rule


def _max_pool2d(t: _Tracer, args, kwargs) -> _Result | None:
    x, kernel, stride, padding, dilation, ceil_mode, return_indices = _bind(
        args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
        {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False},
    )
    if ceil_mode or return_indices:
        return None
    return _pool(t, x, kernel, stride, padding, dilation)


def _avg_pool2d(t: _Tracer, args, kwargs) -> _Result | None:
    x, kernel, stride, padding, ceil_mode = _bind(
        args, kwargs, ("input", "kernel_size", "stride", "padding", "ceil_mode"),
        {"stride": None, "padding": 0, "ceil_mode": False},
    )
    if ceil_mode:
        return None
    return _pool(t, x, kernel, stride, padding, 1)


def _pool(t: _Tracer, x: _Probe, kernel, stride, padding, dilation) -> _Result:
    kernel = _pair(kernel)
    stride = _pair(stride) or kernel  # stride=None (or []) means stride = kernel
    padding, dilation = _pair(padding), _pair(dilation)
    size, rf, jump = _window(x, kernel, stride, padding, dilation)
    out = t.new((*x.shape[:-2], *size), x.dtype, rf, jump)
    return _Result(out, 0, out.numel() * kernel[0] * kernel[1], (kernel, stride, padding))


def _adaptive_avg_pool2d(t: _Tracer, args, kwargs) -> _Result:
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
    return _Result(out, 0, x.numel(), (kernel, stride, (0, 0)))


def _elementwise(inplace: bool):
    def rule(t: _Tracer, args, kwargs) -> _Result:
        a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
        probes = [p for p in (a, b) if isinstance(p, _Probe)]
        shapes = [p.shape for p in (a, b) if isinstance(p, (_Probe, torch.Tensor))]
        shape = torch.broadcast_shapes(*shapes)
        rf = tuple(max(p.rf[i] for p in probes) for i in range(2))
        jump = tuple(max(p.jump[i] for p in probes) for i in range(2))
        if inplace and isinstance(a, _Probe) and tuple(a.shape) == tuple(shape):
            out = t.alias(a, rf=rf, jump=jump)
        else:
            out = t.new(shape, probes[0].dtype, rf, jump)
        return _Result(out, 0, out.numel())

    return rule


def _flatten(t: _Tracer, args, kwargs) -> _Result:
    x, start, end = _bind(args, kwargs, ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
    n = x.ndim
    start, end = start % n if n else 0, end % n if n else 0
    shape = (*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])
    rf, jump = x.rf, x.jump
    if n == 4 and start <= 2 and end == 3:  # folding a spatial map into features: it sees all of it
        rf = tuple(x.rf[i] + (x.shape[2 + i] - 1) * x.jump[i] for i in range(2))
        jump = tuple(x.jump[i] * x.shape[2 + i] for i in range(2))
    return _Result(t.alias(x, shape=shape, rf=rf, jump=jump))


_Rule = Callable[["_Tracer", tuple, dict], "_Result | None"]

RULES: dict[Any, _Rule] = {
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


def _op_name(func) -> str:
    name = getattr(func, "__name__", type(func).__name__)
    return _OP_NAMES.get(name, name.strip("_"))


class _FlopCount(TorchDispatchMode):
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


# -- the tracer ---------------------------------------------------------------------------------


@dataclass
class _Frame:
    layer: Layer
    macs: int
    ops: int
    allocated: int


class _Tracer:
    def __init__(self, model: nn.Module):
        self.layers: list[Layer] = []
        self.stack: list[_Frame] = []
        self.macs = 0
        self.ops = 0
        self.allocated = 0
        self.step = 0
        self.buf_bytes: list[int] = []  # per activation buffer: its size, first and last step alive
        self.buf_first: list[int] = []
        self.buf_last: list[int] = []
        named = list(model.named_modules())
        self.modules = [m for _, m in named]
        self.names = {id(m): name for name, m in named}
        self.calls: Counter[int] = Counter()
        self.op_calls: Counter[str] = Counter()
        self.params = _params_per_module(model)

    # probes
    def new(self, shape: Shape, dtype: torch.dtype, rf: Pair, jump: Pair) -> _Probe:
        buf = len(self.buf_bytes)
        self.buf_bytes.append(math.prod(shape) * dtype.itemsize)
        self.allocated += self.buf_bytes[-1]
        self.buf_first.append(self.step)
        self.buf_last.append(self.step)
        return _Probe(self, shape, dtype, rf, jump, buf)

    def alias(self, x: _Probe, shape: Shape | None = None, rf: Pair | None = None, jump: Pair | None = None):
        return _Probe(self, x.shape if shape is None else shape, x.dtype, rf or x.rf, jump or x.jump, x.buf)

    # ops
    def run(self, func, args=(), kwargs=None):
        kwargs = kwargs or {}
        allocated = self.allocated
        rule = RULES.get(func)
        result = rule(self, args, kwargs) if rule is not None else None
        if result is None:
            result = self._on_meta(func, args, kwargs)
        for p in _probes((args, kwargs)):
            self.buf_last[p.buf] = self.step
        self.step += 1
        self.macs += result.macs
        self.ops += result.ops
        frame = self.stack[-1] if self.stack else None
        if frame is not None and not frame.layer.leaf:
            self._op_layer(func, args, kwargs, result, frame.layer, self.allocated - allocated)
        elif frame is not None and result.geometry and frame.layer.kernel is None:
            frame.layer.kernel, frame.layer.stride, frame.layer.padding = result.geometry
        return result.out

    def _on_meta(self, func, args, kwargs) -> _Result:
        """Run an op with no shape rule on meta tensors; read the shapes and FLOPs back."""
        probes = _probes((args, kwargs))
        metas: dict[int, torch.Tensor] = {}

        def to_meta(v):
            if isinstance(v, _Probe):
                return metas.setdefault(id(v), torch.empty(v.shape, dtype=v.dtype, device="meta"))
            if isinstance(v, torch.Tensor):
                return v.detach().to("meta")
            return v

        meta_args, meta_kwargs = tree_map(to_meta, args), tree_map(to_meta, kwargs)
        counter = _FlopCount()
        with counter:
            out = func(*meta_args, **meta_kwargs)
        by_tensor = {id(metas[id(p)]): p for p in probes}

        def from_meta(v):
            if not isinstance(v, torch.Tensor):
                return v
            # the same tensor (an in-place op) or a view of one shares its buffer
            source = by_tensor.get(id(v)) or (by_tensor.get(id(v._base)) if v._is_view() else None)
            base = source or probes[0]
            jump = base.jump
            if v.ndim == 4 and base.ndim == 4:  # a spatial subsample multiplies the step between outputs
                jump = tuple(base.jump[i] * max(1, round(base.shape[2 + i] / max(1, v.shape[2 + i])))
                             for i in range(2))
            if source is not None:
                return self.alias(source, shape=tuple(v.shape), jump=jump)
            return self.new(tuple(v.shape), v.dtype, base.rf, jump)

        flops = counter.flops
        return _Result(tree_map(from_meta, out), flops // 2, flops)

    def _op_layer(self, func, args, kwargs, result: _Result, parent: Layer, alloc_bytes: int) -> None:
        op = _op_name(func)
        key = f"{parent.name}.{op}" if parent.name else op
        n = self.op_calls[key]
        self.op_calls[key] += 1
        inputs = _probes((args, kwargs))
        layer = Layer(
            name=key if n == 0 else f"{key}_{n}", type=op, kind="op", depth=parent.depth + 1,
            parent=parent.name, leaf=True, input_shapes=[tuple(p.shape) for p in inputs],
            output_shape=_shapes(result.out), sources=[p.src for p in inputs], macs=result.macs,
            all_ops=result.ops, output_bytes=_bytes(result.out), alloc_bytes=alloc_bytes,
        )
        for p in _probes(result.out):
            p.src = layer.name
        if result.geometry:
            layer.kernel, layer.stride, layer.padding = result.geometry
        _set_field(layer, result.out)
        self.layers.append(layer)

    # hooks
    def pre_hook(self, module: nn.Module, inputs) -> None:
        name = self.names[id(module)]
        self.calls[id(module)] += 1
        n = self.calls[id(module)]
        parent = self.stack[-1].layer if self.stack else None
        own, trainable = self.params[id(module)]
        probes = _probes(inputs)
        layer = Layer(
            name=name if n == 1 else f"{name}#{n}", type=type(module).__name__, kind="module",
            depth=0 if parent is None else parent.depth + 1, parent=None if parent is None else parent.name,
            leaf=next(module.children(), None) is None, input_shapes=[tuple(p.shape) for p in probes],
            output_shape=None, sources=[p.src for p in probes], params=own, trainable_params=trainable,
        )
        self.layers.append(layer)
        self.stack.append(_Frame(layer, self.macs, self.ops, self.allocated))

    def hook(self, module: nn.Module, inputs, output) -> None:
        frame = self.stack.pop()
        layer = frame.layer
        layer.output_shape = _shapes(output)
        layer.macs = self.macs - frame.macs
        layer.all_ops = self.ops - frame.ops
        layer.output_bytes = _bytes(output)
        layer.alloc_bytes = self.allocated - frame.allocated
        _set_field(layer, output)
        if layer.leaf:
            for p in _probes(output):
                p.src = layer.name

    def peak_bytes(self) -> int:
        """Largest sum of live activations at any step (no allocator slack, in-place ops reuse their input)."""
        delta = [0] * (self.step + 2)
        for size, first, last in zip(self.buf_bytes, self.buf_first, self.buf_last):
            delta[first] += size
            delta[last + 1] -= size
        peak = live = 0
        for d in delta:
            live += d
            peak = max(peak, live)
        return peak


def _shapes(out) -> Shape | list[Shape] | None:
    if isinstance(out, _Probe):
        return tuple(out.shape)
    return [tuple(p.shape) for p in _probes(out)] or None


def _bytes(out) -> int:
    return sum(math.prod(p.shape) * p.dtype.itemsize for p in _probes(out))


def _set_field(layer: Layer, out) -> None:
    probes = _probes(out)
    if probes:
        layer.receptive_field, layer.jump = probes[0].rf, probes[0].jump


def _params_per_module(model: nn.Module) -> dict[int, tuple[int, int]]:
    """Parameters of each module's subtree: (all, trainable)."""
    counts: dict[int, tuple[int, int]] = {}

    def visit(m: nn.Module) -> tuple[int, int]:
        if id(m) in counts:
            return counts[id(m)]
        total = trainable = 0
        for p in m.parameters(recurse=False):
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        for child in m.children():
            t, tr = visit(child)
            total, trainable = total + t, trainable + tr
        counts[id(m)] = (total, trainable)
        return counts[id(m)]

    visit(model)
    return counts


# -- entry point ----------------------------------------------------------------------------------


_HOOK_LOCK = threading.Lock()


def _trace_hooked(model: nn.Module, input_shape: Shape, dtype: torch.dtype) -> _Tracer:
    """One forward of a probe through ``model`` with hooks on every module; the model is left as it was."""
    tracer = _Tracer(model)
    handles = []
    modes = {m: m.training for m in tracer.modules}
    try:
        for m in tracer.modules:
            handles.append(m.register_forward_pre_hook(tracer.pre_hook))
            handles.append(m.register_forward_hook(tracer.hook))
        model.eval()  # BN in training mode would update its running statistics
        x = tracer.new(input_shape, dtype, (1, 1), (1, 1))
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    for p in _probes(out):
        tracer.buf_last[p.buf] = tracer.step  # the output lives to the end
    return tracer


@functools.lru_cache(maxsize=32)
def _meta_model(config: ResNetConfig) -> nn.Module:
    return build_model(config, device="meta")


def trace(
    config_or_model: ResNetConfig | nn.Module,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
) -> Trace:
    """Trace every module of a network for one input of ``batch_size`` images.

    ``config_or_model`` is a ResNetConfig (traced on a weightless meta-device model) or any
    ``nn.Module``; ``input_size`` is (C, H, W), by default the config's. The model is
    never moved or changed: its hooks are removed and its train/eval modes restored.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch size {batch_size!r} — it must be a whole number from 1 to {MAX_BATCH:,}")
    if isinstance(config_or_model, ResNetConfig):
        config, model = config_or_model, _meta_model(config_or_model)
    elif isinstance(config_or_model, nn.Module):
        model = config_or_model
        config = getattr(model, "config", None)
        config = config if isinstance(config, ResNetConfig) else None
    else:
        raise TypeError("trace() takes a ResNetConfig or an nn.Module")
    if input_size is None:
        if config is None:
            raise ConfigError("input_size (C, H, W) is needed to trace a model that was not built from a config")
        input_size = config.input_shape
    input_size = tuple(input_size)
    if len(input_size) != 3 or any(not isinstance(s, int) or s < 1 for s in input_size):
        raise ConfigError(f"input size {input_size!r} — give channels, height and width, each 1 or more")

    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    with _HOOK_LOCK:  # hooks on a shared model must not see another thread's trace
        tracer = _trace_hooked(model, (batch_size, *input_size), dtype)

    params = list(model.parameters())
    totals = {
        "params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "macs": tracer.macs,
        "macs_per_image": tracer.macs // batch_size,
        "flops": 2 * tracer.macs,
        "all_ops": tracer.ops,
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
        "input_bytes": tracer.buf_bytes[0],
        "activation_bytes": sum(tracer.buf_bytes[1:]),
        "peak_activation_bytes": tracer.peak_bytes(),
    }
    result = Trace(
        model_name=config.name if config else type(model).__name__, config=config,
        batch_size=batch_size, input_shape=input_size, layers=tuple(tracer.layers), totals=totals,
    )
    totals["training_bytes"] = result.training_bytes("momentum")
    return result
