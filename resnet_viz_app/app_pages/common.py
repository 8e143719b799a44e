"""What the pages share: the current config and cached calls into the core. No computing here."""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components
from torch import nn

from resnet_viz import ResNetConfig, Trace, trace
from resnet_viz.caches import SizedLRU
from resnet_viz.errors import CheckpointError, ConfigError
from resnet_viz.formatting import human_bytes
from resnet_viz.jobs import BackgroundJob, JobManager
from resnet_viz.limits import limits, over
from resnet_viz.server import ServerSettings
from resnet_viz.training import TrainSettings, load_checkpoint, pick_device, precision_and_why
from resnet_viz.training.defaults import plan
from resnet_viz.views import compare, export
from resnet_viz.views.charts import shape_journey
from resnet_viz.views.diagram import block_diagram
from resnet_viz.views.graph import computational_graph
from resnet_viz.views.walkthrough import Step, walkthrough
from resnet_viz.weights import bundled, resolve


def sentence(text: object) -> str:
    """The core's messages start in lower case, to sit inside other sentences; on their own they get a capital."""
    text = str(text)
    return f"{text[:1].upper()}{text[1:]}."


def polling(kind: str, idle: str):
    """Make ``draw(job, snapshot)`` a fragment that redraws every 2 s while this person's newest job of ``kind``
    waits or runs; before there is a job it shows ``idle``. Once the job has ended, the whole page reruns a single
    time, so that what sits outside the fragment (a disabled Start button) sees it too. Each redraw tells the job
    manager that the page is still open."""
    def wrap(draw):
        @st.fragment(run_every=2.0)
        @functools.wraps(draw)  # the fragment is known by the page's function, not by this one
        def fragment() -> None:
            manager().seen(owner())
            job = my_job(kind)
            if job is None:
                st.info(idle)
                return
            snap = job.snapshot()
            if job.ended() and st.session_state.get(f"{kind}_drawn_after") is not job:
                st.session_state[f"{kind}_drawn_after"] = job
                st.rerun(scope="app")
            draw(job, snap)
        return fragment
    return wrap


def config() -> ResNetConfig:
    return st.session_state["config"]


@st.cache_resource(show_spinner=False)
def memory_cache() -> SizedLRU:
    """Traces and what is drawn from them, for every session of this server: at most ``limits().cache_bytes``."""
    return SizedLRU(limits().cache_bytes, size=_approx_bytes)


