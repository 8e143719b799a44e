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

from .records import Layer, Totals, Trace, layer_record
from .tracer import MAX_BATCH, trace

__all__ = ["MAX_BATCH", "Layer", "Totals", "Trace", "layer_record", "trace"]
