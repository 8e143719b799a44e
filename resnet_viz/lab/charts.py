"""Plotly figures of a LabReport: one set per study, networks overlaid or side by side. A residual network is
drawn with solid lines, a plain one with dashed lines; each network keeps its colour in every figure."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

if TYPE_CHECKING:  # a report shows its own figures (LabReport._ipython_display_): no import back at run time
    from .studies import LabReport

COLOURS = qualitative.D3
MAX_HEATMAP_COLUMNS = 2  # the figures of two networks stand side by side


def _style(report: LabReport) -> dict[str, dict]:
    """Each network's colour, and a dashed line if it is plain."""
    residual = report.extra.get("residual", {})
    return {net: {"color": COLOURS[i % len(COLOURS)], "dash": "solid" if residual.get(net, True) else "dash"}
            for i, net in enumerate(report.networks)}


def _layout(fig: go.Figure, title: str, x: str, y: str, **more) -> go.Figure:
    fig.update_layout(title={"text": title}, xaxis_title=x, yaxis_title=y, margin={"t": 80},
                      legend={"orientation": "h", "y": -0.2}, **more)
    return fig


def _kind(report: LabReport, net: str) -> str:
    return "residual" if report.extra.get("residual", {}).get(net, True) else "plain"


def gradient_figures(report: LabReport) -> dict[str, go.Figure]:
    style, fig = _style(report), go.Figure()
    for net, rows in report.results.items():
        main = [r for r in rows if r["kind"] != "shortcut"]
        fig.add_trace(go.Scatter(x=[r["depth"] for r in main], y=[r["grad_norm"] for r in main], name=net,
                                 mode="lines+markers", line=style[net], marker={"size": 4},
                                 customdata=[r["layer"] for r in main],
                                 hovertemplate="%{customdata}: ‖∂L/∂W‖ = %{y:.3g}<extra>" + net + "</extra>"))
    _layout(fig, "Gradient norm of each layer's weights at initialisation, one batch", "layer (from the input)",
            "‖∂L/∂W‖", yaxis_type="log")
    return {"gradients": fig}


def curve_figures(report: LabReport) -> dict[str, go.Figure]:
    style, fig = _style(report), go.Figure()
    for net, rows in report.results.items():
        epochs = [r["epoch"] for r in rows]
        fig.add_trace(go.Scatter(x=epochs, y=[r["train_error"] for r in rows], name=f"{net}: training",
                                 line={**style[net], "width": 1}, opacity=0.7))
        fig.add_trace(go.Scatter(x=epochs, y=[r["val_error"] for r in rows], name=f"{net}: validation",
                                 line={**style[net], "width": 3}))
    _layout(fig, "Error while training (thin: training, thick: validation)", "epoch", "error",
            yaxis_tickformat=".0%")
    return {"curves": fig}


def response_figures(report: LabReport) -> dict[str, go.Figure]:
    style = _style(report)
    fig = make_subplots(rows=2, cols=1, subplot_titles=("in network order", "sorted by size"),
                        vertical_spacing=0.15)
    for net, rows in report.results.items():
        stds = [r["std"] for r in rows]
        fig.add_trace(go.Scatter(x=[r["index"] for r in rows], y=stds, name=net, line=style[net],
                                 customdata=[r["layer"] for r in rows], legendgroup=net,
                                 hovertemplate="%{customdata}: std %{y:.3f}<extra>" + net + "</extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=list(range(1, len(stds) + 1)), y=sorted(stds, reverse=True), name=net,
                                 line=style[net], legendgroup=net, showlegend=False), 2, 1)
    fig.update_xaxes(title_text="3×3 layer", row=2, col=1)
    fig.update_yaxes(title_text="std")
    _layout(fig, "Standard deviation of each 3×3 layer's response (after BN, before the addition and ReLU)", "",
            "", height=640)
    return {"responses": fig}


