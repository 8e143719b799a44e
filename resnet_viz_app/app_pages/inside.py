"""Inside: a trained network on one real image. What it predicts, what its stages see, what each residual block
adds to its input, where it looks, and what its first layer learned."""

import hashlib

import streamlit as st

from resnet_viz import ResNetVizError
from resnet_viz.data.images import read_image
from resnet_viz.samples import by_name
from resnet_viz.views import pictures
from resnet_viz.views.charts import prediction_chart, residual_ratio_chart
from resnet_viz.views.inside import Inside, class_names, open_inside, pixel_attribution
from resnet_viz_app.app_pages.common import (
    Opened,
    open_checkpoint,
    open_upload,
    painted_source,
    sentence,
    trained_networks,
)

UPLOAD_NETWORK, UPLOAD_IMAGE = "upload a checkpoint", "upload an image"
CELL = 160  # pixels a side of a shown image

st.title("Inside")
st.caption("A trained network on one image: its prediction, its feature maps, what every residual block adds to "
           "its input, where it looks (Grad-CAM and Integrated Gradients, by captum) and its first layer's filters. "
           "The network is the trained one picked here, with its own config, not the sidebar's.")

networks = trained_networks()
a, b, c = st.columns([3, 3, 2])
choice = a.selectbox("Network", [*networks, UPLOAD_NETWORK], key="in_network")
sample_names = by_name()
picked = b.selectbox("Image", [*sample_names, UPLOAD_IMAGE], index=33, key="in_image",
                     help="100 validation images of CIFAR-10 (10 a class, never trained on), or your own")
uploaded_net = a.file_uploader("Checkpoint (.pt)", type=["pt"], key="in_upload_net") if choice == UPLOAD_NETWORK \
    else None
uploaded_image = b.file_uploader("Image (PNG, JPEG or WebP, at most 5 MB)", type=["png", "jpg", "jpeg", "webp"],
                                 key="in_upload_image") if picked == UPLOAD_IMAGE else None


@st.cache_resource(max_entries=16, show_spinner=False)
def inside_of(_net: Opened, net_key: str, image_key: str, target: int | None, _pixels) -> Inside:
    with _net.lock:
        return open_inside(_net.model, _pixels, _net.meta, target, attribution=False)


@st.cache_resource(max_entries=16, show_spinner=False)
def attribution_of(_net: Opened, net_key: str, image_key: str, target: int, _pixels):
    with _net.lock:
        return pixel_attribution(_net.model, _pixels, _net.meta, target)


def network() -> tuple[Opened, str]:
    if choice != UPLOAD_NETWORK:
        return open_checkpoint(networks[choice])
    if uploaded_net is None:
        st.info("Upload a checkpoint written by `train` (read safely, with weights_only=True), or pick a network.")
        st.stop()
    return open_upload(uploaded_net.getvalue(), uploaded_net.name)


def image(net: Opened) -> tuple[object, str, str | None]:
    """The pixels the network sees (uint8, C×H×W), a key for them, and the true class of a sample."""
    size = net.config.input_size
    if picked != UPLOAD_IMAGE:
        sample = sample_names[picked]
        data, name, truth = sample.path.read_bytes(), sample.file, sample.class_name
    elif uploaded_image is None:
        st.info("Upload a PNG, JPEG or WebP image: it is centre-cropped and resized to the network's input.")
        st.stop()
    else:
        data, name, truth = uploaded_image.getvalue(), uploaded_image.name, None
    pixels = read_image(data, size, name).numpy()
    return pixels, hashlib.sha256(pixels.tobytes()).hexdigest(), truth


try:
    net, net_key = network()
    pixels, image_key, truth = image(net)
except ResNetVizError as error:
    st.error(sentence(error))
    st.stop()

classes = list(class_names(net.meta, net.config.num_classes))
explain = c.selectbox("Explain the class", ["predicted", *classes], key="in_class",
                      help="The class Grad-CAM and Integrated Gradients explain")
target = None if explain == "predicted" else classes.index(explain)
inside = inside_of(net, net_key, image_key, target, pixels)
explained = inside.classes[inside.target]

