"""Block diagrams of a Trace as Graphviz DOT, and torchview's computational graph.

Three levels of detail, all drawn from the data flow the tracer recorded:

- ``stage``: input → stem → stage 1 (× n blocks) → ... → pool → fc, shapes on every edge;
- ``block``: every residual block as a cluster (conv, BN, ReLU, ..., the addition and the
  last ReLU) with its skip edge labelled by what it is; projections fold into that label;
- ``layer``: every module, the projections' convs and BNs included.

Runs of identical blocks can fold into one cluster marked "×N", which keeps ResNet-110
and ResNet-152 readable. Building the DOT text needs no Graphviz program; rendering it
to SVG, PNG or PDF needs ``dot`` (see ``export.py``); a browser can draw the DOT itself.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Iterable
from dataclasses import dataclass, field

import graphviz
from torch import nn

from .config import ResNetConfig
from .tables import human, human_bytes
from .trace import Layer, Trace

LEVELS = ("stage", "block", "layer")
DIRECTIONS = ("TB", "LR")

# kind -> (fill colour, legend text)
KINDS: dict[str, tuple[str, str]] = {
    "conv": ("#cfe2f3", "convolution"),
    "norm": ("#fff2cc", "batch norm"),
    "act": ("#fce5cd", "ReLU"),
    "pool": ("#e6d5ec", "pooling"),
    "fc": ("#f4cccc", "fully connected"),
    "add": ("#d9d9d9", "addition: the skip joins"),
    "shortcut": ("#d9ead3", "shortcut (skip path)"),
    "stage": ("#eaf1fb", "stage of residual blocks"),
    "io": ("#ffffff", "input / output"),
    "other": ("#eeeeee", "other"),
}
_TYPE_KIND = {
    "Conv2d": "conv", "BatchNorm2d": "norm", "ReLU": "act", "relu": "act", "MaxPool2d": "pool",
    "AvgPool2d": "pool", "AdaptiveAvgPool2d": "pool", "Linear": "fc", "add": "add", "ZeroPadShortcut": "shortcut",
}
DOWNSAMPLE_COLOUR = "#c0392b"
SKIP_COLOUR = "#38761d"
FONT = "Helvetica"


def kind_of(layer: Layer) -> str:
    return _TYPE_KIND.get(layer.type, "other")


def shape_text(shape) -> str:
    """(N, C, H, W) -> '(C,H,W)', the seed study's notation."""
    if shape is None:
        return ""
    if isinstance(shape, list):
        return " ".join(shape_text(s) for s in shape)
    return "(" + ",".join(str(s) for s in shape[1:]) + ")"


def _k(pair) -> str:
    return f"{pair[0]}×{pair[1]}"


def _stride(pair) -> str:
    return "" if pair is None or pair == (1, 1) else (f", /{pair[0]}" if pair[0] == pair[1] else f", /{_k(pair)}")


def layer_label(layer: Layer) -> str:
    """A layer in the study's words: 'conv 3×3, 32, /2', 'avg pool 8×8', 'fc 64→10'."""
    out, ins = layer.output_shape, layer.input_shapes
    if layer.type == "Conv2d":
        return f"conv {_k(layer.kernel)}, {out[1]}{_stride(layer.stride)}"
    if layer.type == "BatchNorm2d":
        return "BN"
    if layer.type in ("ReLU", "relu"):
        return "ReLU"
    if layer.type in ("MaxPool2d", "AvgPool2d"):
        return f"{'max' if layer.type == 'MaxPool2d' else 'avg'} pool {_k(layer.kernel)}{_stride(layer.stride)}"
    if layer.type == "AdaptiveAvgPool2d":
        return f"avg pool {_k(layer.kernel)}"
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


def _tooltip(trace: Trace, layer: Layer) -> str:
    parts = [layer.name or trace.model_name, layer.type, f"out {shape_text(layer.output_shape)}"]
    if layer.params:
        parts.append(f"{layer.params:,} params")
    if layer.macs:
        parts.append(f"{human(layer.macs)} MACs")
    parts.append(f"{human_bytes(layer.output_bytes)} out")
    return " · ".join(parts)


