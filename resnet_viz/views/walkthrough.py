"""The seed study's walk-through, written for any config: input, stem, each stage, pooling and fc,
with the tensor shape at every step, in the study's words."""

from __future__ import annotations

from dataclasses import dataclass

from ..formatting import shape_text
from ..tracing import Trace
from .structure import ResidualBlock, layer_label, residual_blocks


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    shape_in: str  # "(C,H,W)"
    shape_out: str


def walkthrough(trace: Trace) -> list[Step]:
    """One step per part of the network, read from the trace."""
    root = trace.layers[0]
    steps = [Step("Input", f"The input has shape {shape_text(root.input_shapes[0])}: channels, height, width.",
                  shape_text(root.input_shapes[0]), shape_text(root.input_shapes[0]))]
    leaves = [x for x in trace.layers if x.leaf and x.depth > 0]
    stem = [x for x in leaves if trace.stage_of(x) == "stem"]
    if stem:
        parts = [_conv_words(x) if x.type == "Conv2d" else layer_label(x) for x in stem]
        steps.append(Step("Initial convolution (stem)", ", then ".join(parts) + ".",
                          shape_text(stem[0].input_shapes[0]), shape_text(stem[-1].output_shape)))
    blocks = residual_blocks(trace)
    stages = [x for x in trace.layers if x.depth == 1 and trace.stage_of(x) == x.name]
    for number, stage in enumerate(stages, 1):
        members = [b for b in blocks.values() if b.layer.parent == stage.name]
        if not members:
            continue
        text = _stage_words(members)
        steps.append(Step(f"Stage {number} ({stage.name})", text,
                          shape_text(stage.input_shapes[0]), shape_text(stage.output_shape)))
    head = [x for x in leaves if trace.stage_of(x) == "head" and x.type != "flatten"]
    if head:
        words = []
        types = [x.type for x in head]
        if types[:2] == ["BatchNorm2d", "ReLU"]:  # a pre-activation network's closing BN → ReLU
            words.append("BN → ReLU normalise and activate the last stage's sum, which no block activated")
            head = head[2:]
        for x in head:
            if x.type == "AdaptiveAvgPool2d":
                words.append(f"average pooling over the {x.input_shapes[0][2]}×{x.input_shapes[0][3]} map gives "
                             f"{shape_text(x.output_shape)}")
            elif x.type == "Linear":
                words.append(f"a fully-connected layer maps {x.input_shapes[0][-1]} features to "
                             f"{x.output_shape[-1]} outputs, one per class")
            else:
                words.append(layer_label(x))
        text = "; ".join(words)
        first = [x for x in leaves if trace.stage_of(x) == "head"][0]
        steps.append(Step("Pooling and fully-connected layer", text[0].upper() + text[1:] + ".",
                          shape_text(first.input_shapes[0]), shape_text(head[-1].output_shape)))
    return steps


def _stage_words(members: list[ResidualBlock]) -> str:
    """A stage's blocks in words: what each runs, where the skip joins (or that there is none), and what the first
    block does to the shape."""
    first, last = members[0], members[-1]
    path = [layer_label(x) for x in last.rows if x.leaf and x.name not in last.shortcut and x.type != "add"]
    count = f"{len(members)} {first.kind}{'s' if len(members) > 1 else ''}"
    if not first.has_skip:
        text = [f"{count}: {' → '.join(path)}, with no skip: each block's output is its main path alone."]
    elif first.layer.type.startswith("PreAct"):
        text = [f"{count}: {' → '.join(path)}, then the skip is added, with no ReLU after the addition "
                "(pre-activation: BN and ReLU come before each conv)."]
    else:
        text = [f"{count}: {' → '.join(path[:-1])}, plus the skip, then {path[-1]}."]
    if first.downsamples:
        strided = next((x for x in first.rows if x.type == "Conv2d" and x.stride != (1, 1)), None)
        how = f"its {layer_label(strided)} strides" if strided else "it widens the channels"
        change = (f"The first block changes the shape {shape_text(first.layer.input_shapes[0])} → "
                  f"{shape_text(first.layer.output_shape)} ({how})")
        text.append(f"{change}, so its skip is {_skip_words(first.skip)} to match the shapes for the addition."
                    if first.has_skip else f"{change}.")
    if first.has_skip and (len(members) > 1 or not first.downsamples):
        text.append("The other blocks keep the shape; their skip carries the input unchanged (identity)."
                    if first.downsamples else "The skip carries each block's input unchanged (identity).")
    elif len(members) > 1 and first.downsamples:
        text.append("The other blocks keep the shape.")
    return " ".join(text)


def _conv_words(conv) -> str:
    k, s, p = conv.kernel, conv.stride, conv.padding
    size = f"{k[0]}×{k[1]}"
    return f"conv {size} with {conv.output_shape[1]} output channels, stride {s[0]}, pad {p[0]}"


def _skip_words(skip: str) -> str:
    if skip.startswith("1×1 conv"):
        return f"a point-wise projection ({skip})"
    if skip.startswith("zero-pad"):
        return f"parameter-free ({skip})"
    return skip
