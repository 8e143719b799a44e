"""A network's structure read back from its trace: the residual blocks with what each skip path is (a plain
network's blocks have none), runs of identical blocks, and each layer in the study's words ('conv 3×3, 32, /2',
'conv 3×3, 128, g=32'). The diagrams and the walk-through draw on these."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..formatting import shape_text
from ..tracing import Layer, Trace


def kernel_text(pair) -> str:
    return f"{pair[0]}×{pair[1]}"


def stride_text(pair) -> str:
    if pair is None or pair == (1, 1):
        return ""
    return f", /{pair[0]}" if pair[0] == pair[1] else f", /{kernel_text(pair)}"


def conv_groups(layer: Layer) -> int:
    """The groups of a Conv2d row, from its channels, kernel and parameters (out × in/groups × k×k, + out for a
    bias): 1 for an ordinary conv, 32 for a ResNeXt's 3×3."""
    if not layer.input_shapes or not isinstance(layer.output_shape, tuple) or layer.kernel is None:
        return 1
    c_in, c_out = layer.input_shapes[0][1], layer.output_shape[1]
    dense = c_out * c_in * layer.kernel[0] * layer.kernel[1]
    for weights in (layer.params, layer.params - c_out):  # without a bias, then with one
        if weights > 0 and dense % weights == 0:
            groups = dense // weights
            if c_in % groups == 0 and c_out % groups == 0:
                return groups
    return 1


def layer_label(layer: Layer) -> str:
    """A layer in the study's words: 'conv 3×3, 32, /2', 'conv 3×3, 128, g=32', 'avg pool 8×8', 'fc 64→10'."""
    out, ins = layer.output_shape, layer.input_shapes
    if layer.type == "Conv2d":
        groups = conv_groups(layer)
        grouped = f", g={groups}" if groups > 1 else ""
        return f"conv {kernel_text(layer.kernel)}, {out[1]}{grouped}{stride_text(layer.stride)}"
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
    if layer.type == "Dropout":
        return "dropout"
    return layer.type


def _zero_pad_text(layer: Layer) -> str:
    (_, c_in, h_in, _), (_, c_out, h_out, _) = layer.input_shapes[0], layer.output_shape
    stride = -(-h_in // h_out)
    sub = f"subsample /{stride}, " if stride > 1 else ""
    return f"zero-pad {sub}+{c_out - c_in} ch"


SHORTCUT = "downsample"  # torchvision's name for the module on a block's skip path
_STAGE = re.compile(r"layer\d+")
BLOCK_KINDS = {"BasicBlock": "basic block", "Bottleneck": "bottleneck block", "PreActBlock": "pre-activation block",
               "PreActBottleneck": "pre-activation bottleneck block"}


@dataclass
class ResidualBlock:
    """A module whose own forward adds a skip to its main path; or, in a plain network, one of a stage's blocks,
    which has none (``skip`` is "none")."""

    name: str
    layer: Layer
    rows: list[Layer]  # everything inside, in order
    skip: str  # what the skip path is, in words; "none" in a plain block
    downsamples: bool
    shortcut_module: str | None = None  # the module on the skip path; None for an identity skip
    shortcut: frozenset[str] = frozenset()  # the rows of the skip path: that module and everything in it
    signature: tuple = ()
    folded: list[str] = field(default_factory=list)  # identical blocks this one stands for (itself first)

    @property
    def has_skip(self) -> bool:
        return self.skip != "none"

    @property
    def kind(self) -> str:
        """In words: 'basic block', 'pre-activation bottleneck block', 'plain basic block'..."""
        kind = BLOCK_KINDS.get(self.layer.type, self.layer.type)
        return kind if self.has_skip else f"plain {kind}"


def residual_blocks(trace: Trace) -> dict[str, ResidualBlock]:
    """Residual blocks: the modules whose own forward runs an addition, and the modules a stage (``layerN``) is
    made of, which in a plain network run none."""
    adds = [x for x in trace.layers if x.kind == "op" and x.type == "add"]
    names = {x.parent for x in adds}
    holding = set()  # every module with an addition somewhere inside
    for add in adds:
        parent = add.parent
        while parent and parent not in holding:
            holding.add(parent)
            parent = trace[parent].parent
    stages = {x.name for x in trace.layers if x.depth == 1 and _STAGE.fullmatch(x.name) and not x.leaf}
    names |= {x.name for x in trace.layers if x.parent in stages and x.kind == "module" and not x.leaf
              and x.name not in holding}
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
        if not any(x.type == "add" and x.parent == name for x in rows):
            skip = "none"
        elif not leaves:
            skip = "identity"
        elif [x.type for x in leaves] == ["Conv2d", "BatchNorm2d"]:
            skip = f"1×1 conv, {leaves[0].output_shape[1]}{stride_text(leaves[0].stride)} + BN"
        elif [x.type for x in leaves] == ["Conv2d"] and leaves[0].kernel == (1, 1):
            skip = f"1×1 conv, {leaves[0].output_shape[1]}{stride_text(leaves[0].stride)}"
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
