"""Quantize: how a trained network fares with fewer bits, layer by layer, and after a short fine-tune."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from resnet_viz import ConfigError, ResNetVizError
from resnet_viz.data import load_dataset
from resnet_viz.jobs import StudyJob
from resnet_viz.quantization.qat import parse_schedule
from resnet_viz.quantization.reports import Int8Report, QatReport, SensitivityReport, SweepReport
from resnet_viz.quantization.studies import MODES, QAT_METHODS, QatOptions, run_study
from resnet_viz_app.app_pages.common import (
    DATA_SOURCES,
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

PERCENT = st.column_config.NumberColumn(format="percent")
state = st.session_state
LAYER_PLANS = {"edges": "first conv and fc at 8 bits", "same": "every layer at the same width",
               "sensitivity": "mixed: the most fragile fifth at 8 bits (a sensitivity study first)"}
job: StudyJob | None = my_job("quantization")
running = job is not None and not job.ended()

st.title("Quantize")
st.caption("Real int8: batch norms folded into the convolutions, then torchao's static quantization (int8 weights "
           "per output channel, uint8 activations per tensor) compiled to oneDNN's int8 kernels. Simulated: weights "
           "and layer inputs rounded to b-bit grids and computed in float, so any bit width can be studied.")

networks = trained_networks()  # the shipped ones, and this person's last run
with st.form("quantize", border=True):
    a, b = st.columns(2)
    which = a.selectbox("Network", [*networks, "upload a checkpoint"], key="q_network")
    upload = b.file_uploader("Checkpoint (.pt, from train)", type=["pt"], key="q_upload")
    c, d = st.columns(2)
    source = c.selectbox("Data", list(DATA_SOURCES), format_func=DATA_SOURCES.get, key="q_source")
    path = d.text_input("Folder or .tar.gz (for that choice)", key="q_path")
    e, f, g, h = st.columns(4)
    mode = e.selectbox("Study", list(MODES), format_func=lambda name: MODES[name].label, key="q_mode")
    bits = f.text_input("Bits", "8 6 4 3 2", key="q_bits", help="Sweep: every width listed; otherwise the first")
    epochs = g.number_input("Fine-tune epochs", 1, 100, 3, key="q_epochs")
    limit = h.number_input("Images per class (0: all)", 0, 100_000, 0, key="q_limit")
    with st.expander("Fine-tune settings (for the quantization-aware fine-tune)"):
        method = st.radio("Method", list(QAT_METHODS), format_func=lambda k: f"{k}: {QAT_METHODS[k]}",
                          horizontal=True, key="q_method", help="LSQ learns each quantizer's step with the network "
                          "(Esser et al. 2020); PACT learns where the inputs are clipped (Choi et al. 2018)")
        i, j = st.columns(2)
        schedule = i.text_input("Schedule (BITS:EPOCHS, …)", key="q_schedule", placeholder="4:2, 3:4, 2:6",
                                help="A progressive schedule: each stage starts from the last one's network. Empty: "
                                     "one stage, at the first of the bits above, for the epochs above")
        layer_plan = j.selectbox("Bits of each layer", list(LAYER_PLANS), format_func=LAYER_PLANS.get,
                                 key="q_plan")
        k, m = st.columns(2)
        distill = k.checkbox("Distil from the float32 network", True, key="q_distill",
                             help="Half the loss from the labels, half from the float32 network's predictions "
                                  "(LSQ and PACT)")
        compare = m.checkbox("Compare with post-training rounding and the other fine-tune", key="q_compare",
                             help="At every width: rounding alone, and STE (or LSQ, for STE) for as many epochs; "
                                  "the fine-tunes then take about twice as long")
    go = st.form_submit_button("Run", type="primary", disabled=running, icon=":material/play_arrow:")
where_data_lies()


def study() -> StudyJob:
    """The study as a job; an uploaded checkpoint is copied to a folder of the job's own, deleted when it ends."""
    try:
        widths = [int(v) for v in bits.replace(",", " ").split()]
    except ValueError:
        raise ConfigError("bits are whole numbers separated by spaces, e.g. 8 6 4") from None
    spec = data_source(source, path)
    if which in networks:
        checkpoint, folder = networks[which], None
    elif upload is None:
        raise ConfigError("upload a checkpoint, pick a shipped network, or train one on the Train page first")
    else:
        checkpoint, folder = keep_upload(upload, "resnet-viz-q-")
    options = QatOptions(schedule=parse_schedule(schedule) if schedule.strip() else None,
                         edge_bits=None if layer_plan == "same" else 8,
                         plan="sensitivity" if layer_plan == "sensitivity" else None, distill=distill,
                         compare=compare)
    job = StudyJob(lambda progress: run_study(
        checkpoint, load_dataset(spec, limit_per_class=int(limit) or None), mode, widths, int(epochs),
        progress=progress, method=method, qat=options,
        on_step=lambda step: progress(round(1000 * step.progress), 1000)), "quantization")
    job.temporary += [folder] if folder else []
    if not checkpoint.startswith("bundled:"):
        job.uses.append(Path(checkpoint).parent)
    return job


