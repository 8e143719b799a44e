"""Diagram: the block diagram at three levels of detail, or torchview's graph; downloads for docs."""

import streamlit as st

from resnet_viz.views import export
from resnet_viz.views.diagram import LEVELS
from resnet_viz_app.app_pages.common import config, diagram_file, diagram_source, downloads, torchview_source

cfg = config()
st.title("Diagram")
view = st.segmented_control("View", ["Block diagram", "Computational graph (torchview)"],
                            default="Block diagram", key="view")
a, b, c = st.columns([2, 1, 2])
direction = b.radio("Direction", ["TB", "LR"], horizontal=True, key="direction",
                    format_func={"TB": "top to bottom", "LR": "left to right"}.get)

if view == "Computational graph (torchview)":
    depth = a.slider("Nesting depth", 1, 5, 2, key="tv_depth",
                     help="1: the model's children; each step opens one more level of modules")
    expand = c.toggle("Expand nested modules", value=True, key="tv_expand")
    st.caption("Every tensor operation, traced by torchview on the meta device (no weights, no data).")
    source = torchview_source(cfg, depth, expand, direction)
    st.graphviz_chart(source, width="stretch")
    files = {"dot": lambda: source}
    if export.has_dot():
        from graphviz import Source

        files.update({fmt: (lambda fmt=fmt: export.diagram_bytes(Source(source), fmt))
                      for fmt in ("svg", "png", "pdf")})
    name = f"{cfg.name}-torchview"
else:
    level = a.radio("Level", LEVELS, index=1, horizontal=True, key="level",
                    help="stage: one box per stage · block: every residual block · layer: every module")
    fold = c.toggle("Fold identical blocks", value=True, key="fold", disabled=level == "stage",
                    help="Runs of identical blocks are drawn once, marked ×N")
    source = diagram_source(cfg, level, direction, fold)
    st.graphviz_chart(source, width="stretch")
    files = {"dot": lambda: source}
    if export.has_dot():
        files.update({fmt: (lambda fmt=fmt: diagram_file(cfg, level, direction, fold, fmt))
                      for fmt in ("svg", "png", "pdf")})
    name = f"{cfg.name}-{level}"

st.subheader("Download")
downloads(name, files, key="diagram")
if not export.has_dot():
    st.info("SVG, PNG and PDF files need Graphviz's dot program, which is not installed here "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz). "
            "The diagram above is drawn by your browser, and the DOT file works anywhere.")
