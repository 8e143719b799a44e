"""Block diagrams of a Trace as Graphviz DOT.

Three levels of detail, all drawn from the data flow the tracer recorded:

- ``stage``: input → stem → stage 1 (× n blocks) → ... → pool → fc, shapes on every edge;
- ``block``: every residual block as a cluster (conv, BN, ReLU, ..., the addition and the
  last ReLU; BN → ReLU before each conv and the addition last in a pre-activation block) with
  its skip edge labelled by what it is; projections fold into that label. A plain network's
  blocks have no skip edge and no addition;
- ``layer``: every module, the projections' convs and BNs included.

Runs of identical blocks can fold into one cluster marked "×N", which keeps ResNet-110
and ResNet-152 readable. Building the DOT text needs no Graphviz program; rendering it
to SVG, PNG or PDF needs ``dot`` (see ``export.py``); a browser can draw the DOT itself.
torchview's graph of every tensor operation is in ``graph.py``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field

import graphviz

from ..errors import ConfigError
from ..formatting import human, human_bytes, shape_text
from ..tracing import Layer, Trace
from .graph import DIRECTIONS, Diagram
from .structure import ancestors, fold_runs, layer_label, residual_blocks

LEVELS = ("stage", "block", "layer")

# kind -> (fill colour, legend text)
KINDS: dict[str, tuple[str, str]] = {
    "conv": ("#cfe2f3", "convolution"),
    "norm": ("#fff2cc", "batch norm"),
    "act": ("#fce5cd", "ReLU"),
    "dropout": ("#f3f3f3", "dropout"),
    "pool": ("#e6d5ec", "pooling"),
    "fc": ("#f4cccc", "fully connected"),
    "add": ("#d9d9d9", "addition: the skip joins"),
    "shortcut": ("#d9ead3", "shortcut (skip path)"),
    "stage": ("#eaf1fb", "stage of residual blocks"),
    "io": ("#ffffff", "input / output"),
    "other": ("#eeeeee", "other"),
}
_TYPE_KIND = {
    "Conv2d": "conv", "BatchNorm2d": "norm", "ReLU": "act", "relu": "act", "Dropout": "dropout", "MaxPool2d": "pool",
    "AvgPool2d": "pool", "AdaptiveAvgPool2d": "pool", "Linear": "fc", "add": "add", "ZeroPadShortcut": "shortcut",
}
DOWNSAMPLE_COLOUR = "#c0392b"
SKIP_COLOUR = "#38761d"
FONT = "Helvetica"


def kind_of(layer: Layer) -> str:
    return _TYPE_KIND.get(layer.type, "other")


def _tooltip(trace: Trace, layer: Layer) -> str:
    parts = [layer.name or trace.model_name, layer.type, f"out {shape_text(layer.output_shape)}"]
    if layer.params:
        parts.append(f"{layer.params:,} params")
    if layer.macs:
        parts.append(f"{human(layer.macs)} MACs")
    parts.append(f"{human_bytes(layer.output_bytes)} out")
    return " · ".join(parts)


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
        raise ConfigError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    g = Diagram(name=trace.model_name or "model")
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
            narrow: bool = False, skips: bool = True) -> None:
    """Title and legend in the graph's own label: a node would take a rank and stretch every column."""
    entries = [(f'<td bgcolor="{KINDS[k][0]}" border="1" width="16"> </td>', KINDS[k][1])
               for k in KINDS if k in kinds and k != "io"]
    if downsampling:
        entries.append((f'<td border="2" color="{DOWNSAMPLE_COLOUR}" width="16"> </td>', "downsamples"))
    if folded:
        entries.append(("<td>×N</td>", "N identical blocks drawn once"))
    if skips:
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
) -> Diagram:
    """The network as a Graphviz graph at ``level`` 'stage', 'block' or 'layer' (see the module doc).

    ``wrap`` draws the stem, each stage and the head side by side (one below the other left to
    right) rather than as one long strip; ``fold`` draws runs of identical blocks once. ``heat``
    paints each residual block (by name, 'layer1.0'...) by a value, white to red, named by
    ``heat_label``; blocks are then never folded, since each has its own value.
    """
    if level not in LEVELS:
        raise ConfigError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    title = _title(trace)
    if level == "stage":
        return _stage_diagram(trace, direction, title, legend)
    if heat:
        fold = False
        title += f" · blocks painted by {heat_label} ({min(heat.values()):.3g} to {max(heat.values()):.3g})"
    return _Detailed(trace, level, fold, wrap, heat or {}).draw(direction, title, legend)


def _title(trace: Trace) -> str:
    t = trace.totals
    return f"{trace.model_name} · {t.params:,} parameters · {human(t.macs_per_image)} MACs per image"


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
        what = " / ".join(sorted({b.kind for b in members}))
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
        _legend(g, title, kinds, folded=False, downsampling=downsampling, narrow=direction == "TB",
                skips=any(b.has_skip for b in blocks.values()))
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


