"""resnet-viz in the browser: `resnet-viz app` from anywhere, or `streamlit run app.py` in a checkout.

The entry point: the pages, and the sidebar they share, which edits the current config.
The config lives in session state and in the URL, so a copied link reopens the same network.
"""

import hmac
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from resnet_viz import PRESETS, ConfigError, ResNetConfig, preset
from resnet_viz.config import BLOCK_TYPES, SHORTCUTS, STEMS
from resnet_viz.formatting import plain
from resnet_viz_app.app_pages.common import keep_jobs_alive, remember_owner, server

DEFAULT_PRESET = "resnet20"
PAGES = (("overview", "Overview", "home"), ("layers", "Layers", "table_rows"), ("diagram", "Diagram", "account_tree"),
         ("compare", "Compare", "compare_arrows"), ("train", "Train", "model_training"),
         ("quantize", "Quantize", "compress"), ("inside", "Inside", "visibility"), ("lab", "Lab", "science"))
SHORTCUT_HELP = ("A: identity, and where the shape changes a parameter-free zero-pad subsample (the paper's "
                 "CIFAR choice) · B: 1×1 conv + BN projection where the shape changes (no BN in a pre-activation "
                 "block) · C: projection on every block · none: no skip at all, a plain network")
BLOCK_HELP = ("basic: two 3×3 convs · bottleneck: 1×1, 3×3, 1×1 with 4× expansion · preact, preact-bottleneck: "
              "the same with BN → ReLU before each conv and nothing after the addition (He et al. 2016b)")
GROUPS_HELP = ("ResNeXt: a bottleneck's 3×3 conv has width × width per group / 64 × groups channels in that many "
               "groups (torchvision's rule). Groups 1 and width per group 64 is a plain bottleneck; 1 and 128 a "
               "Wide ResNet-50-2")
STEM_HELP = "cifar: 3×3 conv, stride 1 · imagenet: 7×7 conv stride 2, then 3×3 max-pool stride 2"

HERE = Path(__file__).resolve().parent  # the pages travel with this file: it runs from a checkout or an install
# a local icon: a Material icon would be fetched from the internet for the browser tab
st.set_page_config(page_title="resnet-viz", page_icon=str(HERE / "icon.svg"), layout="wide")
# a sidebar wide enough for the stage editor's three columns
st.html("<style>section[data-testid='stSidebar'] { min-width: 330px; }</style>")
state = st.session_state


def load(config: ResNetConfig) -> None:
    """Show ``config`` in the sidebar's widgets and make it the current one."""
    state.preset = config.name if config.name in PRESETS else DEFAULT_PRESET
    state.name = config.name  # a network of its own keeps its name; the preset box only shows where to start
    state.block, state.shortcut, state.stem = config.block, config.shortcut, config.stem
    state.classes, state.channels = config.num_classes, config.in_channels
    state.height, state.width = config.input_size
    state.stem_width = config.stem_width
    state.groups, state.width_per_group, state.dropout = config.groups, config.width_per_group, config.dropout
    state.stages = pd.DataFrame({"width": config.widths, "blocks": config.blocks, "stride": config.strides})
    state.editor = state.get("editor", 0) + 1  # a new key gives the stage editor a fresh start
    state.config, state.config_error, state.link_error = config, None, None


def load_preset() -> None:
    load(preset(state.preset))


def load_upload() -> None:
    upload = state.get(f"upload{state.editor}")
    if upload is None:
        return
    try:
        load(server().admit(ResNetConfig.from_json(upload.getvalue().decode("utf-8", "replace"))))
        state.upload_error = None
    except ConfigError as e:
        state.upload_error = f"{upload.name}: {e}"


def config_from_widgets(stages: pd.DataFrame) -> ResNetConfig:
    stages = stages.dropna(how="all")
    if stages.isna().any().any():
        raise ConfigError("every stage needs a width, a number of blocks and a stride")
    columns = {}
    for column in ("width", "blocks", "stride"):
        values = [float(v) for v in stages[column]]
        if any(v != int(v) for v in values):
            raise ConfigError(f"{column} must be whole numbers, got {', '.join(f'{v:g}' for v in values)}")
        columns[column] = tuple(int(v) for v in values)
    return server().admit(ResNetConfig(
        name=state.get("name", state.preset), block=state.block, widths=columns["width"], blocks=columns["blocks"],
        strides=columns["stride"], shortcut=state.shortcut, stem=state.stem, stem_width=state.stem_width,
        num_classes=int(state.classes), in_channels=int(state.channels),
        input_size=(int(state.height), int(state.width)), dropout=float(state.dropout),
        **grouping(),
    ))


