"""Overview: the seed study's walk-through, live for the current config."""

import streamlit as st

from resnet_viz.formatting import human, human_bytes
from resnet_viz_app.app_pages.common import config, current_trace, diagram_source, journey, steps, traced

cfg, t = config(), current_trace()
totals = t.totals
kind = f"ResNet-{cfg.depth}" if cfg.family == "ResNet" else f"{cfg.family}, {cfg.depth} layers"
st.title(f"{cfg.name} · {kind}")
st.caption(cfg.describe())

columns = st.columns(5)
columns[0].metric("Parameters", f"{totals.params:,}", help="All parameters; trainable ones "
                  f"{totals.trainable_params:,}. {human_bytes(totals.param_bytes)} as float32.")
columns[1].metric("MACs", human(totals.macs), help=f"{totals.macs:,} multiply-accumulates of the conv and "
                  "linear layers per image: the ResNet paper's and torchvision's 'FLOPs'.")
columns[2].metric("FLOPs", human(totals.flops), help="2 × MACs, what torch.utils.flop_counter reports.")
columns[3].metric("Activations, peak", human_bytes(totals.peak_activation_bytes),
                  help="Largest sum of tensors alive at once in a forward pass of one image; "
                       f"{human_bytes(totals.activation_bytes)} are written in all.")
columns[4].metric("Training step, batch 128", human_bytes(traced(cfg, 128).training_bytes("momentum")),
                  help="Estimate: saved activations + weights + gradients + SGD momentum.")
st.caption("MACs count the multiply-accumulates of convolutions and the fc layer; FLOPs are twice that; "
           "memory is for float32.")

left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader("Stages")
    st.graphviz_chart(diagram_source(cfg, "stage"), width="stretch")
with right:
    st.subheader("Walk-through")
    for step in steps(cfg):
        st.markdown(f"**{step.title}** · `{step.shape_in}` → `{step.shape_out}`  \n{step.text}")

st.subheader("Shape journey")
st.plotly_chart(journey(cfg), width="stretch")
