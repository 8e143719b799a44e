"""What the pages share: the current config and cached calls into the core. No computing here."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from resnet_viz import ConfigError, ResNetConfig, Trace, trace
from resnet_viz.training import TrainSettings, pick_device, precision_and_why
from resnet_viz.training.defaults import plan
from resnet_viz.views import compare, export
from resnet_viz.views.charts import shape_journey
from resnet_viz.views.diagram import block_diagram
from resnet_viz.views.graph import computational_graph
from resnet_viz.views.walkthrough import Step, walkthrough


def sentence(text: object) -> str:
    """The core's messages start in lower case, to sit inside other sentences; on their own they get a capital."""
    text = str(text)
    return f"{text[:1].upper()}{text[1:]}."


def polling(key: str, idle: str):
    """Make ``draw(job, snapshot)`` a fragment that redraws every 2 s while the background job kept under ``key``
    runs; before there is a job it shows ``idle``. Once the job has ended, the whole page reruns a single time, so
    that what sits outside the fragment (a disabled Start button) sees it too."""
    def wrap(draw):
        @st.fragment(run_every=2.0)
        @functools.wraps(draw)  # the fragment is known by the page's function, not by this one
        def fragment() -> None:
            job = st.session_state.get(key)
            if job is None:
                st.info(idle)
                return
            snap = job.snapshot()
            if not job.running() and st.session_state.get(f"{key}_drawn_after") is not job:
                st.session_state[f"{key}_drawn_after"] = job
                st.rerun(scope="app")
            draw(job, snap)
        return fragment
    return wrap


def config() -> ResNetConfig:
    return st.session_state["config"]


@st.cache_resource(max_entries=64, show_spinner=False)
def traced(config: ResNetConfig, batch_size: int = 1) -> Trace:
    return trace(config, batch_size=batch_size)


def current_trace() -> Trace:
    return traced(config())


@st.cache_resource(max_entries=32, show_spinner=False)
def journey(config: ResNetConfig) -> go.Figure:
    return shape_journey(traced(config))


@st.cache_resource(max_entries=32, show_spinner=False)
def steps(config: ResNetConfig) -> list[Step]:
    return walkthrough(traced(config))


@st.cache_resource(max_entries=16, show_spinner=False)
def comparison(configs: tuple[ResNetConfig, ...]) -> tuple[compare.Comparison, dict[str, go.Figure]]:
    result = compare.compare(configs)
    return result, compare.comparison_charts(result)


@st.cache_data(max_entries=4, show_spinner=False)
def depth_series(shortcut: str) -> pd.DataFrame:
    return compare.depth_study(shortcut)


@st.cache_data(max_entries=64, show_spinner=False)
def diagram_source(config: ResNetConfig, level: str, direction: str = "TB", fold: bool = True) -> str:
    return block_diagram(traced(config), level, direction, fold).source


@st.cache_resource(show_spinner=False)
def machine_precision() -> tuple[str, str, str]:
    """The device "auto" trains on here, the precision it uses and why."""
    device = pick_device("auto")
    return (str(device), *precision_and_why("auto", device))


def training_plan(settings: TrainSettings) -> str:
    """The batch size and learning rate a run with these settings takes here, in words, before it starts."""
    return plan(settings.batch_size, settings.lr, pick_device(settings.device), time_budget=settings.time_budget)


DATA_SOURCES = {
    "synthetic": "Synthetic (random) data: no download, for a demo",
    "cifar10": "CIFAR-10 (torchvision)",
    "cifar100": "CIFAR-100 (torchvision)",
    "folder": "A folder of images or a .tar.gz (ImageFolder layout)",
}


def data_source(choice: str, path: str) -> str:
    """What load_dataset takes for a choice of DATA_SOURCES."""
    if choice != "folder":
        return choice
    if not path.strip():
        raise ConfigError("give the folder or .tar.gz to use")
    return path.strip()


@st.cache_data(max_entries=16, show_spinner=False)
def painted_source(config: ResNetConfig, heat: tuple[tuple[str, float], ...], label: str) -> str:
    return block_diagram(traced(config), "block", heat=dict(heat), heat_label=label, legend=False).source


@st.cache_data(max_entries=16, show_spinner="Running torchview on the meta device…")
def torchview_source(config: ResNetConfig, depth: int, expand_nested: bool, direction: str) -> str:
    return computational_graph(config, depth=depth, expand_nested=expand_nested, direction=direction).source


@st.cache_data(max_entries=32, show_spinner=False)
def diagram_file(config: ResNetConfig, level: str, direction: str, fold: bool, fmt: str) -> bytes:
    return export.block_diagram_bytes(traced(config), fmt, level, direction, fold)


MIME = {"svg": "image/svg+xml", "png": "image/png", "pdf": "application/pdf", "dot": "text/vnd.graphviz",
        "csv": "text/csv", "json": "application/json", "md": "text/markdown", "tex": "application/x-tex",
        "html": "text/html", "pt": "application/octet-stream"}


def downloads(name: str, files: dict[str, Callable[[], bytes | str]], key: str) -> None:
    """A row of download buttons, one per format; each file is made only when its button is clicked."""
    for column, (fmt, make) in zip(st.columns(len(files)), files.items()):
        column.download_button(fmt.upper(), make, f"{name}.{fmt}", MIME[fmt], key=f"{key}-{fmt}",
                                icon=":material/download:", width="stretch", on_click="ignore")
