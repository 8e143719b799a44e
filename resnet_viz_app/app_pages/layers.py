"""Layers: the trace as a table, filtered by depth, part and type, searchable, with downloads."""

import streamlit as st

from resnet_viz.views import tables
from resnet_viz_app.app_pages.common import config, current_trace, downloads

cfg, t = config(), current_trace()
st.title("Layers")
st.caption(f"{t.describe()} · one row per module call, and per op a block runs itself "
           "(the residual addition). Parameters include everything inside a row; MACs are per image.")

parts = list(dict.fromkeys(t.stage_of(x) for x in t.layers if x.depth > 0))
types = sorted({x.type for x in t.layers})
max_depth = max(x.depth for x in t.layers)
a, b, c, d = st.columns([1, 2, 2, 2])
depth = a.number_input("Depth", min_value=0, max_value=max_depth, value=max_depth, step=1,
                       help="0 is the whole model, 1 its stem layers and stages, 2 the blocks, ...")
chosen_parts = b.multiselect("Parts", parts, placeholder="all parts")
chosen_types = c.multiselect("Types", types, placeholder="all types")
search = d.text_input("Search", placeholder="name or type, e.g. downsample")

rows = tables.select(t, int(depth), chosen_parts, chosen_types, search)
frame = t.table(layers=rows)
if frame.empty:
    st.info("No layer matches these filters.")
else:
    st.dataframe(frame, hide_index=True, width="stretch", height=min(35 * len(frame) + 38, 640),
                 column_config={"params": st.column_config.NumberColumn("params", format="localized"),
                                "macs": st.column_config.NumberColumn("MACs", format="localized"),
                                "all_ops": st.column_config.NumberColumn("all ops", format="localized"),
                                "output_bytes": st.column_config.NumberColumn("output bytes", format="localized"),
                                "receptive_field": "RF", "jump": "jump"})
st.caption(f"{len(rows)} of {len(t.layers)} rows shown.")

st.subheader("Totals")
st.table({label: value for label, value in tables.totals_lines(t)})

st.subheader("Download the rows shown")
downloads(f"{cfg.name}-layers", {
    "csv": lambda: tables.to_csv(t, layers=rows),
    "json": lambda: tables.to_json(t, layers=rows),
    "md": lambda: tables.to_markdown(t, layers=rows),
}, key="layers")