# -- the network's structure, read from the trace ----------------------------------------------


@dataclass
class ResidualBlock:
    name: str
    layer: Layer
    rows: list[Layer]  # everything inside, in order
    skip: str  # what the skip path is, in words
    downsamples: bool
    signature: tuple = ()
    folded: list[str] = field(default_factory=list)  # identical blocks this one stands for (itself first)


def _inside(name: str, container: str) -> bool:
    return name.startswith(container + ".")


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
        shortcut = [x for x in rows if _inside(x.name, f"{name}.downsample") or x.name == f"{name}.downsample"]
        leaves = [x for x in shortcut if x.leaf]
        if not leaves:
            skip = "identity"
        elif [x.type for x in leaves] == ["Conv2d", "BatchNorm2d"]:
            skip = f"1×1 conv, {leaves[0].output_shape[1]}{_stride(leaves[0].stride)} + BN"
        else:
            skip = " + ".join(layer_label(x) for x in leaves)
        ins, out = layer.input_shapes[0], layer.output_shape
        signature = (ins[1:], tuple((x.name[len(name):], x.type, layer_label(x), shape_text(x.output_shape))
                                    for x in rows))
        blocks[name] = ResidualBlock(name, layer, rows, skip, ins[1:] != out[1:], signature)
    return blocks


def _fold(blocks: dict[str, ResidualBlock]) -> dict[str, str]:
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


# -- graph building -----------------------------------------------------------------------------


@dataclass
class _Cluster:
    id: str
    attrs: dict[str, str]
    nodes: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    children: dict[str, _Cluster] = field(default_factory=dict)

    def emit(self, graph: graphviz.Digraph) -> None:
        for node_id, attrs in self.nodes:
            graph.node(node_id, **attrs)
        for child in self.children.values():
            sub = graphviz.Digraph(name=f"cluster_{child.id}")
            sub.attr(**child.attrs)
            child.emit(sub)
            graph.subgraph(sub)


def _new_graph(trace: Trace, direction: str, title: str) -> graphviz.Digraph:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    g = graphviz.Digraph(name=trace.model_name or "model")
    g.attr(rankdir=direction, fontname=FONT, fontsize="14", label=title, labelloc="t",
           nodesep="0.25", ranksep="0.3")
    g.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="11", color="#555555",
           height="0.3", margin="0.12,0.04")
    g.attr("edge", fontname=FONT, fontsize="9", color="#555555", arrowsize="0.6")
    return g


def _node_attrs(label: str, kind: str, tooltip: str = "") -> dict[str, str]:
    attrs = {"label": label.replace("\n", "\\n"), "fillcolor": KINDS[kind][0]}  # DOT's own line break
    if kind == "add":
        attrs.update(shape="circle", width="0.3", fixedsize="true", fontsize="14")
    if kind == "io":
        attrs.update(style="rounded", shape="box")
    if tooltip:
        attrs["tooltip"] = tooltip
    return attrs


def _legend(graph: graphviz.Digraph, title: str, kinds: Iterable[str], folded: bool, downsampling: bool,
            narrow: bool = False) -> None:
    """Title and legend in the graph's own label: a node would take a rank and stretch every column."""
    entries = [(f'<td bgcolor="{KINDS[k][0]}" border="1" width="16"> </td>', KINDS[k][1])
               for k in KINDS if k in kinds and k != "io"]
    if downsampling:
        entries.append((f'<td border="2" color="{DOWNSAMPLE_COLOUR}" width="16"> </td>', "downsamples"))
    if folded:
        entries.append(("<td>×N</td>", "N identical blocks drawn once"))
    entries.append((f'<td><font color="{SKIP_COLOUR}">- - ›</font></td>', "skip connection"))
    per_row = 2 if narrow else 4
    rows = "".join(
        "<tr>" + "".join(f'{swatch}<td align="left"><font point-size="9">{html.escape(text)}</font></td>'
                         for swatch, text in entries[i:i + per_row]) + "</tr>"
        for i in range(0, len(entries), per_row)
    )
    graph.attr(label=f'<<table border="0" cellspacing="2" cellpadding="2">'
                     f'<tr><td colspan="{2 * per_row}"><font point-size="14">{html.escape(title)}</font></td></tr>'
                     f'<tr><td colspan="{2 * per_row}"> </td></tr>'
                     f'{rows}</table>>')


