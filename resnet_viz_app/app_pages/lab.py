"""Lab: the experiments of the ResNet literature, live on the networks shipped, trained or uploaded here."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from resnet_viz import PRESETS, ConfigError, ResNetVizError
from resnet_viz.data import load_dataset
from resnet_viz.io import csv_bytes
from resnet_viz.jobs import StudyJob
from resnet_viz.lab import DEPTH_PAIRS, STUDIES, LabReport, LabSettings, run_study
from resnet_viz.lab.charts import figures, safe_name
from resnet_viz.views.charts import charts_html
from resnet_viz_app.app_pages.common import (
    DATA_SOURCES,
    config,
    data_source,
    downloads,
    keep_upload,
    my_job,
    painted_source,
    polling,
    sentence,
    study_progress,
    submit,
    trained_networks,
    where_data_lies,
)

SAMPLES = "samples"
SOURCES = {SAMPLES: "The 100 sample images that ship with resnet-viz (no data needed)", **DATA_SOURCES}
UPLOAD = "upload a checkpoint"
SIDEBAR = "the sidebar's network"
job: StudyJob | None = my_job("lab")
running = job is not None and not job.ended()

st.title("Lab")
st.caption("The experiments the literature uses to explain residual networks, run live on the networks here: "
           "shipped, trained on the Train page, or uploaded. Several networks are drawn side by side; a residual "
           "network with solid lines, a plain one with dashed lines.")

name = st.selectbox("Study", list(STUDIES), format_func=lambda key: f"{STUDIES[key].title} ({STUDIES[key].paper})",
                    key="lab_study")
study = STUDIES[name]
st.info(study.shows, icon=":material/science:")
networks = trained_networks()

with st.form("lab", border=True):
    upload = None
    if study.takes == "configs":
        chosen = st.multiselect("Networks, freshly initialised", [SIDEBAR, *PRESETS], default=list(DEPTH_PAIRS),
                                key="lab_configs")
    elif study.takes == "runs":
        chosen = st.multiselect("Runs", list(networks), default=list(networks), key="lab_runs",
                                help="The shipped networks' training records, and your last training run's")
    else:
        a, b = st.columns([3, 2])
        chosen = a.multiselect("Networks", [*networks, UPLOAD], default=list(networks)[:2], key="lab_networks")
        upload = b.file_uploader("Checkpoint (.pt, from train)", type=["pt"], key="lab_upload")
    if study.data != "none":
        c, d = st.columns(2)
        options = list(SOURCES) if study.data == "optional" else list(DATA_SOURCES)
        source = c.selectbox("Data", options, format_func=SOURCES.get, key=f"lab_source_{study.data}")
        path = d.text_input("Folder or .tar.gz (for that choice)", key="lab_path")
    e, f, g, h = st.columns(4)
    images = e.number_input("Images", 1, 50_000, study.images or 1, key=f"lab_images_{name}",
                            disabled=study.data == "none",
                            help="Spread evenly over the split, so every class is in")
    seed = f.number_input("Seed", 0, 2**31 - 1, 0, key="lab_seed")
    draws = g.number_input("Draws per k (lesion)", 1, 50, 4, key="lab_draws", disabled=name != "lesion")
    batch = h.number_input("Batch (gradients)", 1, 512, 64, key="lab_batch", disabled=name != "gradients")
    i, j, k, _ = st.columns(4)
    steps = i.number_input("Surface points a side (landscape)", 2, 51, 11, key="lab_steps",
                           disabled=name != "landscape")
    line_steps = j.number_input("Line points (landscape)", 2, 51, 11, key="lab_line", disabled=name != "landscape")
    span = k.number_input("Span ± (landscape)", 0.05, 10.0, 1.0, step=0.25, key="lab_span",
                          disabled=name != "landscape")
    go = st.form_submit_button("Run", type="primary", disabled=running, icon=":material/play_arrow:")
where_data_lies()


def sources() -> tuple[list, Path | None]:
    """What the study takes, as run_study takes it; and a folder of this job's own for an upload."""
    if study.takes == "configs":
        picked = [config() if c == SIDEBAR else c for c in chosen]
        return picked, None
    if study.takes == "runs":
        return [str(Path(networks[c]).parent) if not networks[c].startswith("bundled:") else networks[c]
                for c in chosen], None
    picked = [networks[c] for c in chosen if c != UPLOAD]
    if UPLOAD not in chosen:
        return picked, None
    if upload is None:
        raise ConfigError("upload a checkpoint, or take 'upload a checkpoint' out of the networks")
    checkpoint, folder = keep_upload(upload, "resnet-viz-lab-")
    return [*picked, checkpoint], folder


def lab_job() -> StudyJob:
    picked, folder = sources()
    if not picked and study.takes != "configs":
        raise ConfigError("pick at least one network")
    spec = None
    if study.data != "none" and source != SAMPLES:
        spec = data_source(source, path)
    settings = LabSettings(images=int(images), seed=int(seed), draws=int(draws), steps=int(steps),
                           line_steps=int(line_steps), span=float(span), batch_size=int(batch))
    job = StudyJob(lambda progress: run_study(name, picked or list(DEPTH_PAIRS),
                                              load_dataset(spec) if spec else None, settings, progress), "lab")
    job.temporary += [folder] if folder else []
    job.uses += [Path(p).parent for p in picked if isinstance(p, str) and p.endswith(".pt") and folder is None]
    return job


if go:
    try:
        new = lab_job()
        try:
            submit("lab", new)
        except ConfigError:
            new.cancel()
            raise
        st.rerun()
    except ResNetVizError as error:
        st.error(sentence(error))


def show(report: LabReport) -> None:
    st.caption(f"{report.info.title} ({report.info.paper}) · {report.data}")
    for line in report.summary_lines():
        st.markdown(f"- {line}")
    drawn = figures(report)
    shared = {k: f for k, f in drawn.items() if not any(k.endswith(f"-{safe_name(n)}") for n in report.networks)}
    for key, fig in shared.items():
        st.plotly_chart(fig, width="stretch", key=f"lab-{key}")
    own = sorted((k, f) for k, f in drawn.items() if k not in shared)  # one per network: side by side, two a row
    for start in range(0, len(own), 2):
        for column, (key, fig) in zip(st.columns(2), own[start:start + 2]):
            column.plotly_chart(fig, width="stretch", key=f"lab-{key}")
    if report.study == "lesion":
        columns = st.columns(min(len(report.networks), 3))
        for column, net in zip(columns * 2, report.networks):
            column.caption(f"{net}: accuracy lost without each block")
            column.graphviz_chart(painted_source(report.config(net), tuple(report.block_drops(net).items()),
                                                 "accuracy lost without the block"), width="stretch")
    st.dataframe(pd.DataFrame(report.rows()), hide_index=True, width="stretch")
    downloads(f"lab-{report.study}", {
        "json": lambda: json.dumps(report.to_json(), indent=1),
        "csv": lambda: csv_bytes(report.rows()),
        "html": lambda: charts_html(figures(report), f"{report.info.title}: {', '.join(report.networks)}"),
    }, key="lab")


@polling("lab", "Pick a study and its networks above, then Run.")
def results(job: StudyJob, snap) -> None:
    if study_progress(job, snap, "lab_stop"):
        show(snap.report)


results()