def _approx_bytes(value: object) -> int:
    """A cached value's size. By shape, not by class: after a module reload, older values hold the old classes."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return value[1] // 2  # a chart or a walk-through holds a few numbers per layer of its trace
    return getattr(value, "approx_bytes", sys.getsizeof(value))


def _cached(kind: str, *key: object, make: Callable[[], object]) -> object:
    return memory_cache().get_or_make((kind, *key), make)


def traced(config: ResNetConfig, batch_size: int = 1) -> Trace:
    return _cached("trace", config, batch_size, make=lambda: trace(config, batch_size=batch_size))


def current_trace() -> Trace:
    return traced(config())


def journey(config: ResNetConfig) -> go.Figure:
    t = traced(config)
    return _cached("journey", config, make=lambda: (shape_journey(t), t.approx_bytes))[0]


def steps(config: ResNetConfig) -> list[Step]:
    t = traced(config)
    return _cached("steps", config, make=lambda: (walkthrough(t), t.approx_bytes))[0]


@st.cache_resource(max_entries=16, show_spinner=False)
def comparison(configs: tuple[ResNetConfig, ...]) -> tuple[compare.Comparison, dict[str, go.Figure]]:
    result = compare.compare(configs)
    return result, compare.comparison_charts(result)


@st.cache_data(max_entries=4, show_spinner=False)
def depth_series(shortcut: str) -> pd.DataFrame:
    return compare.depth_study(shortcut)


@st.cache_data(max_entries=4, show_spinner=False)
def plain_series(shortcut: str) -> pd.DataFrame:
    return compare.plain_depth_study(shortcut)


def diagram_source(config: ResNetConfig, level: str, direction: str = "TB", fold: bool = True) -> str:
    return _cached("diagram", config, level, direction, fold,
                   make=lambda: block_diagram(traced(config), level, direction, fold).source)


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
    """What load_dataset takes for a choice of DATA_SOURCES; on a shared server, only paths under its data roots."""
    return choice if choice != "folder" else server().data_path(path)


def where_data_lies() -> None:
    """On a shared server, where its data folders are: the only paths it reads."""
    settings = server()
    if settings.shared:
        roots = ", ".join(f"`{root}`" for root in settings.data_roots) or "nowhere (synthetic data and CIFAR only)"
        st.caption(f"This server reads data folders and archives under {roots}.")


# -- the server and its jobs ------------------------------------------------------------------------

OWNER_COOKIE = "resnet_viz_owner"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


@st.cache_resource(show_spinner=False)
def server() -> ServerSettings:
    return ServerSettings.from_env()


@st.cache_resource(show_spinner=False)
def manager() -> JobManager:
    """The one job manager of this server, with its sweeper thread."""
    settings = server()
    jobs = JobManager(max_running=settings.max_jobs, per_owner=settings.jobs_per_session,
                      grace=settings.grace_seconds)
    jobs.start_sweeping()
    return jobs


def owner() -> str:
    """Who this browser is: a random token kept in a cookie, so that a reloaded page finds its jobs again."""
    state = st.session_state
    if "owner" not in state:
        cookie = st.context.cookies.get(OWNER_COOKIE)
        state.owner = cookie if isinstance(cookie, str) and _TOKEN.fullmatch(cookie) else secrets.token_urlsafe(18)
    return state.owner


def remember_owner() -> None:
    """Keep the owner's token in a cookie of this site; the browser sends it with every later connection, so a
    reloaded page is the same owner. Marks the owner as present for the job manager."""
    token = owner()
    manager().seen(token)
    if st.context.cookies.get(OWNER_COOKIE) != token:
        cookie = f"document.cookie = '{OWNER_COOKIE}={token}; path=/; max-age=2592000; SameSite=Strict';"
        try:
            st.html(f"<script>{cookie}</script>", unsafe_allow_javascript=True)
        except TypeError:  # a Streamlit without it: a hidden frame of the same origin sets it
            components.html(f"<script>parent.{cookie}</script>", height=0)


JOB_KINDS = {"training": "Training run", "quantization": "Quantization study"}


def keep_jobs_alive() -> None:
    """While this person has a job waiting or running, every page tells the manager the browser is still there
    (every 30 s), and the sidebar says how the jobs are doing."""
    active = {kind: job for kind in JOB_KINDS if (job := my_job(kind)) is not None and not job.ended()}
    if not active:
        return

    @st.fragment(run_every=30.0)
    def heartbeat() -> None:
        manager().seen(owner())
        for kind, job in active.items():
            st.caption(f"{JOB_KINDS[kind]}: {job_status(job, job.snapshot())}")

    heartbeat()


def my_job(kind: str) -> BackgroundJob | None:
    return manager().find(owner(), kind)


def submit(kind: str, job: BackgroundJob) -> BackgroundJob:
    """Hand a job to the server's manager (it may wait in line); a ConfigError when this person has too many."""
    return manager().submit(owner(), kind, job)


def job_status(job: BackgroundJob, snap) -> str:
    """The progress bar's text: the job's status, or its place in line."""
    return manager().status_line(job, snap)


def painted_source(config: ResNetConfig, heat: tuple[tuple[str, float], ...], label: str) -> str:
    return _cached("painted", config, heat, label, make=lambda: block_diagram(
        traced(config), "block", heat=dict(heat), heat_label=label, legend=False).source)


def torchview_source(config: ResNetConfig, depth: int, expand_nested: bool, direction: str) -> str:
    with st.spinner("Running torchview on the meta device…"):
        return _cached("torchview", config, depth, expand_nested, direction, make=lambda: computational_graph(
            config, depth=depth, expand_nested=expand_nested, direction=direction).source)


def diagram_file(config: ResNetConfig, level: str, direction: str, fold: bool, fmt: str) -> bytes:
    return _cached("file", config, level, direction, fold, fmt,
                   make=lambda: export.block_diagram_bytes(traced(config), fmt, level, direction, fold))


MIME = {"svg": "image/svg+xml", "png": "image/png", "pdf": "application/pdf", "dot": "text/vnd.graphviz",
        "csv": "text/csv", "json": "application/json", "md": "text/markdown", "tex": "application/x-tex",
        "html": "text/html", "pt": "application/octet-stream"}