def grouping() -> dict[str, int]:
    """Groups and width per group where the block has a 3×3 conv to group (a bottleneck); their fields are off
    otherwise and keep their values for a return to a bottleneck."""
    if not state.block.endswith("bottleneck"):
        return {}
    return {"groups": int(state.groups), "width_per_group": int(state.width_per_group)}


def password() -> str | None:
    """The password set in Streamlit's secrets (``password = "…"`` in .streamlit/secrets.toml), if any."""
    try:
        return st.secrets.get("password") or None
    except (FileNotFoundError, StreamlitSecretNotFoundError):  # no secrets file at all
        return None


def ask_password(expected: str) -> None:
    """Stop this run until the right password has been typed in this session."""
    if state.get("signed_in"):
        return
    st.title("resnet-viz")
    typed = st.text_input("Password", type="password", key="password_typed")
    if typed and hmac.compare_digest(typed.encode(), expected.encode()):
        state.signed_in = True
        st.rerun()
    if typed:
        st.error("That is not the password of this server.")
    st.stop()


if (expected := password()) is not None:
    ask_password(expected)
remember_owner()

if "config" not in state:  # a new session: the link's config, or the default preset
    try:
        load(server().admit(ResNetConfig.from_query(st.query_params.to_dict())) if st.query_params
             else preset(DEFAULT_PRESET))
    except ConfigError as e:
        load(preset(DEFAULT_PRESET))
        state.link_error = f"The link's network could not be opened ({e}); showing {DEFAULT_PRESET} instead."

pages = st.navigation([st.Page(HERE / "app_pages" / f"{file}.py", title=title, icon=f":material/{icon}:",
                               default=file == "overview") for file, title, icon in PAGES])

with st.sidebar:
    st.selectbox("Preset", list(PRESETS), key="preset", on_change=load_preset)
    st.caption("Stages: width (channels of the 3×3 convs; a bottleneck's output is 4×), blocks, stride of the "
               "first block")
    edited = st.data_editor(
        state.stages, key=f"stages{state.editor}", num_rows="dynamic", hide_index=True, width="stretch",
        column_config={name: st.column_config.NumberColumn(name, step=1, format="%d", width="small")
                       for name in ("width", "blocks", "stride")},
    )
    st.radio("Block", BLOCK_TYPES, key="block", horizontal=True, help=BLOCK_HELP)
    st.radio("Shortcut", SHORTCUTS, key="shortcut", horizontal=True, help=SHORTCUT_HELP)
    g, per_group, drop = st.columns(3)
    bottleneck = state.block.endswith("bottleneck")
    g.number_input("Groups", min_value=1, step=1, key="groups", disabled=not bottleneck, help=GROUPS_HELP)
    per_group.number_input("Width/group", min_value=1, step=1, key="width_per_group", disabled=not bottleneck,
                           help=GROUPS_HELP)
    drop.number_input("Dropout", min_value=0.0, max_value=0.99, step=0.05, key="dropout", format="%.2f",
                      help="Dropout before each block's last conv, as Wide ResNets may use; 0 for none")
    st.radio("Stem", STEMS, key="stem", horizontal=True, help=STEM_HELP)
    st.number_input("Classes", min_value=1, step=1, key="classes")
    c, h, w = st.columns(3)
    c.number_input("Channels", min_value=1, step=1, key="channels")
    h.number_input("Height", min_value=1, step=1, key="height")
    w.number_input("Width", min_value=1, step=1, key="width")
    st.button("Reset to preset", on_click=load_preset, icon=":material/restart_alt:", width="stretch")

    try:
        state.config, state.config_error = config_from_widgets(edited), None
    except ConfigError as e:
        state.config_error = str(e)  # the last valid config stays on screen
    if st.query_params.to_dict() != state.config.to_query():
        st.query_params.from_dict(state.config.to_query())

    st.download_button("Download config (JSON)", state.config.to_json(), f"{state.config.name}.json",
                       "application/json", icon=":material/download:", width="stretch")
    st.file_uploader("Open a config (JSON)", type=["json"], key=f"upload{state.editor}", on_change=load_upload)
    if state.get("upload_error"):
        st.error(state.upload_error)
    keep_jobs_alive()

if state.link_error:  # it repeats what a link gave: shown as plain text, never as Markdown
    st.error(plain(state.link_error), icon=":material/link_off:")
if state.config_error:  # from this session's own widgets
    st.error(f"{state.config_error[0].upper()}{state.config_error[1:]}. Showing the last valid network.",
             icon=":material/error:")
pages.run()
