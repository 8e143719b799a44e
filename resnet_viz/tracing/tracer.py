"""The tracer: one forward of a probe through the model, with hooks on every module, turned into a ``Trace``."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from ..caches import SizedLRU
from ..config import ResNetConfig
from ..errors import ConfigError
from ..model import build_model
from .fallback import MetaFallback, stay_on_meta
from .probe import Pair, Probe, Shape, probes
from .records import Layer, Totals, Trace
from .rules import RULES, FlopCount, Result, op_name

MAX_BATCH = 1_000_000


@dataclass
class _Frame:
    layer: Layer
    macs: int
    ops: int
    allocated: int


class _Tracer(MetaFallback):
    def __init__(self, model: nn.Module):
        super().__init__()
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
    def new(self, shape: Shape, dtype: torch.dtype, rf: Pair | None, jump: Pair | None) -> Probe:
        buf = len(self.buf_bytes)
        self.buf_bytes.append(math.prod(shape) * dtype.itemsize)
        self.allocated += self.buf_bytes[-1]
        self.buf_first.append(self.step)
        self.buf_last.append(self.step)
        return Probe(self, shape, dtype, rf, jump, buf)

    def alias(self, x: Probe, shape: Shape | None = None, rf: Pair | None = None, jump: Pair | None = None):
        return Probe(self, x.shape if shape is None else shape, x.dtype, rf or x.rf, jump or x.jump, x.buf)

    # ops
    def run(self, func, args=(), kwargs=None):
        kwargs = kwargs or {}
        allocated, macs, ops = self.allocated, self.macs, self.ops
        rule = RULES.get(func)
        result = rule(self, args, kwargs) if rule is not None else None
        if result is None:
            result = self._on_meta(func, args, kwargs)  # its FLOPs are counted as it runs (FlopCount)
        inputs = probes((args, kwargs))
        for p in inputs:
            self.buf_last[p.buf] = self.step
        self.step += 1
        self.macs += result.macs
        self.ops += result.ops
        frame = self.stack[-1] if self.stack else None
        if frame is not None and not frame.layer.leaf:
            outputs = probes(result.out)
            if outputs:  # an op that makes no tensor (x.is_contiguous()) is no row
                layer = self._op_layer(op_name(func), inputs, outputs, result.out, frame.layer,
                                       (self.macs - macs, self.ops - ops, self.allocated - allocated))
                if result.geometry:
                    layer.kernel, layer.stride, layer.padding = result.geometry
        elif frame is not None and result.geometry and frame.layer.kernel is None:
            frame.layer.kernel, frame.layer.stride, frame.layer.padding = result.geometry
        return result.out

    def _on_meta(self, func, args, kwargs) -> Result:
        """Run an op with no shape rule on meta tensors; read the shapes back (FlopCount counts its FLOPs)."""
        found = probes((args, kwargs))
        metas: dict[int, torch.Tensor] = {}

        def to_meta(v):
            if isinstance(v, Probe):
                return metas.setdefault(id(v), torch.empty(v.shape, dtype=v.dtype, device="meta"))
            if isinstance(v, torch.Tensor):
                return v.detach().to("meta")
            return v

        meta_args, meta_kwargs = tree_map(to_meta, args), tree_map(to_meta, kwargs)
        func, meta_args, meta_kwargs = stay_on_meta(func, meta_args, meta_kwargs)
        try:
            out = func(*meta_args, **meta_kwargs)
        except NotImplementedError as error:  # no meta kernel: it needs values (nonzero...)
            self.cannot_run(func, error)
        if func is torch.Tensor.__setitem__:  # written in place: the target is the result
            return Result(args[0])
        by_tensor = {id(metas[id(p)]): p for p in found}

        def from_meta(v):
            if not isinstance(v, torch.Tensor):
                return v
            # the same tensor (an in-place op) or a view of one shares its buffer
            source = by_tensor.get(id(v))
            if source is None and v._is_view():
                source = by_tensor.get(id(v._base))
            base = found[0] if source is None else source
            jump = base.jump
            if jump is not None and v.ndim == 4 and base.ndim == 4:  # a spatial subsample multiplies the step
                jump = tuple(base.jump[i] * max(1, round(base.shape[2 + i] / max(1, v.shape[2 + i])))
                             for i in range(2))
            if source is not None:
                return self.alias(source, shape=tuple(v.shape), jump=jump)
            return self.new(tuple(v.shape), v.dtype, base.rf, jump)

        return Result(tree_map(from_meta, out))

    def _op_layer(self, op: str, inputs: list, outputs: list, out, parent: Layer,
                  costs: tuple[int, int, int]) -> Layer:
        """The row of an op a container's forward runs itself; its outputs now come from it."""
        key = f"{parent.name}.{op}" if parent.name else op
        n = self.op_calls[key]
        self.op_calls[key] += 1
        layer = Layer(
            name=key if n == 0 else f"{key}_{n}", type=op, kind="op", depth=parent.depth + 1,
            parent=parent.name, leaf=True, input_shapes=[tuple(p.shape) for p in inputs],
            output_shape=tuple(out.shape) if out is outputs[0] else [tuple(p.shape) for p in outputs],
            sources=[self.src_of(p) for p in inputs], macs=costs[0], all_ops=costs[1],
            output_bytes=_bytes(outputs), alloc_bytes=costs[2], fallback=self.meta_depth > 0,
        )
        for p in outputs:
            self.set_src(p, layer.name)
        if isinstance(outputs[0], Probe):
            layer.receptive_field, layer.jump = outputs[0].rf, outputs[0].jump
        self.layers.append(layer)
        return layer

    # hooks
    def pre_hook(self, module: nn.Module, args, kwargs) -> None:
        name = self.names[id(module)]
        self.calls[id(module)] += 1
        n = self.calls[id(module)]
        parent = self.stack[-1].layer if self.stack else None
        own, trainable = self.params[id(module)]
        if self.meta_depth:
            found = self.activations((args, kwargs))
        else:
            found = probes(args) + probes(kwargs) if kwargs else probes(args)
        layer = Layer(
            name=name if n == 1 else f"{name}#{n}", type=type(module).__name__, kind="module",
            depth=0 if parent is None else parent.depth + 1, parent=None if parent is None else parent.name,
            leaf=next(module.children(), None) is None, input_shapes=[tuple(p.shape) for p in found],
            output_shape=None, sources=[self.src_of(p) for p in found], params=own, trainable_params=trainable,
            fallback=self.meta_depth > 0,
        )
        self.layers.append(layer)
        self.stack.append(_Frame(layer, self.macs, self.ops, self.allocated))

    def hook(self, module: nn.Module, inputs, output) -> None:
        frame = self.stack.pop()
        layer = frame.layer
        if isinstance(output, Probe):
            found = [output]
            layer.output_shape = tuple(output.shape)
        else:  # anything else a module returns: tensors of any kind, in any structure
            found = [v for v in tree_flatten(output)[0] if isinstance(v, (Probe, torch.Tensor))]
            single = isinstance(output, torch.Tensor) and found
            layer.output_shape = tuple(output.shape) if single else [tuple(v.shape) for v in found] or None
        layer.macs = self.macs - frame.macs
        layer.all_ops = self.ops - frame.ops
        layer.output_bytes = _bytes(found)
        layer.alloc_bytes = self.allocated - frame.allocated
        if found and isinstance(found[0], Probe):
            layer.receptive_field, layer.jump = found[0].rf, found[0].jump
        if layer.leaf:
            for p in found:
                self.set_src(p, layer.name)

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


