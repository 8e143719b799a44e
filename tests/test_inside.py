"""Inside a network on one image: feature maps against plain forward hooks, each block's skip and residual branch
against the block's own sum, Grad-CAM and Integrated Gradients against captum and their definitions, and the
pictures made of them."""

import io
import json

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from PIL import Image
from torch import nn

from resnet_viz import ConfigError, build_model, preset
from resnet_viz.views import pictures
from resnet_viz.views.inside import (
    feature_maps,
    grad_cam,
    inside_files,
    integrated_gradients,
    look_inside,
    normalise,
    open_inside,
    stage_names,
)


def _model(name: str, **overrides) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(preset(name, **overrides))
    for m in model.modules():  # running statistics that are not the identity, so that BN does something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_feature_maps_equal_plain_forward_hooks():
    model = _model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    expected = {}

    def keep(name):
        def hook(module, inputs, output):
            expected.setdefault(name, output[0].clone())  # the stem's relu: its first call
        return hook

    handles = [model.relu.register_forward_hook(keep("stem"))]
    handles += [getattr(model, f"layer{i}").register_forward_hook(keep(f"layer{i}")) for i in (1, 2, 3)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    maps = feature_maps(model, x)
    assert list(maps) == ["stem", "layer1", "layer2", "layer3"]
    assert [tuple(m.shape) for m in maps.values()] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert all(torch.equal(maps[k], expected[k]) for k in expected)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(("name", "overrides"), [("resnet20", {}), ("resnet20", {"shortcut": "A"}),
                                                 ("cifar-resnet50", {"blocks": (1, 1, 1, 1)}),
                                                 ("preresnet20", {}), ("preresnet164", {"blocks": (1, 1, 1)})])
def test_branch_plus_skip_is_the_blocks_own_sum_exactly(name, overrides):
    model = _model(name, **overrides)
    x = torch.randn(2, 3, 32, 32)
    looks = look_inside(model, x)
    assert len(looks) == sum(model.config.blocks)
    for look in looks.values():
        assert torch.equal(look.branch + look.skip, look.total), look.name
        assert look.ratio == pytest.approx(float(look.branch.norm() / look.skip.norm()))
    # the sum is what the block puts out: after its ReLU in a post-activation block, as it is in a pre-activation one
    with torch.no_grad():
        out = model.layer1[0](model.relu(model.bn1(model.conv1(x))) if model.bn1 is not None else model.conv1(x))
    first = looks["layer1.0"].total
    assert torch.equal(out[0], first if model.config.preact else first.clamp(min=0))
    assert looks["layer2.0"].skip.shape == looks["layer2.0"].branch.shape


def test_a_plain_block_has_no_skip_to_show():
    looks = look_inside(_model("plain20"), torch.randn(1, 3, 32, 32))
    assert all(look.skip is None and look.ratio is None and torch.equal(look.branch, look.total)
               for look in looks.values())


# --- where it looks: Grad-CAM and Integrated Gradients against captum and against their definitions ---------------

META = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "classes": [f"c{i}" for i in range(10)]}


def _pixels(seed: int = 0) -> np.ndarray:
    return torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.mark.parametrize("stage", ["layer1", "layer2", "layer3"])
def test_grad_cam_is_captums_layer_grad_cam_and_its_overlay_captums_interpolation(stage):
    model, x = _model("resnet20"), torch.randn(1, 3, 32, 32)
    ours = grad_cam(model, x, stage, 3)
    raw = LayerGradCam(model, model.get_submodule(stage)).attribute(x, target=3, relu_attributions=True)
    torch.testing.assert_close(ours, raw[0, 0])
    torch.testing.assert_close(pictures.upsample(ours, (32, 32)),
                               LayerAttribution.interpolate(raw, (32, 32), "bilinear")[0, 0])


