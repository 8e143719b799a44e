"""What a trace records: one ``Layer`` per module call or op, the network's ``Totals``, and the ``Trace`` that
holds them, with its tables and JSON."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import ResNetConfig
from ..errors import ConfigError
from ..formatting import format_pair, format_shape

Shape = tuple[int, ...]
Pair = tuple[int, int]

_STAGE = re.compile(r"layer\d+")
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2}  # tensors of state per parameter


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
    fallback: bool = False  # run on the meta device, in or as a module the probe could not follow (no receptive field)

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class Totals:
    """The whole network's counts for the traced batch (MACs, FLOPs and all ops under the README's conventions)."""

    params: int
    trainable_params: int
    macs: int  # multiply-accumulates of conv and linear layers, for the whole batch
    macs_per_image: int
    flops: int  # 2 × MACs, as FlopCounterMode counts
    all_ops: int  # FLOPs + bias, BN, ReLU, add and pooling
    param_bytes: int
    buffer_bytes: int  # BN running statistics
    input_bytes: int
    activation_bytes: int  # every activation a forward pass writes
    peak_activation_bytes: int  # the most that is alive at once

    def training_step_bytes(self, optimizer: str = "sgd") -> int:
        """Estimated memory of a training step: saved activations + weights + gradients + optimizer state."""
        if optimizer not in OPTIMIZER_STATES:
            raise ConfigError(f"optimizer {optimizer!r} is not one of {', '.join(OPTIMIZER_STATES)}")
        return self.activation_bytes + self.param_bytes * (2 + OPTIMIZER_STATES[optimizer]) + self.buffer_bytes

    @property
    def training_bytes(self) -> int:
        """A training step with SGD and momentum."""
        return self.training_step_bytes("momentum")

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "training_bytes": self.training_bytes}


LAYER_BYTES = 1024  # memory of one Layer record
# the columns of a trace's table (the Layers page, and a trace in a notebook)
TABLE_COLUMNS = ("name", "type", "input_shapes", "output_shape", "params", "macs", "all_ops", "output_bytes",
                 "kernel", "stride", "padding", "receptive_field", "jump")
NOTEBOOK_DEPTH = 2  # a trace in a notebook shows its stages and blocks; ``trace.table()`` has every row


@dataclass(frozen=True)
class Trace:
    """Every layer of one network for one input size and batch, with totals."""

    model_name: str
    config: ResNetConfig | None
    batch_size: int
    input_shape: Shape  # without the batch dimension
    layers: tuple[Layer, ...]
    totals: Totals

    def __getitem__(self, name: str) -> Layer:
        return self._by_name[name]

    @functools.cached_property
    def _by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def training_bytes(self, optimizer: str = "sgd") -> int:
        """Estimated memory of a training step: saved activations + weights + gradients + optimizer state."""
        return self.totals.training_step_bytes(optimizer)

    @property
    def approx_bytes(self) -> int:
        """About what this trace takes in memory, for caches that keep a byte budget: a layer's record with its
        shapes and names is 0.8–1.2 KiB (tracemalloc; tests/test_bounds_and_jobs.py checks the estimate)."""
        return LAYER_BYTES * len(self.layers) + 16 * 1024

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

    def display_name(self, layer: Layer) -> str:
        """A layer's name; the root row (named "") by the model's name."""
        return layer.name or self.model_name

    def describe(self) -> str:
        """The network in words (its config's description, or its name and input), with the batch if over 1."""
        if self.config is not None:
            text = self.config.describe()
        else:
            text = f"{self.model_name}: input {format_shape(self.input_shape)}"
        return text + (f", batch {self.batch_size}" if self.batch_size > 1 else "")

    def table(self, depth: int | None = None, layers: Sequence[Layer] | None = None):
        """The layers down to ``depth`` (or those given) as the Layers page shows them: a DataFrame of
        ``TABLE_COLUMNS``, the root row named after the model, empty cells blank."""
        import pandas as pd

        rows = list(layers) if layers is not None else [x for x in self.layers if depth is None or x.depth <= depth]
        if not rows:
            return pd.DataFrame(columns=list(TABLE_COLUMNS))
        frame = self.to_dataframe(rows)
        frame["name"] = [self.display_name(layer) for layer in rows]
        return frame[list(TABLE_COLUMNS)].fillna("")

    def _repr_html_(self) -> str:
        """In a notebook: the network, its totals, and its table down to ``NOTEBOOK_DEPTH``."""
        import html

        shown, t = self.table(NOTEBOOK_DEPTH), self.totals
        per = f"for a batch of {self.batch_size}" if self.batch_size > 1 else "per image"
        return (f"<p><b>{html.escape(self.describe())}</b><br>{t.params:,} parameters · {t.macs:,} MACs {per} · "
                f"{len(shown)} of {len(self.layers)} rows shown (depth ≤ {NOTEBOOK_DEPTH}; "
                f"<code>trace.table()</code> has them all)</p>" + shown.to_html(index=False))

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
            "totals": self.totals.to_dict(),
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
