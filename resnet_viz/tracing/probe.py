"""The probe: a tensor that is only a shape, a dtype and a receptive field. Every op a forward runs on it goes
to the tracer that made it, through PyTorch's ``__torch_function__`` protocol."""

from __future__ import annotations

import math
from typing import Any, NoReturn, Protocol

import torch

from ..formatting import format_shape

Shape = tuple[int, ...]
Pair = tuple[int, int]


class Allocator(Protocol):
    """What the probe and the shape rules need of a tracer: run an op, make a new activation, alias one, and
    stop where an op needs values that a probe does not have."""

    def run(self, func, args=(), kwargs=None) -> Any: ...

    def new(self, shape: Shape, dtype: torch.dtype, rf: Pair | None, jump: Pair | None) -> Probe: ...

    def alias(self, x: Probe, shape: Shape | None = None, rf: Pair | None = None,
              jump: Pair | None = None) -> Probe: ...

    def needs_values(self, what: str) -> NoReturn: ...


class Probe:
    """A tensor that is only a shape. Every op on it goes to its tracer.

    ``rf`` and ``jump`` are None where they are unknown (after a module that ran on the meta device)."""

    __slots__ = ("shape", "dtype", "rf", "jump", "buf", "src", "tracer")

    def __init__(self, tracer: Allocator, shape: Shape, dtype: torch.dtype, rf: Pair | None, jump: Pair | None,
                 buf: int):
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.rf = rf
        self.jump = jump
        self.buf = buf  # which activation buffer holds it (views and in-place ops share one)
        self.src = "input"  # name of the leaf layer that produced it
        self.tracer = tracer

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return probes((args, kwargs))[0].tracer.run(func, args, kwargs or {})

    # the small tensor surface that forward code reads directly
    device = torch.device("meta")
    is_cuda = False
    __hash__ = object.__hash__  # by identity, as a tensor's (``__eq__`` below is elementwise)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.tracer.run(torch.Tensor.unbind, (self, 0), {}))

    def __index__(self) -> int:
        if self.numel() != 1 or self.dtype.is_floating_point or self.dtype.is_complex:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        self.tracer.needs_values(VALUE_OPS["__index__"])

    def __setitem__(self, key, value) -> None:
        self.tracer.run(torch.Tensor.__setitem__, (self, key, value), {})

    def __getattr__(self, name: str):
        attr = getattr(torch.Tensor, name)  # AttributeError for what a tensor does not have either
        if callable(attr):  # any other Tensor method (x.flatten(1), x.mean(...)) becomes a traced op
            return lambda *args, **kwargs: self.tracer.run(attr, (self, *args), kwargs)
        # a property: what a meta tensor of this shape says (x.is_nested, x.layout...), or a traced op (x.T, x.mT)
        value = getattr(torch.empty(self.shape, dtype=self.dtype, device="meta"), name)
        return self.tracer.run(_getter(name), (self,), {}) if isinstance(value, torch.Tensor) else value

    def __repr__(self) -> str:
        return f"Probe({format_shape(self.shape)})"


def probes(obj: Any) -> list[Probe]:
    """The probes inside nested tuples, lists and dicts (a lean tree_flatten: this is the hot path)."""
    if isinstance(obj, Probe):
        return [obj]
    found: list[Probe] = []
    if isinstance(obj, (tuple, list)):
        for item in obj:
            found += probes(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            found += probes(item)
    return found


_GETTERS: dict[str, Any] = {}


def _getter(name: str):
    """A tensor-valued property (``T``, ``mT``, ``real``...) as a function, one per name, named after it."""
    if name not in _GETTERS:
        def get(x):
            return getattr(x, name)

        get.__name__ = get.__qualname__ = name
        _GETTERS[name] = get
    return _GETTERS[name]


def _operator(name: str, arity: int):
    method = getattr(torch.Tensor, name)
    if arity == 1:
        def op(self):
            return self.tracer.run(method, (self,), {})
    else:
        def op(self, other):
            return self.tracer.run(method, (self, other), {})
    op.__name__ = name
    return op


VALUE_OPS = {  # what reads the values of a tensor, which a probe does not have
    "__bool__": "bool() of a tensor: an if, an assert or an `and` on it", "__int__": "int() of a tensor",
    "__float__": "float() of a tensor", "__complex__": "complex() of a tensor",
    "__index__": "a tensor used as an index or a size", "__array__": "a tensor turned into a NumPy array",
    "__contains__": "`in` on a tensor", "item": ".item()", "tolist": ".tolist()", "numpy": ".numpy()",
}


def _needs_values(what: str):
    def op(self, *args, **kwargs):
        self.tracer.needs_values(what)
    return op


# every operator a tensor has: arithmetic, comparisons, bitwise, matmul, indexing (in place too)
_BINARY = ("add", "sub", "mul", "truediv", "div", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift")
for _name in (*(f"__{p}{n}__" for n in _BINARY for p in ("", "r", "i")), "__getitem__", "__eq__", "__ne__",
              "__lt__", "__le__", "__gt__", "__ge__"):
    if hasattr(torch.Tensor, _name):
        setattr(Probe, _name, _operator(_name, 2))
for _name in ("__neg__", "__pos__", "__abs__", "__invert__", "__reversed__"):
    setattr(Probe, _name, _operator(_name, 1))
# what needs the values themselves: a trace has only shapes
for _name, _what in VALUE_OPS.items():
    if _name != "__index__":  # defined above: not every tensor can be an index
        setattr(Probe, _name, _needs_values(_what))