st.header("Prediction")
left, right = st.columns([1, 3])
left.image(pictures.enlarge(pictures.image(pixels), CELL), width=CELL)
h, w = net.config.input_size
mean, std = net.meta.get("mean"), net.meta.get("std")
left.caption(f"What the network sees: {pixels.shape[0]}×{h}×{w}"
             + (f", as (x/255 − mean) / std with mean {', '.join(f'{v:.3f}' for v in mean)} and std "
                f"{', '.join(f'{v:.3f}' for v in std)}" if mean and std else ""))
right.plotly_chart(prediction_chart(inside.top(5), truth), width="stretch", key="in_top")
if truth is not None:
    verdict = "right" if inside.classes[inside.predicted] == truth else "wrong"
    right.caption(f"True class: **{truth}**; the network is {verdict}.")

st.header("Feature maps")
stage = st.segmented_control("Where", list(inside.maps), default="stem", key="in_stage") or "stem"
maps = inside.maps[stage]
d, e = st.columns([1, 3])
how = d.radio("Channels", ["most active", "by hand"], key="in_how", horizontal=True)
if how == "most active":
    count = d.slider("How many", 1, maps.shape[0], min(16, maps.shape[0]), key=f"in_count_{stage}")
    shown = pictures.most_active(maps, count)
else:
    shown = e.multiselect("Channels", list(range(maps.shape[0])), default=list(range(min(8, maps.shape[0]))),
                          key=f"in_pick_{stage}") or [0]
c_, hh, ww = maps.shape
st.image(pictures.feature_grid(maps, shown), caption=f"{stage}: {c_}×{hh}×{ww}; channels {', '.join(map(str, shown))} "
         "on one colour scale (dark: low, yellow: high)")

st.header("Residual learning, block by block")
rows = inside.block_rows()
if inside.residual:
    f, g = st.columns([3, 2])
    f.plotly_chart(residual_ratio_chart(rows), width="stretch", key="in_ratio")
    ratios = tuple((r["block"], r["ratio"]) for r in rows if r["ratio"] is not None)
    g.graphviz_chart(painted_source(net.config, ratios, "‖F(x)‖ / ‖x‖ on this image"), width="stretch")
else:
    st.info("This is a plain network: its blocks have no skip, so there is no x to add F(x) to. Each block's output "
            "is its branch alone and must carry everything forward; a residual block only has to learn a change.")
names = list(inside.blocks)
i, j = st.columns([3, 1])
block = i.select_slider("Block", names, key="in_block")
look = inside.blocks[block]
channel = j.selectbox("Show", ["mean over channels", *range(look.branch.shape[0])], key=f"in_channel_{block}")
parts = look.pictures(None if channel == "mean over channels" else int(channel), cell=CELL)
for column, (label, picture) in zip(st.columns(3), parts.items()):
    column.image(picture, caption=label, width=CELL)
summary = (f"‖F(x)‖ = {look.branch_norm:.1f}, ‖x‖ = {look.skip_norm:.1f}: the branch changes the block's input by "
           f"{look.ratio:.0%} of its size" if look.ratio is not None else f"‖F(x)‖ = {look.branch_norm:.1f}")
st.caption(f"{summary}. One colour scale for the three: blue below zero, white zero, red above; all before "
           "the block's last ReLU.")

st.header("Where it looks")
method = st.segmented_control("Method", ["Grad-CAM", "Integrated Gradients"], default="Grad-CAM",
                              key="in_method") or "Grad-CAM"
if method == "Grad-CAM":
    for column, (name, cam) in zip(st.columns(len(inside.cams)), inside.cams.items()):
        column.image(pictures.overlay(pixels, cam), caption=f"{name} ({cam.shape[0]}×{cam.shape[1]})", width=CELL)
    st.caption(f"Grad-CAM for **{explained}** at each stage's output: the feature maps weighted by their gradients' "
               "spatial mean, ReLU, resized to the image (red: most).")
else:
    with st.spinner("Integrating gradients…"):
        attribution = attribution_of(net, net_key, image_key, inside.target, pixels)
    st.image(pictures.overlay(pixels, attribution.abs().sum(0)), width=2 * CELL)
    st.caption(f"Integrated Gradients for **{explained}**: each pixel's share of the class score against the "
               "mean-colour image, summed over colours (red: most).")

st.header("What the first layer learned")
st.image(pictures.filters(inside.stem_filters), caption=f"The stem's {inside.stem_filters.shape[0]} filters "
         f"({'×'.join(map(str, inside.stem_filters.shape[1:]))}), each on its own scale: grey is zero")
