"""Compare: configs side by side, or the built-in studies: the CIFAR depth series, shortcuts A/B/C, and residual
networks against plain ones."""

import dataclasses

import streamlit as st

from resnet_viz import PRESETS, ConfigError, preset
from resnet_viz.views import compare, export
from resnet_viz_app.app_pages.common import comparison, config, depth_series, downloads, plain_series

NUMBERS = {
    **{column: st.column_config.NumberColumn(column.replace("_", " ").replace("macs", "MACs"), format="localized")
       for column in ("params", "macs", "flops", "activation_bytes", "peak_activation_bytes", "params_delta",
                      "macs_delta")},
    **{column: st.column_config.NumberColumn(column.replace("_", " ").replace("macs", "MACs").replace(" pct", " %"),
                                             format="%+.1f%%")
       for column in ("params_delta_pct", "macs_delta_pct")},
}

cfg = config()
st.title("Compare")
study = st.segmented_control("Study", ["Pick networks", "Depth series (CIFAR)", "Shortcuts A, B, C",
                                      "Residual vs plain"], default="Pick networks", key="study")

if study == "Depth series (CIFAR)":
    shortcut = st.radio("Shortcut", ["A", "B", "C"], horizontal=True, key="depth_shortcut",
                        help="The paper used A for its CIFAR networks")
    series = depth_series(shortcut)
    st.caption("Our parameter counts next to the ResNet paper's CIFAR-10 table (He et al. 2016, Table 6), which "
               "used shortcut A. MACs per 3×32×32 image.")
    st.dataframe(series, hide_index=True, width="stretch", column_config={
        "params": st.column_config.NumberColumn(format="localized"),
        "macs": st.column_config.NumberColumn("MACs", format="localized"),
        "params_m": "params (M)", "paper_params_m": "paper (M)"})
    result, figures = comparison(tuple(preset(name, shortcut=shortcut) for name in compare.CIFAR_DEPTHS))
    title = "CIFAR depth series"
elif study == "Shortcuts A, B, C":
    try:
        result, figures = comparison(tuple(dataclasses.replace(cfg, shortcut=s) for s in ("A", "B", "C")))
    except ConfigError as e:
        st.error(f"The current network cannot take every shortcut option: {e}.")
        st.stop()
    title = f"shortcut options on {cfg.name}"
    st.caption("The current network with each shortcut option; deltas against A.")
elif study == "Residual vs plain":
    result, figures = comparison(compare.residual_pair(cfg))
    title = f"{result.totals['name'].iloc[0]} with and without skips"
    st.caption("The same network with and without its skip connections; deltas against the residual one. The "
               "ResNet paper (He et al. 2016, Fig. 6) found that the plain networks train worse as they get "
               "deeper while the residual ones improve: train both on the Train page to see it.")
    shortcut = st.radio("Residual networks with shortcut", ["A", "B", "C"], horizontal=True, key="plain_shortcut",
                        help="A adds no weights, so the two columns differ only by the skips' additions")
    st.subheader("The CIFAR depth series without skips")
    st.dataframe(plain_series(shortcut), hide_index=True, width="stretch", column_config={
        column: st.column_config.NumberColumn(column.replace("_", " ").replace("macs", "MACs"), format="localized")
        for column in ("params", "residual_params", "macs", "residual_macs", "all_ops", "residual_all_ops",
                       "skip_additions")})
    st.caption("Per 3×32×32 image. All ops count every multiply, add, BN, ReLU and pooling operation (see the "
               "README); skip additions are the elements the skips add, one per element of each block's output.")
else:
    include = st.toggle("Include the current network", value=True, key="include_current")
    names = st.multiselect("Presets", list(PRESETS), default=["resnet56", "resnet110"], key="compare_presets")
    current = dataclasses.replace(cfg, name=f"{cfg.name} (current)")
    configs = ([current] if include else []) + [preset(name) for name in names]
    if not configs:
        st.info("Pick at least one network.")
        st.stop()
    result, figures = comparison(tuple(configs))
    title = "comparison"

st.subheader("Totals")
st.caption("Deltas against the first row. MACs and FLOPs per image; activation bytes for one image.")
st.dataframe(result.totals.drop(columns=["description"]), hide_index=True, width="stretch", column_config=NUMBERS)
for figure in figures.values():
    st.plotly_chart(figure, width="stretch")
st.subheader("Per stage")
st.dataframe(result.stages, hide_index=True, width="stretch", column_config=NUMBERS)

st.subheader("Download")
downloads(title.replace(" ", "-"), {
    fmt: (lambda fmt=fmt: export.comparison_bytes(result, fmt, title)) for fmt in ("csv", "json", "md")
}, key="compare")
