"""Plotly figures of a Trace: parameters, MACs and activation memory per stage and per layer, and the
feature-map shape through the depth of the network; ``charts_html`` puts several on one offline page.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative

from ..formatting import format_shape, human, human_bytes
from ..tracing import Layer, Trace

# Colours belong to parts of the network, never to a model, so the same stage looks the same in every chart.
PART_COLOURS = {"stem": "#7F7F7F", "head": "#3B3B3B", "model": "#000000"}
STAGE_COLOURS = tuple(qualitative.D3[:7]) + tuple(qualitative.D3[8:])  # D3 without its grey, which is the stem's
CHANNELS_COLOUR = "#1F77B4"
SPATIAL_COLOURS = {"H": "#D62728", "W": "#FF7F0E"}


def stage_colour(stage: str) -> str:
    """The colour of a part of the network: 'stem', 'layer1'..., 'head'."""
    if stage in PART_COLOURS:
        return PART_COLOURS[stage]
    return STAGE_COLOURS[(int(stage.removeprefix("layer")) - 1) % len(STAGE_COLOURS)]


def params_by_stage(trace: Trace) -> go.Figure:
    """Parameters of the stem, each stage and the head, labelled with the count and the share of the total."""
    table = trace.stage_table()
    total = trace.totals.params
    labels = [f"{p:,} ({_percent(p, total)})" for p in table["params"]]
    hover = [f"{stage}<br>{p:,} parameters<br>{_percent(p, total)} of {total:,}"
             for stage, p in zip(table["stage"], table["params"])]
    bar = go.Bar(x=list(table["stage"]), y=list(table["params"]), text=labels, textposition="outside",
                 marker_color=[stage_colour(s) for s in table["stage"]], hovertext=hover,
                 hovertemplate="%{hovertext}<extra></extra>", cliponaxis=False)
    return _layout(go.Figure(bar), f"Parameters per part of {trace.model_name} (all parameters, % of the total)",
                   "part of the network", "parameters")


def params_by_layer(trace: Trace) -> go.Figure:
    """One bar per layer that holds parameters (conv, BN, fc), in network order, coloured by stage."""
    total = trace.totals.params
    # a module called twice holds its parameters once: count them at its first call
    layers = [layer for layer in trace.layers
              if layer.leaf and layer.kind == "module" and layer.params > 0 and "#" not in layer.name]
    title = f"Parameters per layer of {trace.model_name} (weights, biases and BN scale/shift)"
    return _bars_by_stage(trace, layers, "params", title, "parameters", lambda layer: (
        f"{layer.params:,} parameters<br>{_percent(layer.params, total)} of {total:,}"))


def macs_by_layer(trace: Trace) -> go.Figure:
    """One bar per layer that multiplies (convs, fc): its multiply-accumulates for the traced batch."""
    layers = [layer for layer in trace.layers if layer.leaf and layer.macs > 0]
    total = trace.totals.macs
    title = f"MACs per layer of {trace.model_name} (multiply-accumulates, batch of {trace.batch_size})"
    return _bars_by_stage(trace, layers, "macs", title, "MACs", lambda layer: (
        f"{layer.macs:,} MACs ({human(layer.macs)})<br>{_percent(layer.macs, total)} of {total:,}"))


def memory_by_layer(trace: Trace) -> go.Figure:
    """Activation memory each layer writes (modules and ops such as the residual add), in bytes."""
    layers = [layer for layer in trace.layers if layer.leaf and layer.alloc_bytes > 0]
    title = (f"Activation memory per layer of {trace.model_name} (bytes each layer writes, batch of "
             f"{trace.batch_size}; in-place ReLUs and views write none)")
    return _bars_by_stage(trace, layers, "alloc_bytes", title, "bytes", lambda layer: (
        f"{layer.alloc_bytes:,} bytes ({human_bytes(layer.alloc_bytes)})<br>output {format_shape(layer.output_shape)}"))


def shape_journey(trace: Trace) -> go.Figure:
    """Channels (left axis) and spatial side (right axis) of each output along the main path, skips left out."""
    layers = [layer for layer in trace.layers if _on_main_path(layer)]
    positions = list(range(1, len(layers) + 1))
    channels = [layer.output_shape[1] for layer in layers]
    heights = [_spatial(layer.output_shape)[0] for layer in layers]
    widths = [_spatial(layer.output_shape)[1] for layer in layers]
    hover = [f"{trace.display_name(layer)} ({layer.type})<br>output {format_shape(layer.output_shape)}"
             for layer in layers]
    fig = go.Figure(_journey_line(positions, channels, "channels", CHANNELS_COLOUR, hover, "y"))
    if heights == widths:
        fig.add_trace(_journey_line(positions, heights, "spatial side (H = W)", SPATIAL_COLOURS["H"], hover, "y2"))
    else:
        fig.add_trace(_journey_line(positions, heights, "spatial height", SPATIAL_COLOURS["H"], hover, "y2"))
        fig.add_trace(_journey_line(positions, widths, "spatial width", SPATIAL_COLOURS["W"], hover, "y2"))
    _layout(fig, f"Shape through {trace.model_name} (channels and spatial side of each layer's output "
                 "along the main path; 1 after flatten)", "position along the main path (layers in order)", "channels")
    fig.update_layout(yaxis={"rangemode": "tozero"}, legend={"orientation": "h", "y": -0.2},
                      yaxis2={"title": {"text": "spatial side (pixels)"}, "overlaying": "y", "side": "right",
                              "rangemode": "tozero"})
    return fig


CHARTS: dict[str, Callable[[Trace], go.Figure]] = {
    "params-by-stage": params_by_stage,
    "params-by-layer": params_by_layer,
    "macs-by-layer": macs_by_layer,
    "memory-by-layer": memory_by_layer,
    "shape-journey": shape_journey,
}


def charts_html(figures: dict[str, go.Figure], title: str) -> str:
    """One self-contained HTML page with every figure; plotly.js is embedded once, so it works offline."""
    parts = [
        pio.to_html(fig, include_plotlyjs=i == 0, full_html=False, div_id=key, default_height="520px")
        for i, (key, fig) in enumerate(figures.items())
    ]
    body = "\n".join(f"<section>\n{part}\n</section>" for part in parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n</body>\n</html>\n")


# -- helpers --------------------------------------------------------------------------------------


def _bars_by_stage(trace: Trace, layers: Sequence[Layer], field: str, title: str, y_title: str,
                   describe: Callable[[Layer], str]) -> go.Figure:
    """Bars of each layer's ``field`` in network order, one trace per stage so that the legend names the stages;
    ``describe`` gives a layer's hover text."""
    names = [trace.display_name(layer) for layer in layers]
    values = [getattr(layer, field) for layer in layers]
    fig = go.Figure()
    for stage in dict.fromkeys(trace.stage_of(layer) for layer in layers):
        rows = [i for i, layer in enumerate(layers) if trace.stage_of(layer) == stage]
        fig.add_trace(go.Bar(
            x=[names[i] for i in rows], y=[values[i] for i in rows], name=stage,
            marker_color=stage_colour(stage),
            hovertext=[f"{names[i]} ({layers[i].type})<br>{describe(layers[i])}" for i in rows],
            hovertemplate="%{hovertext}<extra></extra>",
        ))
    _layout(fig, title, "layer (network order)", y_title)
    fig.update_layout(barmode="relative", bargap=0.1)
    fig.update_xaxes(categoryorder="array", categoryarray=names)
    return fig


