"""Where the probe cannot follow a module's forward (an ``isinstance(x, torch.Tensor)`` check, a library that
needs a real tensor), that module runs again on meta tensors: its FLOPs are counted by ``FlopCount`` as any
meta-device op's, the modules it calls get their rows from the same hooks, and its outputs become probes again,
with an unknown receptive field. Where even the meta device cannot go on (``.item()``, ``nonzero``, an ``if``
on a tensor's values), the trace stops with a ``TraceError`` that names the module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from ..errors import ResNetVizError
from ..formatting import format_shape
from .probe import VALUE_OPS, Probe, probes
from .rules import op_name


class TraceError(ResNetVizError):
    """A model the tracer cannot follow: it needs the values of a tensor, which a trace does not have, or a
    module fails even on the meta device; the message names the module."""

    final = False  # raised where a module ran on the meta device: no other way is left


@dataclass
class _Meta:
    """What a meta tensor that holds an activation inside a fallback carries in place of a probe's fields."""

    tensor: torch.Tensor  # kept, so that its id stays its own while the fallback runs
    src: str
    buf: int
    probe: Probe | None = None  # the probe it stands for, if it was one


_MOVES = (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda)
_VALUES = {getattr(torch.Tensor, name): what for name, what in VALUE_OPS.items()}


def stay_on_meta(func, args, kwargs):
    """``.to(device)``, ``.cpu()`` and ``.cuda()`` of a meta tensor keep it there (only a dtype may change)."""
    if func not in _MOVES or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta:
        return func, args, kwargs
    to_kwargs = {k: v for k, v in kwargs.items() if k != "copy"}
    dtype = torch._C._nn._parse_to(*args[1:], **to_kwargs)[1] if func is torch.Tensor.to else None
    return torch.Tensor.to, (args[0],), {} if dtype is None else {"dtype": dtype}


def _where(layer) -> str:
    return f"module '{layer.name}' ({layer.type})" if layer.name else f"the model ({layer.type})"


class _MetaFunctions(TorchFunctionMode):
    """Inside a fallback: every torch function goes to the tracer, which runs it on the meta device."""

    def __init__(self, tracer: MetaFallback):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.tracer.meta_op(func, args, kwargs or {})


