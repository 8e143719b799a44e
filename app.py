"""resnet-viz in the browser: `streamlit run app.py`."""

import streamlit as st

from resnet_viz import PRESETS, ConfigError, preset, tables, trace

st.set_page_config(page_title="resnet-viz", layout="wide")
st.title("resnet-viz")

with st.sidebar:
    name = st.selectbox("Preset", list(PRESETS), index=list(PRESETS).index("resnet20"))
    shortcut = st.radio("Shortcut", ["A", "B", "C"], index=["A", "B", "C"].index(PRESETS[name].shortcut),
                        horizontal=True, help="A: zero-pad identity · B: 1×1 projection where the shape "
                                              "changes · C: projection on every block")
    classes = st.number_input("Classes", min_value=1, value=PRESETS[name].num_classes, step=1)

try:
    result = trace(preset(name, shortcut=shortcut, num_classes=int(classes)))
except ConfigError as e:
    st.error(str(e))
    st.stop()

st.caption(tables.describe(result))
t = result.totals
cols = st.columns(4)
cols[0].metric("Parameters", f"{t['params']:,}")
cols[1].metric("MACs", tables.human(t["macs"]), help="Multiply-accumulates of conv and linear layers, per image")
cols[2].metric("FLOPs", tables.human(t["flops"]), help="2 × MACs, as torch.utils.flop_counter counts them")
cols[3].metric("Peak activations", tables.human_bytes(t["peak_activation_bytes"]))

depth = st.slider("Depth", 0, max(layer.depth for layer in result.layers), 2)
frame = result.to_dataframe()
frame = frame[frame["depth"] <= depth]
st.dataframe(frame[["name", "type", "input_shapes", "output_shape", "params", "macs", "receptive_field"]],
             hide_index=True, width="stretch")
