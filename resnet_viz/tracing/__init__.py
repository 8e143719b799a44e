"""Trace every layer of a network with forward hooks, without computing anything.

A *probe* stands in for the input tensor: an object that carries a shape, a
dtype and a receptive field, and that speaks PyTorch's ``__torch_function__``
protocol. Every op the model's forward runs on it (``conv2d``, ``batch_norm``,
``relu``, the residual ``+=``...) arrives at the probe, which works out the
output shape and the op's MACs by arithmetic. Forward hooks on every module
record what goes in and what comes out. No weight is read, no activation is
allocated, and the cost does not depend on batch size or resolution.

Any model whose real forward runs can be traced, with three fallbacks:

- An op without a shape rule here (attention, ``einsum``, item assignment
  ``x[...] = y``, ``x ** 2``...) runs once on the ``meta`` device instead; its
  FLOPs are counted with the formulas of ``torch.utils.flop_counter``, as
  ``FlopCounterMode`` counts them, and so are those of any op the forward runs
  on the model's own tensors. (``FlopCounterMode`` on a CPU misses the fused
  kernels of attention and of recurrent layers; the meta device runs their
  unfused ops, which it counts.)
- A module whose forward fails on the probe (an ``isinstance(x, torch.Tensor)``
  check, a library that needs a real tensor) runs again on meta tensors, with
  the modules it calls: their rows, shapes and FLOPs are exact and marked
  ``fallback``; their receptive field, and that of what follows, is unknown.
- What needs the values of a tensor (``.item()``, an ``if`` on a tensor,
  ``nonzero``, a boolean mask) cannot be traced: ``trace`` raises a
  ``TraceError`` that names the module. (A ``torch._assert`` on values is
  taken as passed, where the probe follows the forward.)

Counting conventions (see the README): MACs are the multiply-accumulates of
convolutions and matrix products (the ResNet paper's "FLOPs" column); FLOPs are
2 × MACs (what ``FlopCounterMode`` reports); "all ops" adds bias adds, BN
(2 per element), ReLU (1), additions (1) and pooling (1 per input element read).
"""

from .fallback import TraceError
from .records import Layer, Totals, Trace, layer_record
from .tracer import MAX_BATCH, trace

__all__ = ["MAX_BATCH", "Layer", "TraceError", "Totals", "Trace", "layer_record", "trace"]