class _Detailed:
    """A block- or layer-level diagram: every leaf layer a node, inside the clusters of its stage and block; runs
    of identical blocks drawn once where ``fold``."""

    def __init__(self, trace: Trace, level: str, fold: bool, wrap: bool, heat: dict[str, float]):
        self.trace, self.level, self.wrap, self.heat = trace, level, wrap, heat
        self.blocks = residual_blocks(trace)
        self.represent = fold_runs(self.blocks) if fold else {}
        self.block_of = {row.name: block for block in self.blocks.values() for row in block.rows}  # innermost block
        self.shortcut_modules = {b.shortcut_module for b in self.blocks.values() if b.shortcut_module}
        self.all_leaves = [x for x in trace.layers if x.leaf and x.depth > 0]
        self.leaves = [x for x in self.all_leaves if not self.hidden(x)]
        self.kinds = {"io"}

    def hidden(self, row: Layer) -> bool:
        block = self.block_of.get(row.name)
        if block is None:
            return False
        if block.name in self.represent:
            return True  # folded into the block it repeats
        return self.level == "block" and row.name in block.shortcut

    def shown(self, name: str) -> str:
        """The node a row's output appears at once blocks are folded."""
        block = self.block_of.get(name)
        rep = self.represent.get(block.name) if block else None
        return name if rep is None else rep + name[len(block.name):]

    def clusters(self) -> _Cluster:
        trace, root = self.trace, _Cluster("root", {})
        stem = _Cluster("stem", {"label": "stem", "style": "dashed", "color": "#999999"})
        # the input heads the stem's column, so that every column starts on the same rank
        stem.nodes.append(("input", _node_attrs(f"input\n{shape_text(trace.layers[0].input_shapes[0])}", "io")))
        root.children["stem"] = stem
        for row in self.leaves:
            cluster = root
            for ancestor in ancestors(trace, row):
                if self.level == "block" and ancestor.name in self.shortcut_modules:
                    break
                cluster = cluster.children.setdefault(
                    ancestor.name, _Cluster(ancestor.name, self.cluster_attrs(ancestor)))
            if trace.stage_of(row) == "stem":
                cluster = stem
            elif trace.stage_of(row) == "head":
                cluster = root.children.setdefault("head", _Cluster("head", {"label": "head", "style": "dashed",
                                                                             "color": "#999999"}))
            self.kinds.add(kind_of(row))
            cluster.nodes.append((row.name, _node_attrs(layer_label(row), kind_of(row), _tooltip(trace, row))))
        return root

    def edges(self) -> dict[tuple[str, str], dict[str, str]]:
        edges: dict[tuple[str, str], dict[str, str]] = {}
        for row in self.leaves:
            for source in row.sources:
                source, attrs = self._edge(row, source)
                edges.setdefault((self.shown(source), row.name), attrs)
        return edges

    def _edge(self, row: Layer, source: str) -> tuple[str, dict[str, str]]:
        """Where the edge into ``row`` from ``source`` starts, and how it looks."""
        trace, block = self.trace, self.block_of.get(row.name)
        source_row = trace[source] if source != "input" else None
        attrs: dict[str, str] = {}
        if source_row is not None and self.hidden(source_row) and self.block_of.get(source) is block:
            # a projection folded into the skip edge: draw it from the shortcut's own input
            shortcut = trace[block.shortcut_module]
            source, source_row = shortcut.sources[0], trace[shortcut.sources[0]]
            attrs = _skip_attrs(block.skip)
        elif block is not None and source != "input" and self.block_of.get(source) is not block and (
                row.type == "add" or row.name in block.shortcut):
            attrs = _skip_attrs("identity" if row.type == "add" else "")
        crossing = source == "input" or self.block_of.get(self.shown(source)) is not block
        if crossing and "label" not in attrs:
            shape = trace.layers[0].input_shapes[0] if source == "input" else source_row.output_shape
            attrs["label"] = shape_text(shape)
        if self.wrap and source != "input" and trace.stage_of(source_row) != trace.stage_of(row):
            # each part (stem, stages, head) starts its own column, or row when drawn left to right;
            # an xlabel, unlike a label, takes no rank
            attrs["constraint"] = "false"
            if "label" in attrs:
                attrs["xlabel"] = attrs.pop("label")
        return source, attrs

    def cluster_attrs(self, container: Layer) -> dict[str, str]:
        """How a container's cluster looks: a stage, a residual block (folded, downsampling, painted) or a skip path."""
        heat, block = self.heat, self.blocks.get(container.name)
        if block is None:
            stage = self.trace.stage_of(container)
            label = container.name if stage != container.name else f"{container.name} · {container.output_shape[1]} ch"
            if container.name in self.shortcut_modules:
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

    def draw(self, direction: str, title: str, legend: bool) -> graphviz.Digraph:
        g = _new_graph(self.trace, direction, title)
        self.clusters().emit(g)
        for (u, v), attrs in self.edges().items():
            g.edge(u, v, **attrs)
        last = self.all_leaves[-1].name if self.all_leaves else "input"
        output = self.trace.layers[0].output_shape
        g.node("output", **_node_attrs(f"output\n{shape_text(output)}", "io"))
        g.edge(self.shown(last), "output", label=shape_text(output))
        if legend:
            blocks = self.blocks.values()
            if self.level == "layer" and any(b.skip not in ("identity", "none") for b in blocks):
                self.kinds.add("shortcut")  # the shortcut clusters' fill
            _legend(g, title, self.kinds, folded=bool(self.represent), downsampling=any(b.downsamples for b in blocks),
                    skips=any(b.has_skip for b in blocks))
        return g

def _skip_attrs(label: str) -> dict[str, str]:
    attrs = {"style": "dashed", "color": SKIP_COLOUR, "fontcolor": SKIP_COLOUR, "penwidth": "1.4"}
    if label:
        attrs["label"] = label
    return attrs


def _heat_colour(value: float, top: float) -> str:
    """White for 0, deep red for the largest value."""
    share = 0.0 if top <= 0 else min(max(value / top, 0.0), 1.0)
    g = int(255 - share * (255 - 80))
    b = int(255 - share * (255 - 60))
    return f"#ff{g:02x}{b:02x}"