def _journey_line(x: list[int], y: list[int], name: str, colour: str, hover: list[str], axis: str) -> go.Scatter:
    return go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"color": colour, "shape": "hv"},
                      yaxis=axis, hovertext=hover, hovertemplate=f"%{{hovertext}}<br>{name}: %{{y:,}}<extra></extra>")


def _on_main_path(layer: Layer) -> bool:
    """A leaf row off the skip connections whose output is a feature map (N, C, H, W) or features (N, F)."""
    out = layer.output_shape
    return (layer.leaf and "downsample" not in layer.name.split(".")
            and isinstance(out, tuple) and len(out) in (2, 4))


def _spatial(shape: tuple[int, ...]) -> tuple[int, int]:
    return (shape[2], shape[3]) if len(shape) == 4 else (1, 1)


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str) -> go.Figure:
    fig.update_layout(title={"text": title}, xaxis_title=x_title, yaxis_title=y_title, margin={"t": 80})
    return fig


def _percent(part: float, total: float) -> str:
    return f"{100 * part / total:.1f}%" if total else "–"


# -- a training run --------------------------------------------------------------------------------------

def training_curves(points: Sequence[dict[str, float]], epochs: Sequence[dict[str, float]]) -> go.Figure:
    """Loss (left axis) and accuracy (right axis) against the step: each batch, and validation after each epoch."""
    steps = [p["step"] for p in points]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=[p["loss"] for p in points], name="training loss", mode="lines",
                             line={"color": CHANNELS_COLOUR, "width": 1},
                             hovertemplate="step %{x:,}<br>loss %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=steps, y=[p["train_acc"] for p in points], name="training accuracy (batch)",
                             mode="lines", yaxis="y2", line={"color": SPATIAL_COLOURS["W"], "width": 1},
                             opacity=0.6, hovertemplate="step %{x:,}<br>batch accuracy %{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[e["step"] for e in epochs], y=[e["val_acc"] for e in epochs],
                             name="validation accuracy", mode="lines+markers", yaxis="y2",
                             line={"color": SPATIAL_COLOURS["H"], "width": 2},
                             hovertemplate="epoch end, step %{x:,}<br>validation %{y:.2%}<extra></extra>"))
    _layout(fig, "Learning: loss and accuracy", "step", "loss")
    fig.update_layout(yaxis={"rangemode": "tozero"}, legend={"orientation": "h", "y": -0.2},
                      yaxis2={"title": {"text": "accuracy"}, "overlaying": "y", "side": "right",
                              "range": [0, 1], "tickformat": ".0%"})
    return fig