def lesion_figures(report: LabReport) -> dict[str, go.Figure]:
    style = _style(report)
    single, random = go.Figure(), go.Figure()
    for net, found in report.results.items():
        rows = found["single"]
        single.add_trace(go.Bar(x=[r["block"] for r in rows], y=[r["accuracy"] for r in rows], name=net,
                                marker_color=style[net]["color"],
                                marker_pattern_shape="" if _kind(report, net) == "residual" else "/",
                                hovertemplate="without %{x}: %{y:.1%}<extra>" + net + "</extra>"))
        single.add_hline(y=found["baseline"], line={"color": style[net]["color"], "dash": "dot"},
                         annotation_text=f"{net}: nothing removed", annotation_position="top right")
        ks = [k["k"] for k in found["random"]]
        means = [float(np.mean(k["accuracy"])) for k in found["random"]]
        random.add_trace(go.Scatter(x=[0, *ks], y=[found["baseline"], *means], name=net, line=style[net],
                                    mode="lines+markers"))
        xs = [k["k"] for k in found["random"] for _ in k["accuracy"]]
        ys = [a for k in found["random"] for a in k["accuracy"]]
        random.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"{net}: each draw", showlegend=False,
                                    marker={"color": style[net]["color"], "size": 5, "opacity": 0.5}))
    _layout(single, "Validation accuracy with one block's branch removed", "block removed", "accuracy",
            yaxis_tickformat=".0%", yaxis_range=[0, 1], barmode="group")
    _layout(random, "Validation accuracy with k random blocks removed (line: the mean of the draws)",
            "blocks removed (k)", "accuracy", yaxis_tickformat=".0%", yaxis_range=[0, 1])
    return {"lesion-single": single, "lesion-random": random}


def erf_figures(report: LabReport) -> dict[str, go.Figure]:
    figures = {}
    for net, found in report.results.items():
        stages = found["stages"]
        cols = min(len(stages), MAX_HEATMAP_COLUMNS)
        rows = math.ceil(len(stages) / cols)
        fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.06, vertical_spacing=0.1, subplot_titles=[
            f"{s['stage']}: 50% in {s['erf_50']}², 90% in {s['erf_90']}²" for s in stages])
        for i, stage in enumerate(stages):
            r, c = i // cols + 1, i % cols + 1
            fig.add_trace(go.Heatmap(z=found["gradient"][stage["stage"]], colorscale="Viridis", showscale=False,
                                     hovertemplate="row %{y}, column %{x}: %{z:.3f}<extra></extra>"), r, c)
            if stage["box"] is not None:
                top, left, bottom, right = stage["box"]
                fig.add_shape(type="rect", x0=left - 0.5, x1=right + 0.5, y0=top - 0.5, y1=bottom + 0.5,
                              line={"color": "#D62728", "width": 2, "dash": "dot"}, row=r, col=c)
            fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i + 1 if i else ''}", showticklabels=False,
                             row=r, col=c)
            fig.update_xaxes(showticklabels=False, row=r, col=c)
        _layout(fig, f"{net} ({_kind(report, net)}): effective receptive fields<br><sup>each stage's centre unit; "
                     "red: the theoretical field, clipped to the image</sup>", "", "", height=300 * rows + 100)
        figures[f"erf-{safe_name(net)}"] = fig
    return figures


def landscape_figures(report: LabReport) -> dict[str, go.Figure]:
    style, line = _style(report), go.Figure()
    figures: dict[str, go.Figure] = {}
    for net, found in report.results.items():
        line.add_trace(go.Scatter(x=found["line"]["alpha"], y=found["line"]["loss"], name=net, line=style[net],
                                  mode="lines+markers"))
        surface = found["surface"]
        contour = go.Figure(go.Contour(x=surface["alpha"], y=surface["beta"], z=surface["loss"],
                                       colorscale="Viridis", contours={"showlabels": True},
                                       colorbar={"title": {"text": "loss"}}))
        contour.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker={"symbol": "x", "color": "white"},
                                     name="the trained weights", showlegend=False))
        figures[f"landscape-contour-{safe_name(net)}"] = _layout(
            contour, f"{net} ({_kind(report, net)}): training loss around the trained weights", "α (direction 1)",
            "β (direction 2)", height=520)
        surf = go.Figure(go.Surface(x=surface["alpha"], y=surface["beta"], z=surface["loss"], colorscale="Viridis",
                                    showscale=False))
        figures[f"landscape-surface-{safe_name(net)}"] = surf.update_layout(
            title={"text": f"{net} ({_kind(report, net)}): the loss surface"}, height=560,
            scene={"xaxis_title": "α", "yaxis_title": "β", "zaxis_title": "loss"})
    _layout(line, "Training loss along one filter-normalised random direction", "α", "loss")
    return {"landscape-line": line, **figures}


def safe_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in label)


FIGURES: dict[str, Callable[[LabReport], dict[str, go.Figure]]] = {
    "gradients": gradient_figures, "curves": curve_figures, "responses": response_figures,
    "lesion": lesion_figures, "erf": erf_figures, "landscape": landscape_figures,
}


def figures(report: LabReport) -> dict[str, go.Figure]:
    """The study's figures, by a name that can be a file name."""
    return FIGURES[report.study](report)