def downloads(name: str, files: dict[str, Callable[[], bytes | str]], key: str) -> None:
    """A row of download buttons, one per format; each file is made only when its button is clicked."""
    for column, (fmt, make) in zip(st.columns(len(files)), files.items()):
        column.download_button(fmt.upper(), make, f"{name}.{fmt}", MIME[fmt], key=f"{key}-{fmt}",
                                icon=":material/download:", width="stretch", on_click="ignore")


# -- trained networks ------------------------------------------------------------------------------

def keep_upload(upload, prefix: str) -> tuple[str, Path]:
    """An uploaded checkpoint for a background job: size-checked, then written to a folder of its own, which the
    job deletes when it ends (the job reads the file with ``weights_only=True``). Its path, and the folder."""
    if upload.size > (most := limits().upload_bytes):
        raise ConfigError(f"the uploaded checkpoint is {human_bytes(upload.size)}, over {over('upload_bytes', most)}")
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        (folder / "checkpoint.pt").write_bytes(upload.getvalue())
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise ConfigError(f"cannot keep the uploaded checkpoint on this server ({e.strerror})") from None
    return str(folder / "checkpoint.pt"), folder


def study_progress(job: BackgroundJob, snap, key: str) -> bool:
    """A study's Stop button while it runs, its progress bar, and the sentence of one that failed or was stopped;
    True once its report is there to show."""
    if not job.ended():
        st.button("Stop", on_click=manager().stop, args=(job,), icon=":material/stop:", key=key,
                  help="End the study at its next step; what it found so far is not kept")
    st.progress(min(snap.progress, 1.0), text=job_status(job, snap))
    if snap.status == "failed":
        st.error(sentence(snap.message))
    elif snap.status == "stopped":
        st.info(sentence(snap.message))
    return snap.status not in ("failed", "stopped") and getattr(snap, "report", None) is not None


def last_run_checkpoint() -> str | None:
    """The checkpoint of this person's last finished training run, while its folder is still there."""
    trained = my_job("training")
    result = trained.snapshot().result if trained is not None else None
    if result is None or not Path(result.files["checkpoint"]).is_file():
        return None  # none yet, or its folder was deleted to make room for newer runs
    return result.files["checkpoint"]


def trained_networks() -> dict[str, str]:
    """What a page can open without an upload: label -> CHECKPOINT (``bundled:NAME``, or this person's last run)."""
    choices = {f"{b.name} ({b.val_acc:.1%} validation, shipped)": b.ref for b in bundled()}
    if (last := last_run_checkpoint()) is not None:
        choices["last training run"] = last
    return choices


@dataclass
class Opened:
    """A trained network loaded once for every session, with a lock: hooks and attributions run one at a time."""

    model: nn.Module
    config: ResNetConfig
    meta: dict
    lock: threading.Lock = field(default_factory=threading.Lock)


@st.cache_resource(max_entries=6, show_spinner="Loading the network…")
def opened(checkpoint: str, stamp: float) -> Opened:
    """``checkpoint`` loaded (``stamp``, its file's modification time, tells a rewritten file from the old one)."""
    return Opened(*load_checkpoint(checkpoint))


def open_checkpoint(checkpoint: str) -> tuple[Opened, str]:
    """A CHECKPOINT the page offers, loaded or from the cache; and the key its results are cached under."""
    stamp = resolve(checkpoint).stat().st_mtime
    return opened(checkpoint, stamp), f"{checkpoint}@{stamp}"


def open_upload(data: bytes, name: str) -> tuple[Opened, str]:
    """An uploaded checkpoint: kept in a folder of its own only while it is read (with ``weights_only=True``)."""
    if len(data) > (most := limits().upload_bytes):
        raise CheckpointError(f"{name} is {human_bytes(len(data))}, over {over('upload_bytes', most)}")
    digest = hashlib.sha256(data).hexdigest()
    return _opened_upload(digest, data, name), f"upload:{digest}"


@st.cache_resource(max_entries=4, show_spinner="Loading the network…", hash_funcs={bytes: lambda b: None})
def _opened_upload(digest: str, data: bytes, name: str) -> Opened:
    folder = Path(tempfile.mkdtemp(prefix="resnet-viz-upload-"))
    try:
        path = folder / "checkpoint.pt"
        path.write_bytes(data)
        try:
            return Opened(*load_checkpoint(path))
        except CheckpointError as e:
            raise CheckpointError(str(e).replace("checkpoint.pt", name)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
