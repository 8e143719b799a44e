import re

import pytest
from torch import nn

from resnet_viz import preset, trace
from resnet_viz.views.charts import (
    CHARTS,
    charts_html,
    macs_by_layer,
    memory_by_layer,
    params_by_layer,
    params_by_stage,
    shape_journey,
)


def _ys(fig) -> list[int]:
    return [y for data in fig.data for y in data.y]


def _xs(fig) -> list[str]:
    return [x for data in fig.data for x in data.x]


def _hover(fig) -> list[str]:
    return [text for data in fig.data for text in data.hovertext]


def _distinct_runs(values) -> list:
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


# -- sums and values against the trace and hand-counted layers ---------------------------------

@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_parameter_charts_add_up_to_the_model(name):
    cfg = preset(name)
    t = trace(cfg)
    assert sum(_ys(params_by_stage(t))) == t.totals.params == cfg.num_params()
    assert sum(_ys(params_by_layer(t))) == t.totals.params


def test_params_by_stage_resnet20_by_hand():
    fig = params_by_stage(trace(preset("resnet20")))
    stem = 3 * 16 * 9 + 2 * 16  # 3x3 conv without bias, BN scale and shift
    head = 64 * 10 + 10  # fc weights and biases
    assert list(fig.data[0].x) == ["stem", "layer1", "layer2", "layer3", "head"]
    assert (fig.data[0].y[0], fig.data[0].y[-1]) == (stem, head)
    assert fig.data[0].text[1] == f"14,016 ({100 * 14_016 / 272_474:.1f}%)"


def test_params_by_layer_is_in_network_order_and_coloured_by_stage():
    t = trace(preset("resnet20"))
    fig = params_by_layer(t)
    x = _xs(fig)
    assert x[:2] == ["conv1", "bn1"] and x[-1] == "fc"
    assert x == [layer.name for layer in t.layers if layer.name in set(x)]  # network order
    assert "relu" not in x and "layer1.0.add" not in x  # no parameters, no bar
    assert [data.name for data in fig.data] == ["stem", "layer1", "layer2", "layer3", "head"]
    assert len({data.marker.color for data in fig.data}) == 5
    assert dict(zip(x, _ys(fig)))["layer2.0.conv1"] == 16 * 32 * 9


def test_stage_colours_do_not_depend_on_the_model():
    def colours(model):
        return {data.name: data.marker.color for data in macs_by_layer(trace(preset(model))).data}

    small, deep = colours("resnet20"), colours("resnet56")
    assert small == deep
    assert colours("resnet18")["layer1"] == small["layer1"]


@pytest.mark.parametrize("batch", [1, 3])
def test_macs_by_layer_adds_up_to_the_traced_batch(batch):
    t = trace(preset("resnet20"), batch_size=batch)
    fig = macs_by_layer(t)
    assert sum(_ys(fig)) == t.totals.macs == batch * 40_813_184
    assert dict(zip(_xs(fig), _ys(fig)))["conv1"] == batch * 16 * 32 * 32 * 27
    assert f"batch of {batch}" in fig.layout.title.text and "multiply-accumulates" in fig.layout.title.text


def test_memory_by_layer_adds_up_to_the_activations_a_forward_writes():
    t = trace(preset("resnet20", shortcut="A"))
    values = dict(zip(_xs(memory_by_layer(t)), _ys(memory_by_layer(t))))
    assert sum(values.values()) == t.totals.activation_bytes
    assert values["conv1"] == 16 * 32 * 32 * 4  # float32
    assert values["layer2.0.downsample"] == 32 * 16 * 16 * 4  # the zero-padded skip is a new tensor
    assert "layer1.0.relu" not in values and "layer1.0.add" not in values  # in place: ReLU(inplace), out += skip
    assert values["fc"] == 10 * 4


# -- the shape journey --------------------------------------------------------------------------

def test_shape_journey_resnet20():
    fig = shape_journey(trace(preset("resnet20")))
    channels, side = fig.data
    assert _distinct_runs(list(channels.y)) == [16, 32, 64, 10]
    assert _distinct_runs(list(side.y)) == [32, 16, 8, 1]
    assert side.yaxis == "y2" and channels.mode == side.mode == "lines+markers"
    assert not any("downsample" in text for text in channels.hovertext)
    assert channels.hovertext[0].startswith("conv1") and channels.hovertext[-1].startswith("fc")
    assert list(channels.x) == list(range(1, len(channels.y) + 1))


def test_shape_journey_skips_projection_rows_and_draws_width_when_it_differs():
    fig = shape_journey(trace(preset("resnet20", input_size=(32, 64))))
    assert [data.name for data in fig.data] == ["channels", "spatial height", "spatial width"]
    assert _distinct_runs(list(fig.data[1].y)) == [32, 16, 8, 1]
    assert _distinct_runs(list(fig.data[2].y)) == [64, 32, 16, 1]
    # B projects in layer2.0 and layer3.0: those rows are on the skip, not the main path
    assert not any("downsample" in text for text in _hover(fig))


# -- hover, titles, names -----------------------------------------------------------------------

def test_hover_names_the_layer_with_thousands_separators():
    t = trace(preset("resnet20"))
    hover = _hover(params_by_layer(t))
    conv = next(text for text in hover if text.startswith("layer2.0.conv1"))
    assert "4,608 parameters" in conv and "272,474" in conv
    assert any(text.startswith("layer2.0.conv1") and "32,768 bytes" in text for text in _hover(memory_by_layer(t)))
    assert all(data.hovertemplate == "%{hovertext}<extra></extra>" for data in params_by_layer(t).data)


def test_the_root_row_is_shown_by_the_model_name():
    t = trace(nn.Conv2d(3, 8, 3, bias=False), input_size=(3, 8, 8))  # the root is the only layer
    fig = params_by_layer(t)
    assert _xs(fig) == ["Conv2d"] and _ys(fig) == [3 * 8 * 9]
    assert _hover(fig)[0].startswith("Conv2d")


@pytest.mark.parametrize("key", list(CHARTS))
def test_every_chart_has_a_title_and_axis_titles(key):
    fig = CHARTS[key](trace(preset("resnet20")))
    assert "(" in fig.layout.title.text  # the convention, in brackets
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_chart_registry_order():
    assert list(CHARTS) == ["params-by-stage", "params-by-layer", "macs-by-layer", "memory-by-layer",
                            "shape-journey"]


# -- the HTML page ------------------------------------------------------------------------------

def test_charts_html_is_one_offline_page():
    t = trace(preset("resnet20"))
    page = charts_html({key: chart(t) for key, chart in CHARTS.items()}, "resnet20 <B>")
    for key in CHARTS:
        assert f'<div id="{key}"' in page
    assert page.count("* plotly.js v") == 1  # the bundle's licence header
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing loaded from a CDN or anywhere else
    assert "<h1>resnet20 &lt;B&gt;</h1>" in page
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
