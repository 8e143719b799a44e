"""The probe: a tensor that is only a shape, a dtype and a receptive field. Every op a forward runs on it goes
to the tracer that made it, through PyTorch's ``__torch_function__`` protocol."""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from ..formatting import format_shape

Shape = tuple[int, ...]
Pair = tuple[int, int]


class Allocator(Protocol):
    """What the probe and the shape rules need of a tracer: run an op, make a new activation, alias one."""

    def run(self, func, args=(), kwargs=None) -> Any: ...

    def new(self, shape: Shape, dtype: torch.dtype, rf: Pair, jump: Pair) -> Probe: ...

    def alias(self, x: Probe, shape: Shape | None = None, rf: Pair | None = None,
              jump: Pair | None = None) -> Probe: ...


class Probe:
    """A tensor that is only a shape. Every op on it goes to its tracer."""

    __slots__ = ("shape", "dtype", "rf", "jump", "buf", "src", "tracer")

    def __init__(self, tracer: Allocator, shape: Shape, dtype: torch.dtype, rf: Pair, jump: Pair, buf: int):
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


def _binary(name: str):
    method = getattr(torch.Tensor, name)

    def op(self, other):
        return self.tracer.run(method, (self, other), {})

    return op


for _name in ("__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__",
              "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__matmul__",
              "__getitem__"):
    setattr(Probe, _name, _binary(_name))
