"""A network's structure read back from its trace: the residual blocks with what each skip path is, runs of
identical blocks, and each layer in the study's words ('conv 3×3, 32, /2'). The diagrams and the walk-through
draw on these."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..formatting import shape_text
from ..tracing import Layer, Trace


def kernel_text(pair) -> str:
    return f"{pair[0]}×{pair[1]}"


def stride_text(pair) -> str:
    if pair is None or pair == (1, 1):
        return ""
    return f", /{pair[0]}" if pair[0] == pair[1] else f", /{kernel_text(pair)}"


def layer_label(layer: Layer) -> str:
    """A layer in the study's words: 'conv 3×3, 32, /2', 'avg pool 8×8', 'fc 64→10'."""
    out, ins = layer.output_shape, layer.input_shapes
    if layer.type == "Conv2d":
        return f"conv {kernel_text(layer.kernel)}, {out[1]}{stride_text(layer.stride)}"
    if layer.type == "BatchNorm2d":
        return "BN"
    if layer.type in ("ReLU", "relu"):
        return "ReLU"
    if layer.type in ("MaxPool2d", "AvgPool2d"):
        kind = "max" if layer.type == "MaxPool2d" else "avg"
        return f"{kind} pool {kernel_text(layer.kernel)}{stride_text(layer.stride)}"
    if layer.type == "AdaptiveAvgPool2d":
        return f"avg pool {kernel_text(layer.kernel)}"
    if layer.type == "Linear":
        return f"fc {ins[0][-1]}→{out[-1]}"
    if layer.type == "add":
        return "+"
    if layer.type == "ZeroPadShortcut":
        return _zero_pad_text(layer)
    return layer.type


def _zero_pad_text(layer: Layer) -> str:
    (_, c_in, h_in, _), (_, c_out, h_out, _) = layer.input_shapes[0], layer.output_shape
    stride = -(-h_in // h_out)
    sub = f"subsample /{stride}, " if stride > 1 else ""
    return f"zero-pad {sub}+{c_out - c_in} ch"


SHORTCUT = "downsample"  # torchvision's name for the module on a block's skip path


@dataclass
class ResidualBlock:
    """A module whose own forward adds a skip to its main path."""

    name: str
    layer: Layer
    rows: list[Layer]  # everything inside, in order
    skip: str  # what the skip path is, in words
    downsamples: bool
    shortcut_module: str | None = None  # the module on the skip path; None for an identity skip
    shortcut: frozenset[str] = frozenset()  # the rows of the skip path: that module and everything in it
    signature: tuple = ()
    folded: list[str] = field(default_factory=list)  # identical blocks this one stands for (itself first)


def residual_blocks(trace: Trace) -> dict[str, ResidualBlock]:
    """Residual blocks: the modules whose own forward runs an addition."""
    names = set(x.parent for x in trace.layers if x.kind == "op" and x.type == "add")
    rows_of: dict[str, list[Layer]] = {name: [] for name in names}
    for row in trace.layers:
        parent = row.parent
        while parent and parent not in names:
            parent = trace[parent].parent
        if parent:
            rows_of[parent].append(row)
    blocks = {}
    for name in (x.name for x in trace.layers if x.name in names):
        layer, rows = trace[name], rows_of[name]
        module = f"{name}.{SHORTCUT}"
        shortcut = [x for x in rows if x.name == module or x.name.startswith(module + ".")]
        leaves = [x for x in shortcut if x.leaf]
        if not leaves:
            skip = "identity"
        elif [x.type for x in leaves] == ["Conv2d", "BatchNorm2d"]:
            skip = f"1×1 conv, {leaves[0].output_shape[1]}{stride_text(leaves[0].stride)} + BN"
        else:
            skip = " + ".join(layer_label(x) for x in leaves)
        ins, out = layer.input_shapes[0], layer.output_shape
        signature = (ins[1:], tuple((x.name[len(name):], x.type, layer_label(x), shape_text(x.output_shape))
                                    for x in rows))
        blocks[name] = ResidualBlock(name, layer, rows, skip, ins[1:] != out[1:], module if shortcut else None,
                                     frozenset(x.name for x in shortcut), signature)
    return blocks


def fold_runs(blocks: dict[str, ResidualBlock]) -> dict[str, str]:
    """Fold runs of identical consecutive blocks; returns member name -> representative name."""
    represent: dict[str, str] = {}
    run: list[ResidualBlock] = []

    def close():
        if run:
            run[0].folded = [b.name for b in run]
            for b in run[1:]:
                represent[b.name] = run[0].name
        run.clear()

    for block in blocks.values():
        same_stage = run and run[0].layer.parent == block.layer.parent
        if same_stage and block.signature == run[0].signature:
            run.append(block)
        else:
            close()
            run.append(block)
    close()
    return represent


def ancestors(trace: Trace, row: Layer) -> list[Layer]:
    """Containers above a row, outermost first, without the model itself."""
    chain = []
    parent = row.parent
    while parent:
        chain.append(trace[parent])
        parent = trace[parent].parent
    return chain[::-1]