class MetaFallback:
    """The tracer's side of fallbacks (a mixin of ``_Tracer``: it uses its layers, stack, counts and buffers)."""

    def __init__(self):
        self.meta_depth = 0  # > 0 while a module runs on the meta device
        self.meta: dict[int, _Meta] = {}  # id of a meta tensor that holds an activation -> its fields
        self.meta_probes: dict[int, torch.Tensor] = {}  # id of a probe -> the meta tensor that stands for it

    # activations of both kinds: probes, and meta tensors inside a fallback
    def src_of(self, v) -> str:
        return v.src if isinstance(v, Probe) else self.meta[id(v)].src

    def set_src(self, v, name: str) -> None:
        if isinstance(v, Probe):
            v.src = name
        elif id(v) in self.meta:
            self.meta[id(v)].src = name

    def activations(self, obj) -> list:
        return [v for v in tree_flatten(obj)[0]
                if isinstance(v, Probe) or (isinstance(v, torch.Tensor) and id(v) in self.meta)]

    def needs_values(self, what: str) -> NoReturn:
        where = _where(self.stack[-1].layer) if self.stack else "the model"
        raise TraceError(f"{where} needs the values of a tensor ({what}), and a trace has only shapes")

    def cannot_run(self, func, error: NotImplementedError) -> NoReturn:
        where = _where(self.stack[-1].layer) if self.stack else "the model"
        raise TraceError(f"{where} runs {op_name(func)}, which PyTorch cannot run on the meta device (its output's "
                         "size may depend on the values of a tensor), and a trace has only shapes") from error

    # a module's forward, guarded
    def guard(self, forward):
        """``forward``, falling back to the meta device where it raises on probes."""

        def guarded(*args, **kwargs):
            if self.meta_depth:  # already on the meta device
                return forward(*args, **kwargs)
            mark = (len(self.layers), len(self.stack), self.macs, self.ops, self.allocated, len(self.buf_bytes))
            try:
                return forward(*args, **kwargs)
            except Exception as error:
                if getattr(error, "final", False) or not probes((args, kwargs)) or len(self.stack) < mark[1]:
                    raise
                self._rollback(mark)
                return self._module_on_meta(forward, args, kwargs)

        guarded.__wrapped__ = forward
        return guarded

    def _rollback(self, mark) -> None:
        """Forget what a forward that failed half-way recorded: its rows, counts, calls and buffers."""
        n_layers, n_stack, self.macs, self.ops, self.allocated, n_bufs = mark
        modules = {name: key for key, name in self.names.items()}
        for layer in self.layers[n_layers:]:
            if layer.kind == "op":
                self.op_calls[f"{layer.parent}.{layer.type}" if layer.parent else layer.type] -= 1
            else:
                name = layer.name if layer.name in modules else layer.name.rsplit("#", 1)[0]
                self.calls[modules[name]] -= 1
        del self.layers[n_layers:], self.stack[n_stack:]
        del self.buf_bytes[n_bufs:], self.buf_first[n_bufs:], self.buf_last[n_bufs:]
        own = self.stack[-1].layer
        own.kernel = own.stride = own.padding = None

    def _module_on_meta(self, forward, args, kwargs):
        """Run a module's forward again on meta tensors; its outputs become probes again."""
        layer = self.stack[-1].layer
        layer.fallback = True

        meta_args, meta_kwargs = tree_map(lambda v: self._meta_of(v) if isinstance(v, Probe) else v, (args, kwargs))
        self.meta_depth += 1
        try:
            with _MetaFunctions(self):
                out = forward(*meta_args, **meta_kwargs)
        except TraceError as error:
            error.final = True
            raise
        except Exception as error:
            given = ", ".join(format_shape(s) for s in layer.input_shapes) or "no tensor"
            final = TraceError(f"{_where(layer)}, given {given}, could not be traced, with probes or on the meta "
                               f"device: {type(error).__name__}: {error}")
            final.final = True
            raise final from error
        finally:
            self.meta_depth -= 1
        for p in probes((args, kwargs)):
            self.buf_last[p.buf] = self.step
        out = tree_map(lambda v: self._to_probe(v, layer.name), out)
        if not self.meta_depth:
            self.meta.clear()
            self.meta_probes.clear()
        return out

    def _register(self, t: torch.Tensor, src: str, buf: int, probe: Probe | None = None) -> torch.Tensor:
        self.meta[id(t)] = _Meta(t, src, buf, probe)
        if probe is not None:
            self.meta_probes[id(probe)] = t
        return t

    def _to_probe(self, v, name: str):
        if not isinstance(v, torch.Tensor) or not v.is_meta:
            return v
        record = self.meta.get(id(v))
        if record is not None and record.probe is not None:  # an input given back as it came
            return record.probe
        if record is None:  # made inside, from no activation
            probe = self.new(tuple(v.shape), v.dtype, None, None)
            probe.src = name
            return probe
        probe = Probe(self, tuple(v.shape), v.dtype, None, None, record.buf)
        probe.src = record.src
        return probe

    # a torch function inside a fallback
    def meta_op(self, func, args: tuple, kwargs: dict) -> Any:
        if getattr(func, "__name__", None) == "__get__":  # a property: most are no op (x.shape, x.dtype)
            value = func(*args, **kwargs)
            if not isinstance(value, torch.Tensor):
                return value
        acts = self.activations((args, kwargs))
        if not acts:  # no activation in it: it runs as in the real forward
            return func(*args, **kwargs)
        if func in _VALUES:
            self.needs_values(_VALUES[func])
        if func is torch._assert:  # a check on values: the real forward passes it
            return None
        macs, ops, allocated = self.macs, self.ops, self.allocated
        meta_args, meta_kwargs = tree_map(self._meta_of, (args, kwargs))
        func, meta_args, meta_kwargs = stay_on_meta(func, meta_args, meta_kwargs)
        try:
            out = func(*meta_args, **meta_kwargs)
        except NotImplementedError as error:
            self.cannot_run(func, error)
        if func is torch.Tensor.__setitem__:  # written in place: the target is the result
            out = meta_args[0]
        outputs = [v for v in tree_flatten(out)[0] if isinstance(v, torch.Tensor)]
        if not outputs:
            return out
        for v in acts:
            self.buf_last[self.meta[id(v)].buf if id(v) in self.meta else v.buf] = self.step
        src = self.src_of(acts[0])
        for t in outputs:
            self._made(t, src)
        self.step += 1
        frame = self.stack[-1] if self.stack else None
        if frame is not None and not frame.layer.leaf:
            self._op_layer(op_name(func), acts, outputs, out, frame.layer,
                           (self.macs - macs, self.ops - ops, self.allocated - allocated))
        return out

    def _meta_of(self, v):
        """Any tensor on the meta device: a probe as a meta tensor, a real tensor as a meta copy of itself."""
        if isinstance(v, Probe):
            if id(v) in self.meta_probes:
                return self.meta_probes[id(v)]
            return self._register(torch.empty(v.shape, dtype=v.dtype, device="meta"), v.src, v.buf, v)
        if isinstance(v, torch.Tensor) and not v.is_meta:
            return v.detach().to("meta")
        return v

    def _made(self, t: torch.Tensor, src: str) -> None:
        """An op's output holds an activation: a view or an in-place result shares its input's buffer."""
        if id(t) in self.meta:
            return
        base = self.meta.get(id(t._base)) if t._is_view() else None
        if base is not None:
            buf = base.buf
        else:
            buf = len(self.buf_bytes)
            self.buf_bytes.append(t.numel() * t.element_size())
            self.allocated += self.buf_bytes[-1]
            self.buf_first.append(self.step)
            self.buf_last.append(self.step)
        self._register(t, src, buf)
