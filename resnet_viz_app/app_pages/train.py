"""Train: a short run of the current network, in a background worker, watched live; and the trained networks that
ship with the package."""

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from resnet_viz import ConfigError, ResNetVizError
from resnet_viz.formatting import human_bytes
from resnet_viz.jobs import TrainingJob
from resnet_viz.training import TrainSettings
from resnet_viz.training.command import train_command
from resnet_viz.training.settings import DEFAULTS, help_of
from resnet_viz.views.charts import BLOCK_METRICS, block_activity_chart, history_curves, training_curves
from resnet_viz.weights import bundled
from resnet_viz_app.app_pages.common import (
    DATA_SOURCES,
    config,
    data_source,
    downloads,
    job_status,
    machine_precision,
    manager,
    my_job,
    painted_source,
    polling,
    sentence,
    server,
    submit,
    training_plan,
    where_data_lies,
)

state = st.session_state
cfg = config()
job: TrainingJob | None = my_job("training")
running = job is not None and not job.ended()

st.title("Train")
where, precision, why = machine_precision()
st.caption(f"{cfg.describe()} · the whole split lives on the device and is augmented there (random crop, flip); "
           "SGD with Nesterov momentum, one-cycle learning rate, label smoothing; bf16 where the hardware has it. "
           f"Here a run on {where} trains in {precision}: {why}.")

with st.form("settings", border=True):
    a, b = st.columns(2)
    source = a.selectbox("Data", list(DATA_SOURCES), format_func=DATA_SOURCES.get, key="train_source")
    path = b.text_input("Folder or .tar.gz (for that choice)", key="train_path",
                        placeholder="/data/cifar10-jpeg-train.tar.gz: train/<class>/*.jpg, optional val/ or test/")
    c, d, e, f = st.columns(4)
    epochs = c.number_input("Epochs", 1, 500, DEFAULTS.epochs, key="train_epochs")
    batch = d.number_input("Batch size (0: auto)", 0, 8192, 0, step=32, key="train_batch", help=help_of("batch_size"))
    lr = e.number_input("Peak learning rate (0: auto)", 0.0, 10.0, 0.0, format="%.3f", key="train_lr",
                        help=help_of("lr"))
    budget = f.number_input("Time budget (s, 0: none)", 0, 86_400, int(DEFAULTS.time_budget or 0), key="train_budget",
                            help=help_of("time_budget"))
    g, h, i, low = st.columns(4)
    limit = g.number_input("Images per class (0: all)", 0, 100_000, 0, key="train_limit")
    devices = ["auto", "cpu", "cuda", "mps"]
    device = h.selectbox("Device", devices, devices.index(DEFAULTS.device), key="train_device")
    compile_model = i.toggle("torch.compile", DEFAULTS.compile, key="train_compile",
                             help="Slower start, faster steps on a GPU")
    low_res = low.number_input("Low-resolution share", 0.0, 0.95, DEFAULTS.low_res, step=0.05, format="%.2f",
                               key="train_low_res", help=help_of("low_res"))
    with st.expander("On several GPUs or machines: the torchrun command", icon=":material/terminal:"):
        j, k, m = st.columns(3)
        nproc = j.number_input("Processes per machine", 1, 256, 8, key="train_nproc",
                               help="One per GPU; on CPUs, a few per machine")
        nnodes = k.number_input("Machines", 1, 4096, 1, key="train_nnodes")
        endpoint = m.text_input("Rendezvous host:port", "HOST:29500", key="train_endpoint",
                                help="Several machines meet at this address: one of them, reachable by all")
        sync_bn = st.toggle("SyncBatchNorm", DEFAULTS.sync_bn, key="train_sync_bn", help="BatchNorm statistics over "
                            "the global batch rather than each GPU's share (GPUs only; slower)")
        command = st.form_submit_button("Show the command", icon=":material/terminal:",
                                        help="The exact command for this network and these settings")
    start = st.form_submit_button("Start training", type="primary", disabled=running, icon=":material/play_arrow:")