def test_grad_cam_follows_its_definition():
    """Selvaraju et al.: ReLU(Σ_k α_k A^k) with α_k the spatial mean of ∂y_c/∂A^k, computed here by hand."""
    model, x = _model("resnet20"), torch.randn(1, 3, 32, 32)
    kept = {}
    handle = model.layer2.register_forward_hook(lambda m, i, o: kept.setdefault("A", o))
    y = model(x)[0, 7]
    handle.remove()
    (grad,) = torch.autograd.grad(y, kept["A"])
    expected = (grad.mean(dim=(2, 3), keepdim=True) * kept["A"]).sum(1).relu()[0].detach()
    torch.testing.assert_close(grad_cam(model, x, "layer2", 7), expected)
    assert model.training is False and not model._forward_hooks


def test_integrated_gradients_are_captums_and_complete():
    """The attributions sum to f(x) − f(baseline), the completeness axiom of Sundararajan et al. 2017."""
    model, x = _model("resnet20"), torch.randn(1, 3, 32, 32)
    ours = integrated_gradients(model, x, 2, steps=64)
    raw = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=2, n_steps=64)
    torch.testing.assert_close(ours, raw[0], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        gap = float(model(x)[0, 2] - model(torch.zeros_like(x))[0, 2])
    assert abs(float(ours.sum()) - gap) < 0.05 * abs(gap) + 1e-3


def test_open_inside_predicts_as_the_network_does():
    model, pixels = _model("resnet20"), _pixels()
    inside = open_inside(model, pixels, META, attribution=False)
    x = (torch.from_numpy(pixels).float() / 255 - torch.tensor(META["mean"]).view(3, 1, 1)) / torch.tensor(
        META["std"]).view(3, 1, 1)
    torch.testing.assert_close(normalise(pixels, META)[0], x)
    with torch.no_grad():
        expected = model(x[None])[0].softmax(0)
    torch.testing.assert_close(inside.probabilities, expected)
    assert inside.target == int(expected.argmax()) == inside.predicted
    assert [name for name, _ in inside.top(5)] == [META["classes"][i] for i in expected.topk(5).indices.tolist()]
    assert set(inside.cams) == set(stage_names(model)) == {"layer1", "layer2", "layer3"}
    assert [tuple(t.shape) for t in inside.maps.values()] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    torch.testing.assert_close(inside.stem_filters, model.conv1.weight.detach())
    assert inside.pixels_attribution is None


def test_a_chosen_class_is_explained_and_a_class_out_of_range_is_one_sentence():
    model, pixels = _model("resnet20"), _pixels()
    assert open_inside(model, pixels, META, target=4, attribution=False).target == 4
    with pytest.raises(ConfigError, match="class 12 is not one of the network's 10 outputs"):
        open_inside(model, pixels, META, target=12)


def test_inside_files_are_pngs_and_one_json_with_every_block():
    model, pixels = _model("resnet20"), _pixels()
    inside = open_inside(model, pixels, META)
    files = inside_files(inside, pixels, {"image": "noise"}, channels=4)
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    expected = {"input.png", "features-stem.png", "features-layer1.png", "features-layer2.png",
                "features-layer3.png", "integrated-gradients.png", "stem-filters.png", "inside.json",
                *(f"block-{b}.png" for b in blocks), *(f"gradcam-layer{s}.png" for s in (1, 2, 3))}
    assert set(files) == expected
    for name, data in files.items():
        if name.endswith(".png"):
            assert Image.open(io.BytesIO(data)).format == "PNG"
    report = json.loads(files["inside.json"])
    assert report["image"] == "noise" and len(report["predictions"]) == 5
    assert [row["block"] for row in report["blocks"]] == blocks
    for row, look in zip(report["blocks"], inside.blocks.values()):
        assert row["ratio"] == pytest.approx(float(look.branch.norm() / look.skip.norm()))
    grid = Image.open(io.BytesIO(files["features-layer3.png"]))
    assert grid.size == (4 * 48 + 3 * pictures.GAP, 48)  # 4 channels of 8×8 enlarged 6×, in one row


def test_a_plain_block_pictures_its_branch_and_output_only():
    model = _model("plain20")
    inside = open_inside(model, _pixels(), META, attribution=False)
    assert not inside.residual and all(row["ratio"] is None for row in inside.block_rows())
    assert list(inside.blocks["layer2.1"].pictures()) == ["F(x)", "output"]
    assert list(open_inside(_model("resnet20"), _pixels(), META, attribution=False).blocks["layer2.1"].pictures()) == [
        "x", "F(x)", "F(x) + x"]


def test_a_channel_a_block_lacks_is_one_sentence():
    inside = open_inside(_model("resnet20"), _pixels(), META, attribution=False)
    with pytest.raises(ConfigError, match="channel 16 is not one of block layer1.0's 16 channels"):
        inside.blocks["layer1.0"].pictures(16)


# --- pictures --------------------------------------------------------------------------------------------------

def test_colours_run_from_the_first_colour_of_the_scale_to_the_last():
    values = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    picture = pictures.colour(values)
    palette = pictures._palette(pictures.SEQUENTIAL)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert (picture[0, 0] == palette[0]).all() and (picture[1, 1] == palette[-1]).all()
    assert tuple(palette[0]) == (68, 1, 84)  # plotly's Viridis starts at rgb(68, 1, 84)
    assert (pictures.signed(torch.zeros(1, 1), 1.0)[0, 0] > 240).all()  # zero is near-white on a diverging scale


def test_most_active_channels_come_first_and_grids_tile():
    maps = torch.zeros(5, 4, 4)
    for c, level in enumerate([0.1, 0.9, 0.5, 0.0, 0.7]):
        maps[c] = level
    assert pictures.most_active(maps, 3) == [1, 4, 2]
    sheet = pictures.tile([np.zeros((4, 6, 3), np.uint8)] * 5, columns=2, gap=1)
    assert sheet.shape == (3 * 4 + 2, 2 * 6 + 1, 3)
    assert pictures.enlarge(np.zeros((8, 8, 3), np.uint8), 48).shape == (48, 48, 3)


def test_filters_show_zero_as_grey_and_each_filter_on_its_own_scale():
    weight = torch.zeros(2, 3, 3, 3)
    weight[0, 0, 1, 1], weight[1, 2, 0, 0] = 0.5, -3.0
    sheet = pictures.filters(weight, columns=2, cell=3)  # 3×3 filters at 1×: no enlargement
    assert sheet.shape == (3, 3 + pictures.GAP + 3, 3)
    assert tuple(sheet[0, 0]) == (128, 128, 128)  # a zero weight
    assert tuple(sheet[1, 1]) == (255, 128, 128)  # filter 0's largest weight, red channel: full
    assert tuple(sheet[0, 3 + pictures.GAP]) == (128, 128, 0)  # filter 1's most negative, blue channel: none


def test_an_overlay_blends_the_heat_into_the_image():
    pixels = np.full((3, 4, 4), 200, np.uint8)
    heat = torch.zeros(2, 2)
    heat[0, 0] = 1.0
    blended = pictures.overlay(pixels, heat, alpha=0.5)
    assert blended.shape == (4, 4, 3)
    cold = pictures._palette(pictures.HEAT)[0].astype(float)
    assert np.allclose(blended[3, 3], np.round(0.5 * 200 + 0.5 * cold), atol=1)


@pytest.mark.parametrize("name, overrides", [
    ("preresnet20", {}),
    ("resnet50", {"input_size": (32, 32), "num_classes": 10}),
    ("resnext50_32x4d", {"input_size": (32, 32), "num_classes": 10}),
])
def test_the_inside_views_open_every_family(name, overrides):
    model = _model(name, **overrides)
    h, w = model.config.input_size
    pixels = torch.randint(0, 256, (3, h, w), dtype=torch.uint8).numpy()
    inside = open_inside(model, pixels, META, attribution=False)
    stages = [f"layer{i}" for i in range(1, len(model.config.blocks) + 1)]
    assert list(inside.cams) == stages and list(inside.maps) == ["stem", *stages]
    assert all(row["ratio"] is not None and row["ratio"] > 0 for row in inside.block_rows())
    files = inside_files(inside, pixels, {}, channels=4)
    assert len([f for f in files if f.startswith("block-")]) == sum(model.config.blocks)


def test_an_image_with_the_wrong_number_of_channels_is_one_sentence():
    model = _model("resnet20", in_channels=1)
    with pytest.raises(ConfigError, match="this network takes 1-channel images, and the image has 3 channels"):
        open_inside(model, _pixels(), META)