def block_diagram(
    trace: Trace, level: str = "block", direction: str = "TB", fold: bool = True, legend: bool = True,
    wrap: bool = True, heat: dict[str, float] | None = None, heat_label: str = "",
) -> graphviz.Digraph:
    """The network as a Graphviz graph at ``level`` 'stage', 'block' or 'layer' (see the module doc).

    ``wrap`` draws the stem, each stage and the head side by side (one below the other left to
    right) rather than as one long strip; ``fold`` draws runs of identical blocks once. ``heat``
    paints each residual block (by name, 'layer1.0'...) by a value, white to red, named by
    ``heat_label``; blocks are then never folded, since each has its own value.
    """
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    title = _title(trace)
    if level == "stage":
        return _stage_diagram(trace, direction, title, legend)
    if heat:
        fold = False
        title += f" · blocks painted by {heat_label} ({min(heat.values()):.3g} to {max(heat.values()):.3g})"
    return _detailed_diagram(trace, level, direction, fold, legend, wrap, title, heat or {})


def _title(trace: Trace) -> str:
    t = trace.totals
    return f"{trace.model_name} · {t['params']:,} parameters · {human(t['macs_per_image'])} MACs per image"


def _stage_diagram(trace: Trace, direction: str, title: str, legend: bool) -> graphviz.Digraph:
    g = _new_graph(trace, direction, title)
    blocks = residual_blocks(trace)
    root = trace.layers[0]
    g.node("input", **_node_attrs(f"input\n{shape_text(root.input_shapes[0])}", "io"))
    parts: list[tuple[str, Layer]] = []  # (node id, the layer whose output leaves the node)
    kinds = {"io", "stage"}
    stem = [x for x in trace.layers if x.leaf and trace.stage_of(x) == "stem"]
    if stem:
        kinds.add("conv")
        label = "stem\n" + "\n".join(_compact([layer_label(x) for x in stem]))
        g.node("stem", **_node_attrs(label, "conv", " · ".join(x.name for x in stem)))
        parts.append(("stem", stem[-1]))
    downsampling = False
    for i, stage in enumerate((x for x in trace.layers if x.depth == 1 and trace.stage_of(x) == x.name), 1):
        members = [b for b in blocks.values() if b.layer.parent == stage.name]
        ins, out = stage.input_shapes[0], stage.output_shape
        kind = {b.layer.type for b in members}
        what = " / ".join(sorted(kind)).replace("BasicBlock", "basic block").replace("Bottleneck", "bottleneck")
        stride = -(-ins[2] // out[2]) if len(ins) == 4 and len(out) == 4 else 1
        label = f"stage {i} ({stage.name})\n{len(members)} × {what}, {out[1]} ch" + (f", /{stride}" if stride > 1
                                                                                     else "")
        attrs = _node_attrs(label, "stage", _tooltip(trace, stage))
        if stride > 1 or ins[1] != out[1]:
            attrs.update(color=DOWNSAMPLE_COLOUR, penwidth="2")
            downsampling = True
        g.node(stage.name, **attrs)
        parts.append((stage.name, stage))
    for x in trace.layers:
        if x.leaf and trace.stage_of(x) == "head" and x.type != "flatten":
            kinds.add(kind_of(x))
            g.node(x.name, **_node_attrs(layer_label(x), kind_of(x), _tooltip(trace, x)))
            parts.append((x.name, x))
    previous, shape = "input", root.input_shapes[0]
    for node, layer in parts:
        g.edge(previous, node, label=shape_text(shape))
        previous, shape = node, layer.output_shape
    g.node("output", **_node_attrs(f"output\n{shape_text(root.output_shape)}", "io"))
    g.edge(previous, "output", label=shape_text(shape))
    if legend:
        _legend(g, title, kinds, folded=False, downsampling=downsampling, narrow=direction == "TB")
    return g


def _compact(labels: list[str]) -> list[str]:
    """Stem labels on few lines: 'BN' and 'ReLU' ride along with the conv before them."""
    lines: list[str] = []
    for label in labels:
        if lines and label in ("BN", "ReLU"):
            lines[-1] += f" · {label}"
        else:
            lines.append(label)
    return lines


def _detailed_diagram(trace: Trace, level: str, direction: str, fold: bool, legend: bool, wrap: bool,
                      title: str, heat: dict[str, float]) -> graphviz.Digraph:
    g = _new_graph(trace, direction, title)
    blocks = residual_blocks(trace)
    represent = _fold(blocks) if fold else {}
    block_of = {}  # row name -> its block (innermost)
    for block in blocks.values():
        for row in block.rows:
            block_of[row.name] = block

    def hidden(row: Layer) -> bool:
        block = block_of.get(row.name)
        if block is None:
            return False
        if block.name in represent:
            return True  # folded into the block it repeats
        return level == "block" and row.name.startswith(f"{block.name}.downsample")

    def shown(name: str) -> str:
        """The node a row's output appears at once blocks are folded."""
        block = block_of.get(name)
        rep = represent.get(block.name) if block else None
        return name if rep is None else rep + name[len(block.name):]

    root = _Cluster("root", {})
    kinds = {"io"}
    stem = _Cluster("stem", {"label": "stem", "style": "dashed", "color": "#999999"})
    # the input heads the stem's column, so that every column starts on the same rank
    stem.nodes.append(("input", _node_attrs(f"input\n{shape_text(trace.layers[0].input_shapes[0])}", "io")))
    root.children["stem"] = stem
    leaves = [x for x in trace.layers if x.leaf and x.depth > 0]
    for row in leaves:
        if hidden(row):
            continue
        cluster = root
        for ancestor in _ancestors(trace, row):
            if level == "block" and ancestor.name.endswith("downsample"):
                break
            cluster = cluster.children.setdefault(
                ancestor.name, _Cluster(ancestor.name, _cluster_attrs(trace, ancestor, blocks, heat)))
        if trace.stage_of(row) == "stem":
            cluster = stem
        elif trace.stage_of(row) == "head":
            cluster = root.children.setdefault("head", _Cluster("head", {"label": "head", "style": "dashed",
                                                                         "color": "#999999"}))
        kinds.add(kind_of(row))
        cluster.nodes.append((row.name, _node_attrs(layer_label(row), kind_of(row), _tooltip(trace, row))))

    edges: dict[tuple[str, str], dict[str, str]] = {}
    for row in leaves:
        if hidden(row):
            continue
        block = block_of.get(row.name)
        for source in row.sources:
            source_row = trace[source] if source != "input" else None
            attrs: dict[str, str] = {}
            if source_row is not None and hidden(source_row) and block_of.get(source) is block:
                # a projection folded into the skip edge: draw it from the shortcut's own input
                shortcut = trace[f"{block.name}.downsample"]
                source, source_row = shortcut.sources[0], trace[shortcut.sources[0]]
                attrs = _skip_attrs(block.skip)
            elif block is not None and source != "input" and block_of.get(source) is not block and (
                    row.type == "add" or "downsample" in row.name[len(block.name):]):
                attrs = _skip_attrs("identity" if row.type == "add" else "")
            crossing = source == "input" or block_of.get(shown(source)) is not block_of.get(row.name)
            if crossing and "label" not in attrs:
                shape = trace.layers[0].input_shapes[0] if source == "input" else source_row.output_shape
                attrs["label"] = shape_text(shape)
            if wrap and source != "input" and trace.stage_of(source_row) != trace.stage_of(row):
                # each part (stem, stages, head) starts its own column, or row when drawn left to right;
                # an xlabel, unlike a label, takes no rank
                attrs["constraint"] = "false"
                if "label" in attrs:
                    attrs["xlabel"] = attrs.pop("label")
            edges.setdefault((shown(source), row.name), attrs)
    root.emit(g)
    for (u, v), attrs in edges.items():
        g.edge(u, v, **attrs)
    last = leaves[-1].name if leaves else "input"
    g.node("output", **_node_attrs(f"output\n{shape_text(trace.layers[0].output_shape)}", "io"))
    g.edge(shown(last), "output", label=shape_text(trace.layers[0].output_shape))
    if legend:
        downsampling = any(b.downsamples for b in blocks.values())
        if level == "layer" and any(b.skip != "identity" for b in blocks.values()):
            kinds.add("shortcut")  # the shortcut clusters' fill
        _legend(g, title, kinds, folded=bool(represent), downsampling=downsampling)
    return g


def _skip_attrs(label: str) -> dict[str, str]:
    attrs = {"style": "dashed", "color": SKIP_COLOUR, "fontcolor": SKIP_COLOUR, "penwidth": "1.4"}
    if label:
        attrs["label"] = label
    return attrs


def _ancestors(trace: Trace, row: Layer) -> list[Layer]:
    """Containers above a row, outermost first, without the model itself."""
    chain = []
    parent = row.parent
    while parent:
        chain.append(trace[parent])
        parent = trace[parent].parent
    return chain[::-1]


def _heat_colour(value: float, top: float) -> str:
    """White for 0, deep red for the largest value."""
    share = 0.0 if top <= 0 else min(max(value / top, 0.0), 1.0)
    g = int(255 - share * (255 - 80))
    b = int(255 - share * (255 - 60))
    return f"#ff{g:02x}{b:02x}"


def _cluster_attrs(trace: Trace, container: Layer, blocks: dict[str, ResidualBlock],
                   heat: dict[str, float]) -> dict[str, str]:
    block = blocks.get(container.name)
    if block is None:
        stage = trace.stage_of(container)
        label = container.name if stage != container.name else f"{container.name} · {container.output_shape[1]} ch"
        if container.name.endswith("downsample"):
            return {"label": "shortcut", "style": "dashed,filled", "fillcolor": KINDS["shortcut"][0],
                    "color": SKIP_COLOUR, "fontsize": "10"}
        return {"label": label, "style": "rounded", "color": "#9fb4d3", "fontsize": "12"}
    label = block.name
    attrs = {"style": "rounded,filled", "fillcolor": "#fbfbfb", "color": "#888888", "fontsize": "10"}
    if len(block.folded) > 1:
        label = f"{block.folded[0]} – {block.folded[-1]}  ×{len(block.folded)}"
        attrs["peripheries"] = "2"
    if block.downsamples:
        ins, out = container.input_shapes[0], container.output_shape
        stride = -(-ins[2] // out[2])
        label += f"  ↓ /{stride}" if stride > 1 else f"  {ins[1]}→{out[1]} ch"
        attrs.update(color=DOWNSAMPLE_COLOUR, penwidth="2")
    if container.name in heat:
        attrs["fillcolor"] = _heat_colour(heat[container.name], max(heat.values()))
        label += f"  ·  {heat[container.name]:.3g}"
    attrs["label"] = label
    return attrs


# -- torchview ----------------------------------------------------------------------------------


def computational_graph(
    config_or_model: ResNetConfig | nn.Module,
    input_size: tuple[int, int, int] | None = None,
    depth: int = 3,
    expand_nested: bool = True,
    direction: str = "TB",
    batch_size: int = 1,
) -> graphviz.Digraph:
    """torchview's graph of every tensor operation, on the meta device.

    It runs on a private copy of the network, so the caller's model is never moved or changed.
    """
    import torchview

    from .model import build_model

    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if isinstance(config_or_model, ResNetConfig):
        config, model = config_or_model, build_model(config_or_model, device="meta")
    else:
        config = getattr(config_or_model, "config", None)
        model = build_model(config, device="meta") if isinstance(config, ResNetConfig) else copy.deepcopy(
            config_or_model).to("meta")
    if input_size is None:
        if not isinstance(config, ResNetConfig):
            raise ValueError("input_size (C, H, W) is needed for a model that was not built from a config")
        input_size = config.input_shape
    graph = torchview.draw_graph(
        model, input_size=(batch_size, *input_size), device="meta", depth=depth, expand_nested=expand_nested,
        graph_dir=direction, graph_name=getattr(config, "name", type(model).__name__), mode="eval",
    )
    return graph.visual_graph