BLOCK_METRICS = {
    "residual_ratio": "‖residual branch‖ / ‖skip‖",
    "grad_norm": "gradient norm of the block's parameters",
    "dead_relu": "share of the last ReLU's channels that never fire",
}


def block_activity_chart(inspections: Sequence[dict], metric: str) -> go.Figure:
    """One line per residual block: how ``metric`` (a key of BLOCK_METRICS) changes while it learns."""
    fig = go.Figure()
    if inspections:
        names = list(inspections[-1]["blocks"])
        steps = [look["step"] for look in inspections]
        for name in names:
            stage = name.split(".")[0]
            fig.add_trace(go.Scatter(
                x=steps, y=[look["blocks"][name].get(metric) for look in inspections], name=name, mode="lines+markers",
                line={"color": stage_colour(stage), "width": 1}, marker={"size": 4},
                hovertemplate=f"{name}<br>step %{{x:,}}<br>{metric}: %{{y:.3g}}<extra></extra>"))
    _layout(fig, f"Inside the blocks: {BLOCK_METRICS[metric]}", "step", BLOCK_METRICS[metric])
    return fig


def accuracy_vs_bits(rows: Sequence[dict],
                     title: str = "Accuracy against bits (weights and activations rounded, simulated)") -> go.Figure:
    """Validation accuracy against bits, one line per scheme (rounding schemes, or methods: post-training, STE and
    LSQ fine-tunes), float32 as a line across."""
    fig = go.Figure()
    base = next((r["accuracy"] for r in rows if r["scheme"] == "float32"), None)
    for i, scheme in enumerate(dict.fromkeys(r["scheme"] for r in rows if r["scheme"] != "float32")):
        points = sorted((r["bits"], r["accuracy"]) for r in rows if r["scheme"] == scheme)
        fig.add_trace(go.Scatter(x=[b for b, _ in points], y=[a for _, a in points], name=scheme,
                                 mode="lines+markers", line={"color": STAGE_COLOURS[i % len(STAGE_COLOURS)]},
                                 hovertemplate=f"{scheme}<br>%{{x}} bits: %{{y:.2%}}<extra></extra>"))
    if base is not None:
        fig.add_hline(y=base, line_dash="dot", annotation_text=f"float32 {base:.2%}")
    _layout(fig, title, "bits", "validation accuracy")
    fig.update_layout(yaxis={"tickformat": ".0%", "rangemode": "tozero"}, xaxis={"dtick": 1})
    return fig


# -- one trained network on one image ----------------------------------------------------------------------

def residual_ratio_chart(rows: Sequence[dict]) -> go.Figure:
    """‖F(x)‖ / ‖x‖ for every residual block (rows of ``Inside.block_rows()``): how much each block changes what
    its skip carries; a dotted line at 1, where the branch is as large as the skip."""
    shown = [r for r in rows if r["ratio"] is not None]
    fig = go.Figure(go.Bar(
        x=[r["block"] for r in shown], y=[r["ratio"] for r in shown],
        marker_color=[stage_colour(r["block"].split(".")[0]) for r in shown],
        customdata=[[r["branch_norm"], r["skip_norm"]] for r in shown],
        hovertemplate="%{x}<br>‖F(x)‖ / ‖x‖ = %{y:.3f}<br>‖F(x)‖ = %{customdata[0]:.1f}, ‖x‖ = "
                      "%{customdata[1]:.1f}<extra></extra>"))
    fig.add_hline(y=1, line_dash="dot", annotation_text="branch as large as the skip",
                  annotation_position="top left")
    return _layout(fig, "How much each block changes its input: ‖F(x)‖ / ‖x‖", "block", "‖F(x)‖ / ‖x‖")


def prediction_chart(top: Sequence[tuple[str, float]], truth: str | None = None) -> go.Figure:
    """The top classes and their probabilities, the most likely at the top; the true class, if known, in red."""
    names = [name for name, _ in top][::-1]
    fig = go.Figure(go.Bar(
        x=[p for _, p in top][::-1], y=names, orientation="h", texttemplate="%{x:.1%}", textposition="auto",
        marker_color=[SPATIAL_COLOURS["H"] if name == truth else CHANNELS_COLOUR for name in names],
        hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    _layout(fig, "Prediction: the top classes", "probability", "")
    fig.update_layout(xaxis={"range": [0, 1], "tickformat": ".0%"}, height=260, margin={"t": 50, "b": 30})
    return fig


def history_curves(history: Sequence[dict[str, float]]) -> go.Figure:
    """``training_curves`` from a run's history alone (one row per epoch, as a bundled network's card keeps it):
    each epoch's mean training loss and accuracy, and its validation accuracy."""
    points = [{"step": e["step"], "loss": e["train_loss"], "train_acc": e["train_acc"]} for e in history]
    fig = training_curves(points, history)
    fig.update_traces(selector={"name": "training accuracy (batch)"}, name="training accuracy (epoch mean)")
    return fig
