"""Several configs side by side: totals and per-part counts with deltas against the first config,
the CIFAR depth series next to the ResNet paper's published sizes, the three shortcut options, and
residual networks against the plain networks they become without their skips.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..config import ResNetConfig, preset
from ..errors import ConfigError
from ..tracing import Trace, trace

CIFAR_DEPTHS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")
PLAIN_DEPTHS = ("plain20", "plain32", "plain44", "plain56", "plain110")

# Published parameter counts in millions: He et al., "Deep Residual Learning for Image Recognition"
# (CVPR 2016), Table 6 (CIFAR-10), which used shortcut option A.
PUBLISHED_PARAMS_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
                      "resnet110": 1.7, "resnet1202": 19.4}

# Colours belong to a config's position in the comparison, so a config keeps its colour in every chart.
CONFIG_COLOURS = qualitative.Plotly


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value to compare by
class Comparison:
    """Traces of several configs and their counts side by side; deltas are against the first config.

    ``totals``: one row per config. ``stages``: one row per config and part (stem, layer1..., head).
    MACs and FLOPs are per image; activation bytes are for the traced batch.
    """

    traces: tuple[Trace, ...]
    totals: pd.DataFrame
    stages: pd.DataFrame

    def _ipython_display_(self) -> None:
        """In a notebook: the totals with their deltas, and the charts."""
        from .notebook import show

        show([f"{', '.join(self.totals['name'])}: side by side, deltas against the first"], self.totals,
             comparison_charts(self))


def compare(configs: Sequence[ResNetConfig], batch_size: int = 1) -> Comparison:
    """Trace every config and tabulate it against the first one."""
    if not configs:
        raise ConfigError("compare() needs at least one config; the first one is the baseline for the deltas")
    traces = tuple(trace(config, batch_size=batch_size) for config in configs)
    labels = unique_labels(configs)
    totals = pd.DataFrame([_totals_row(label, t) for label, t in zip(labels, traces)])
    stages = pd.concat([_stage_rows(label, t) for label, t in zip(labels, traces)], ignore_index=True)
    first = totals[["params", "macs"]].iloc[[0] * len(totals)].set_index(totals.index)
    return Comparison(traces, _with_deltas(totals, first), _stage_deltas(stages, labels[0]))


def unique_labels(configs: Sequence[ResNetConfig]) -> list[str]:
    """Config names made unique: "resnet20 (A)", "resnet20 (B)" where they differ by shortcut, else "resnet20 #2"."""
    shortcuts: dict[str, set[str]] = {}
    for config in configs:
        shortcuts.setdefault(config.name, set()).add(config.shortcut)
    labels = [f"{c.name} ({c.shortcut})" if len(shortcuts[c.name]) > 1 else c.name for c in configs]
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


def depth_study(shortcut: str = "A") -> pd.DataFrame:
    """The CIFAR ResNets of the paper (20 to 1202 layers): our counts next to the published ones.

    ``paper_params_m`` is the published value (He et al. 2016, Table 6); ``params_m`` is ours in millions.
    The paper used shortcut A, hence the default. ``macs`` is per 3×32×32 image.
    """
    rows = []
    for name in CIFAR_DEPTHS:
        config = preset(name, shortcut=shortcut)
        totals = trace(config).totals
        rows.append({"model": name, "layers": config.depth, "params": totals.params,
                     "params_m": round(totals.params / 1e6, 2), "paper_params_m": PUBLISHED_PARAMS_M[name],
                     "macs": totals.macs_per_image})
    return pd.DataFrame(rows)


def shortcut_study(network: str | ResNetConfig = "resnet20") -> Comparison:
    """A preset (or any config) with shortcut A (zero-pad), B (project where the shape changes) and C (always
    project)."""
    base = preset(network) if isinstance(network, str) else network
    return compare([dataclasses.replace(base, shortcut=shortcut) for shortcut in ("A", "B", "C")])


def plain_twin(config: ResNetConfig) -> ResNetConfig:
    """The same network without its skips: "resnet56" becomes "plain56", any other name gains " (plain)"."""
    name = config.name
    name = f"plain{name.removeprefix('resnet')}" if name.startswith("resnet") else f"{name} (plain)"
    return dataclasses.replace(config, shortcut="none", name=name)


def residual_twin(config: ResNetConfig) -> ResNetConfig:
    """A plain network with skips: shortcut A where it can pad (no weights added), else B; "plain56" becomes
    "resnet56"."""
    name = config.name
    name = f"resnet{name.removeprefix('plain')}" if name.startswith("plain") else f"{name} (residual)"
    try:
        return dataclasses.replace(config, shortcut="A", name=name)
    except ConfigError:  # a stage that narrows: zero-padding cannot match it
        return dataclasses.replace(config, shortcut="B", name=name)


def residual_vs_plain(network: str | ResNetConfig = "resnet20") -> Comparison:
    """A network with and without its skips (He et al. 2016, Fig. 6), the residual one first: the same layers;
    the skips add their projections' weights, if any, and one addition per element of each block's output. A
    plain network is compared with its residual twin (``residual_twin``)."""
    return compare(residual_pair(preset(network) if isinstance(network, str) else network))


def residual_pair(config: ResNetConfig) -> tuple[ResNetConfig, ResNetConfig]:
    """(the network with skips, the network without), from either."""
    base = config if config.residual else residual_twin(config)
    return base, plain_twin(base)


def plain_depth_study(shortcut: str = "A") -> pd.DataFrame:
    """The plain CIFAR networks (20 to 110 layers) next to the residual ones of the same depth with ``shortcut``:
    parameters, MACs and all ops per 3×32×32 image. With A they have the same weights and MACs; the skips cost
    only their additions."""
    rows = []
    for name in PLAIN_DEPTHS:
        plain = preset(name)
        residual = dataclasses.replace(plain, name=name.replace("plain", "resnet"), shortcut=shortcut)
        p, r = trace(plain).totals, trace(residual).totals
        rows.append({"plain": name, "residual": residual.name, "layers": plain.depth, "params": p.params,
                     "residual_params": r.params, "macs": p.macs_per_image, "residual_macs": r.macs_per_image,
                     "all_ops": p.all_ops, "residual_all_ops": r.all_ops, "skip_additions": r.all_ops - p.all_ops
                     - 2 * (r.macs - p.macs)})
    return pd.DataFrame(rows)


def comparison_charts(comparison: Comparison) -> dict[str, go.Figure]:
    """Grouped bars: parameters and MACs per config, and parameters per part of the network."""
    return {"params-and-macs": _totals_chart(comparison.totals), "params-by-stage": _stage_chart(comparison.stages)}


# -- tables -------------------------------------------------------------------------------------


def _totals_row(label: str, t: Trace) -> dict[str, object]:
    config = t.config
    return {"name": label, "description": config.describe(), "depth": config.depth, "blocks": sum(config.blocks),
            "params": t.totals.params, "macs": t.totals.macs_per_image,
            "flops": 2 * t.totals.macs_per_image, "activation_bytes": t.totals.activation_bytes,
            "peak_activation_bytes": t.totals.peak_activation_bytes}


def _stage_rows(label: str, t: Trace) -> pd.DataFrame:
    table = t.stage_table()
    return pd.DataFrame({"name": label, "part": table["stage"], "params": table["params"],
                         "macs": table["macs"] // t.batch_size})


def _with_deltas(table: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Add absolute and % deltas of params and MACs; ``baseline`` holds the reference values of each row."""
    table = table.copy()
    for column in ("params", "macs"):
        table[f"{column}_delta"] = table[column] - baseline[column]
        table[f"{column}_delta_pct"] = 100 * table[f"{column}_delta"] / baseline[column]
    return table