where_data_lies()


def settings() -> TrainSettings:
    return TrainSettings(epochs=int(epochs), batch_size=int(batch) or None, lr=float(lr) or None, device=device,
                         compile=compile_model, time_budget=float(budget) or None, sync_bn=sync_bn,
                         low_res=float(low_res))


if not running:
    try:
        st.caption(f"This run will take {training_plan(settings())}.")
    except ConfigError as error:
        st.caption(sentence(error))


def start_run() -> None:
    """A run in a folder of its own under the server's runs folder; the least recent runs beyond its size limit go."""
    data = data_source(source, path)
    runs = server().runs_dir()
    try:
        runs.mkdir(parents=True, exist_ok=True)
        out_dir = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
    except OSError as e:
        raise ConfigError(f"cannot make a folder for the run in {runs} ({e.strerror}); set RESNET_VIZ_CACHE to a "
                          "writable folder") from None
    server().prune_runs(keep=[out_dir, *manager().in_use()])
    job = TrainingJob(cfg, data, settings(), out_dir, limit_per_class=int(limit) or None)
    try:
        submit("training", job)
    except ConfigError:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


if start:
    try:
        start_run()
        st.rerun()  # draw the page again with the run in progress (the Start button disabled)
    except ResNetVizError as error:
        st.error(sentence(error))

if command:
    try:
        state.train_command = cfg, *train_command(cfg, settings(), data_source(source, path), f"runs/{cfg.name}",
                                                  nproc_per_node=int(nproc), nnodes=int(nnodes),
                                                  endpoint=endpoint.strip() or "HOST:29500",
                                                  limit_per_class=int(limit) or None)
    except ResNetVizError as error:
        state.pop("train_command", None)
        st.error(sentence(error))

if state.get("train_command") and state.train_command[0] == cfg:  # shown until the network changes
    _, text, needs_file = state.train_command
    several = "on every machine, " if int(nnodes) > 1 else ""
    st.caption(f"Run this {several}in a Python environment with resnet-viz installed. The batch size is the "
               "global batch, split over the processes; the learning rate and its schedule mean the same as on "
               "one device. Rank 0 writes the checkpoint and metrics; `--resume runs/…/checkpoint.pt` goes on "
               "after a stop, on any number of processes.")
    st.code(text, language="bash", wrap_lines=True)
    if needs_file:
        st.caption(f"This network is not a preset: save its config as `{cfg.name}.json` beside the command.")
        st.download_button(f"{cfg.name}.json", cfg.to_json(), f"{cfg.name}.json", "application/json",
                           icon=":material/download:", on_click="ignore", key="train_config_json")