if go:
    try:
        job = study()
        try:
            submit("quantization", job)
        except ConfigError:
            job.cancel()  # its copy of the upload goes
            raise
        st.rerun()
    except ResNetVizError as error:
        st.error(sentence(error))


def show_int8(report: Int8Report) -> None:
    f32, i8 = report.float32_row, report.int8_row
    cols = st.columns(4)
    cols[0].metric("int8 accuracy", f"{i8['accuracy']:.2%}",
                   delta=f"{report.accuracy_delta_points:+.2f} points vs float32")
    cols[1].metric("Throughput, batch 256", f"{i8['images_per_s_batch_256']:,.0f} img/s",
                   delta=f"{report.speedup:.1f}× float32")
    cols[2].metric("Latency, batch 1", f"{i8['latency_ms_batch_1']:.2f} ms",
                   delta=f"{f32['latency_ms_batch_1']:.2f} ms float32", delta_color="off")
    cols[3].metric("Weights", f"{i8['weight_bytes']:,} B", delta=f"{report.size_ratio:.1f}× smaller",
                   delta_color="off")
    st.dataframe(pd.DataFrame(report.rows), hide_index=True, width="stretch", column_config={"accuracy": PERCENT})
    with st.expander(f"Step 1: {len(report.batch_norms_folded)} batch norms folded into their convolutions"):
        st.caption("Each BN's scale and shift become the conv's weight and bias (same outputs in eval mode), "
                   "so the int8 program has one layer fewer per convolution.")
        st.dataframe(pd.DataFrame({"conv ← batch norm": report.batch_norms_folded}), hide_index=True)


def show_sweep(report: SweepReport) -> None:
    st.plotly_chart(report.figures()["bits"], width="stretch")
    st.dataframe(pd.DataFrame(report.rows), hide_index=True, width="stretch", column_config={"accuracy": PERCENT})


def show_sensitivity(report: SensitivityReport) -> None:
    plan = report.plan
    st.success(f"Mixed precision: the {report.kept_high} most fragile layers at 8 bits and the rest at 4 keep "
               f"{plan['accuracy']:.2%}, in {plan['weight_bytes']:,} bytes of weights against "
               f"{plan['float32_bytes']:,} in float32.")
    left, right = st.columns([2, 3])
    left.dataframe(pd.DataFrame(report.rows), hide_index=True, width="stretch", column_config={
        "accuracy": PERCENT, "drop": st.column_config.NumberColumn("accuracy lost", format="percent")})
    if report.block_drops:
        right.graphviz_chart(painted_source(report.config, tuple(report.block_drops.items()),
                                            f"accuracy lost at {report.bits} bits"), width="stretch")


def show_qat(report: QatReport) -> None:
    last = report.last
    cols = st.columns(4)
    cols[0].metric("float32", f"{report.float32:.2%}", delta=None if report.float32_flip is None else
                   f"{report.float32_flip:.2%} with flip TTA", delta_color="off")
    cols[1].metric(f"{last.name} before", f"{last.before:.2%}")
    cols[2].metric(f"{last.name} after the fine-tune", f"{last.after:.2%}", delta=f"{report.gain:+.2%}")
    if last.sizes:
        cols[3].metric("Weights, packed", f"{last.sizes['packed']:,} B", delta_color="off",
                       delta=f"{last.sizes['float32'] / last.sizes['packed']:.1f}× smaller than float32")
    st.plotly_chart(report.figures()["bits"], width="stretch")
    st.dataframe(pd.DataFrame(report.rows), hide_index=True, width="stretch", column_config={
        name: PERCENT for name in ("float32", "before", "after", "float32_flip", "after_flip")})
    st.caption(" · ".join(line.strip() for line in report.summary_lines()[1:]))
    names = report.file_names()  # each stage's checkpoint, and packed file (made when its button is clicked)
    for column, name in zip(st.columns(len(names)), names):
        column.download_button(name, lambda name=name: report.files()[name], name, "application/octet-stream",
                               key=f"q-file-{name}", icon=":material/download:", width="stretch", on_click="ignore")


SHOW = {Int8Report: show_int8, SweepReport: show_sweep, SensitivityReport: show_sensitivity, QatReport: show_qat}


@polling("quantization", "Pick a trained network and a study above.")
def results(job: StudyJob, snap) -> None:
    if not study_progress(job, snap, "q_stop"):
        return
    report = snap.report
    st.caption(f"{report.network} · {report.data}")
    SHOW[type(report)](report)
    downloads(f"quantize-{report.mode}", {"json": lambda: json.dumps(report.to_json(), indent=2)}, key="q")


results()