def _stage_deltas(stages: pd.DataFrame, baseline_label: str) -> pd.DataFrame:
    """Deltas against the same part of the first config; NaN where the first config has no such part."""
    baseline = stages[stages["name"] == baseline_label].set_index("part")[["params", "macs"]]
    return _with_deltas(stages, baseline.reindex(stages["part"]).set_index(stages.index))


# -- charts -------------------------------------------------------------------------------------


def _totals_chart(totals: pd.DataFrame) -> go.Figure:
    first = totals["name"].iloc[0]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Parameters (all)", "MACs per image"))
    for i, row in totals.iterrows():
        for col, (column, what) in enumerate((("params", "parameters"), ("macs", "MACs")), start=1):
            fig.add_trace(go.Bar(
                x=[what], y=[row[column]], name=row["name"], legendgroup=row["name"], showlegend=col == 1,
                marker_color=CONFIG_COLOURS[i % len(CONFIG_COLOURS)],
                hovertext=[f"{row['name']}<br>{row[column]:,} {what}{_delta_text(row, column, first)}"],
                hovertemplate="%{hovertext}<extra></extra>",
            ), row=1, col=col)
    fig.update_layout(title={"text": "Parameters and MACs per config (MACs: multiply-accumulates per image)"},
                      barmode="group")
    fig.update_yaxes(title_text="parameters", row=1, col=1)
    fig.update_yaxes(title_text="MACs", row=1, col=2)
    return fig


def _stage_chart(stages: pd.DataFrame) -> go.Figure:
    first = stages["name"].iloc[0]
    fig = go.Figure()
    for i, (label, rows) in enumerate(stages.groupby("name", sort=False)):
        fig.add_trace(go.Bar(
            x=list(rows["part"]), y=list(rows["params"]), name=label,
            marker_color=CONFIG_COLOURS[i % len(CONFIG_COLOURS)],
            hovertext=[f"{label}, {row['part']}<br>{row['params']:,} parameters{_delta_text(row, 'params', first)}"
                       for _, row in rows.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>",
        ))
    fig.update_layout(title={"text": "Parameters per part of the network, per config (all parameters)"},
                      barmode="group", xaxis_title="part of the network", yaxis_title="parameters")
    # a stage that only a later config has would otherwise land after the head
    fig.update_xaxes(categoryorder="array", categoryarray=sorted(set(stages["part"]), key=_part_position))
    return fig


def _part_position(part: str) -> float:
    """stem first, then layer1, layer2... in number order, head last."""
    if part in ("stem", "head"):
        return 0 if part == "stem" else float("inf")
    return int(part.removeprefix("layer"))


def _delta_text(row: pd.Series, column: str, first: str) -> str:
    delta, pct = row[f"{column}_delta"], row[f"{column}_delta_pct"]
    if pd.isna(delta) or delta == 0:
        return ""
    return f"<br>{int(delta):+,} ({pct:+.2f}%) vs {first}"