@polling("training", "Set the run up above and start it; the curves appear here as the network learns.")
def live(job: TrainingJob, snap) -> None:
    if not job.ended():
        st.button("Stop", on_click=manager().stop, args=(job,), icon=":material/stop:",
                  help="Finish after this step; the model is still evaluated and saved")
    st.progress(min(snap.progress, 1.0), text=job_status(job, snap))
    if snap.status == "failed":
        st.error(sentence(snap.message))
        return
    if snap.status == "stopped":
        st.info(sentence(snap.message))
        return
    if snap.data:
        st.caption(f"{snap.data} · device {snap.device} ({snap.precision}) · {snap.choice}")
    latest = snap.latest
    cols = st.columns(4)
    cols[0].metric("Images / s", f"{latest.images_per_s:,.0f}" if latest else "–")
    cols[1].metric("Step", f"{latest.step:,}" if latest else "–")
    cols[2].metric("Training time", f"{latest.elapsed:,.0f} s" if latest else "–")
    cols[3].metric("Validation accuracy", f"{snap.epochs[-1]['val_acc']:.1%}" if snap.epochs else "–")
    if snap.points:
        st.plotly_chart(training_curves(snap.points, snap.epochs), width="stretch", key="curves")
    if snap.inspections:
        metric = st.segmented_control("Inside the blocks", list(BLOCK_METRICS), default="residual_ratio",
                                      format_func=BLOCK_METRICS.get, key="watch_metric") or "residual_ratio"
        left, right = st.columns([3, 2])
        left.plotly_chart(block_activity_chart(snap.inspections, metric), width="stretch", key="blocks")
        heat = {name: values[metric] for name, values in snap.inspections[-1]["blocks"].items()}
        right.graphviz_chart(painted_source(cfg, tuple(sorted(heat.items())), BLOCK_METRICS[metric]),
                             width="stretch")
    result = snap.result
    if result is not None:
        st.success(f"Validation accuracy {result.val_acc:.2%} ({result.val_acc_flip:.2%} with flip test-time "
                   f"augmentation) after {result.epochs_done:g} epochs in {result.train_seconds:.0f} s of training, "
                   f"{result.images_per_s:,.0f} images/s; ended by {result.stopped}.")
        st.subheader("Per class")
        st.dataframe(pd.DataFrame(result.per_class), hide_index=True, width="stretch", column_config={
            "accuracy": st.column_config.NumberColumn(format="percent"),
            "accuracy_flip": st.column_config.NumberColumn("accuracy (flip TTA)", format="percent")})
        st.subheader("Download")
        files = {name: Path(file) for name, file in result.files.items()}
        if not all(file.is_file() for file in files.values()):
            st.caption("This run's files have been deleted to make room for newer runs.")
            return
        st.caption(f"checkpoint: {human_bytes(files['checkpoint'].stat().st_size)}; it reloads with "
                   "`python -m resnet_viz evaluate checkpoint.pt --data …`")
        downloads(f"{cfg.name}-run", {"pt": lambda: files["checkpoint"].read_bytes(),
                                      "json": lambda: files["metrics_json"].read_bytes(),
                                      "csv": lambda: files["metrics_csv"].read_bytes()}, key="run")


live()


def shipped() -> None:
    """The trained networks in the package: how each was trained and how well it does, ready for the Inside and
    Quantize pages without any training."""
    networks = {b.name: b for b in bundled()}
    if not networks:
        return
    st.header("Trained networks that ship with resnet-viz")
    st.caption("Open them on the Inside and Quantize pages, or as `bundled:NAME` wherever the command line takes a "
               "checkpoint. Accuracy is on the validation part of the training split (the last 10% of each class).")
    name = st.segmented_control("Network", list(networks), default=next(iter(networks)), key="shipped") or next(
        iter(networks))
    b = networks[name]
    cols = st.columns(4)
    cols[0].metric("Validation accuracy", f"{b.val_acc:.2%}")
    cols[1].metric("With flip TTA", f"{b.val_acc_flip:.2%}")
    cols[2].metric("Epochs", f"{b.card['epochs']:g}")
    cols[3].metric("Training time", f"{b.card['train_seconds'] / 60:,.0f} min")
    st.caption(f"{b.card['recipe']}. Data: {b.card['data']}. Trained on {b.card['machine']} with torch "
               f"{b.card['torch']} on {b.card['date']}. {b.card.get('note', '')}")
    st.code(b.card["command"], language="bash", wrap_lines=True)
    left, right = st.columns([3, 2])
    left.plotly_chart(history_curves(b.card["history"]), width="stretch", key="shipped_curves")
    right.dataframe(pd.DataFrame(b.card["per_class"]), hide_index=True, width="stretch", column_config={
        "accuracy": st.column_config.NumberColumn(format="percent"),
        "accuracy_flip": st.column_config.NumberColumn("accuracy (flip TTA)", format="percent")})
    downloads(f"{b.name}", {"pt": lambda: b.path.read_bytes(), "json": lambda: json.dumps(b.card, indent=1)},
              key="shipped")


shipped()