def _bytes(found) -> int:
    return sum(math.prod(p.shape) * p.dtype.itemsize for p in found)


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
_NONE = object()


def _trace_hooked(model: nn.Module, input_shape: Shape, dtype: torch.dtype, guarded: bool) -> _Tracer:
    """One forward of a probe through ``model`` with hooks on every module, and, if ``guarded``, every module's
    forward ready to fall back to the meta device; the model is left as it was."""
    tracer = _Tracer(model)
    handles, forwards = [], []
    modes = {m: m.training for m in tracer.modules}
    try:
        for m in tracer.modules:
            if isinstance(m, torch.jit.ScriptModule):  # takes no hooks, and only real tensors
                continue
            handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.hook))
            if guarded:
                forwards.append((m, m.__dict__.get("forward", _NONE)))
                m.__dict__["forward"] = tracer.guard(m.forward)
        model.eval()  # BN in training mode would update its running statistics
        x = tracer.new(input_shape, dtype, (1, 1), (1, 1))
        with torch.no_grad(), FlopCount(tracer):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, forward in forwards:
            if forward is _NONE:
                del m.__dict__["forward"]
            else:
                m.__dict__["forward"] = forward
        for m, mode in modes.items():
            m.training = mode
    for p in probes(out):
        tracer.buf_last[p.buf] = tracer.step  # the output lives to the end
    return tracer


MODULE_BYTES = 2560  # memory of one module of a meta-device model (tracemalloc: about 2.4 KiB)
_META_MODELS = SizedLRU(256 << 20, size=lambda model: MODULE_BYTES * sum(1 for _ in model.modules()))


def _meta_model(config: ResNetConfig) -> nn.Module:
    """The config's weightless model, kept for the next trace of it (at most 256 MiB of them)."""
    return _META_MODELS.get_or_make(config, lambda: build_model(config, device="meta"))


def trace(
    config_or_model: ResNetConfig | nn.Module,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
) -> Trace:
    """Trace every module of a network for one input of ``batch_size`` images.

    ``config_or_model`` is a ResNetConfig (traced on a weightless meta-device model) or any
    ``nn.Module``; ``input_size`` is (C, H, W), by default the config's. The model is
    never moved or changed: its hooks are removed and its train/eval modes restored.
    Raises ``TraceError`` where the model needs the values of a tensor (``.item()``, an ``if`` on one,
    ``nonzero``), which a trace does not have.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch size {batch_size!r} — it must be a whole number from 1 to {MAX_BATCH:,}")
    config, model, input_size = _subject(config_or_model, input_size)
    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    with _HOOK_LOCK:  # hooks on a shared model must not see another thread's trace
        try:
            tracer = _trace_hooked(model, (batch_size, *input_size), dtype, guarded=False)
        except Exception:  # somewhere the probe cannot follow: again, with every module able to fall back
            tracer = _trace_hooked(model, (batch_size, *input_size), dtype, guarded=True)
    return Trace(
        model_name=config.name if config else type(model).__name__, config=config, batch_size=batch_size,
        input_shape=input_size, layers=tuple(tracer.layers), totals=_totals(model, tracer, batch_size),
    )


def _subject(config_or_model: ResNetConfig | nn.Module,
             input_size: Sequence[int] | None) -> tuple[ResNetConfig | None, nn.Module, Shape]:
    """The config (if any), the model to trace and the input size (C, H, W)."""
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
    return config, model, input_size


def _totals(model: nn.Module, tracer: _Tracer, batch_size: int) -> Totals:
    params = list(model.parameters())
    return Totals(
        params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        macs=tracer.macs,
        macs_per_image=tracer.macs // batch_size,
        flops=2 * tracer.macs,
        all_ops=tracer.ops,
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        input_bytes=tracer.buf_bytes[0],
        activation_bytes=sum(tracer.buf_bytes[1:]),
        peak_activation_bytes=tracer.peak_bytes(),
    )
