import math

import pytest

from resnet_viz import ConfigError, preset, trace
from resnet_viz.views.compare import compare, comparison_charts, depth_study, shortcut_study, unique_labels

CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"]


@pytest.fixture(scope="module")
def depths():
    return depth_study()


@pytest.fixture(scope="module")
def shortcuts():
    return shortcut_study("resnet20")


# -- the depth study against the ResNet paper ------------------------------------------------

def test_depth_study_counts_are_the_configs_and_the_traces(depths):
    assert list(depths["model"]) == CIFAR
    assert list(depths["layers"]) == [20, 32, 44, 56, 110, 1202]
    assert list(depths["params"]) == [269_722, 464_154, 658_586, 853_018, 1_727_962, 19_421_274]
    for name, params, macs in zip(depths["model"], depths["params"], depths["macs"]):
        cfg = preset(name, shortcut="A")
        fresh = trace(cfg).totals
        assert params == cfg.num_params() == fresh.params
        assert macs == fresh.macs_per_image


def test_depth_study_matches_the_papers_table_6_within_its_rounding(depths):
    assert list(depths["paper_params_m"]) == [0.27, 0.46, 0.66, 0.85, 1.7, 19.4]
    for params, published in zip(depths["params"], depths["paper_params_m"]):
        decimals = 2 if published < 1 else 1  # the paper prints 1.7M and 19.4M
        assert round(params / 1e6, decimals) == published
    assert list(depths["params_m"]) == [round(p / 1e6, 2) for p in depths["params"]]


def test_depth_study_with_projections_misses_the_paper():
    study = depth_study("B").set_index("model")
    assert study.loc["resnet20", "params"] == 272_474
    assert study.loc["resnet32", "params"] == 464_154 + 2_752  # two projections, whatever the depth
    assert (study.loc["resnet32", "params_m"], study.loc["resnet32", "paper_params_m"]) == (0.47, 0.46)


# -- the shortcut study ------------------------------------------------------------------------

def _projection(c_in: int, c_out: int) -> int:
    return c_in * c_out + 2 * c_out  # 1x1 conv without bias, BN scale and shift


def test_shortcut_study_deltas(shortcuts):
    totals = shortcuts.totals.set_index("name")
    assert list(totals.index) == ["resnet20 (A)", "resnet20 (B)", "resnet20 (C)"]
    b, c = totals.loc["resnet20 (B)"], totals.loc["resnet20 (C)"]
    assert (b["params_delta"], b["macs_delta"]) == (2_752, 262_144)
    assert b["params_delta"] == _projection(16, 32) + _projection(32, 64)
    assert b["macs_delta"] == 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8
    # C projects on all 9 blocks: (in, out, output side) of each
    blocks = [(16, 16, 32)] * 3 + [(16, 32, 16)] + [(32, 32, 16)] * 2 + [(32, 64, 8)] + [(64, 64, 8)] * 2
    assert c["params_delta"] == sum(_projection(i, o) for i, o, _ in blocks) == 14_240
    assert c["macs_delta"] == sum(i * o * s * s for i, o, s in blocks)
    assert b["params_delta_pct"] == pytest.approx(100 * 2_752 / 269_722)
    assert totals.loc["resnet20 (A)", "params_delta"] == 0


def test_shortcut_study_stages_locate_the_projections(shortcuts):
    stages = shortcuts.stages.set_index(["name", "part"])
    assert stages.loc[("resnet20 (B)", "layer2"), "params_delta"] == _projection(16, 32)
    assert stages.loc[("resnet20 (B)", "layer3"), "params_delta"] == _projection(32, 64)
    assert stages.loc[("resnet20 (B)", "layer1"), "params_delta"] == 0
    for label, rows in shortcuts.stages.groupby("name"):
        assert rows["params"].sum() == shortcuts.totals.set_index("name").loc[label, "params"]
        assert rows["macs"].sum() == shortcuts.totals.set_index("name").loc[label, "macs"]


# -- compare -----------------------------------------------------------------------------------

def test_totals_columns_follow_the_config():
    cmp = compare([preset("resnet20"), preset("resnet50")])
    row = cmp.totals.set_index("name").loc["resnet50"]
    assert row["description"] == preset("resnet50").describe()
    assert (row["depth"], row["blocks"], row["params"]) == (50, 16, 25_557_032)
    assert (row["macs"], row["flops"]) == (4_089_184_256, 2 * 4_089_184_256)
    assert row["peak_activation_bytes"] <= row["activation_bytes"]
    assert [t.model_name for t in cmp.traces] == ["resnet20", "resnet50"]


def test_batch_size_scales_memory_but_not_per_image_macs():
    one = compare([preset("resnet20")]).totals.iloc[0]
    four = compare([preset("resnet20")], batch_size=4).totals.iloc[0]
    assert four["macs"] == one["macs"] == 40_813_184
    assert four["activation_bytes"] == 4 * one["activation_bytes"]
    assert four["peak_activation_bytes"] == 4 * one["peak_activation_bytes"]


def test_a_part_the_first_config_lacks_has_no_delta():
    stages = compare([preset("resnet20"), preset("cifar-resnet18")]).stages.set_index(["name", "part"])
    layer4 = stages.loc[("cifar-resnet18", "layer4")]
    assert layer4["params"] > 0
    assert math.isnan(layer4["params_delta"]) and math.isnan(layer4["macs_delta_pct"])
    assert stages.loc[("cifar-resnet18", "head"), "params_delta"] == (512 * 10 + 10) - (64 * 10 + 10)


def test_labels_are_unique_and_say_what_differs():
    a, b = preset("resnet20", shortcut="A"), preset("resnet20", shortcut="B")
    wide = preset("resnet20", widths=(32, 64, 128))
    assert unique_labels([a, b]) == ["resnet20 (A)", "resnet20 (B)"]
    assert unique_labels([b, wide, preset("resnet32")]) == ["resnet20", "resnet20 #2", "resnet32"]
    assert unique_labels([a, a, b]) == ["resnet20 (A)", "resnet20 (A) #2", "resnet20 (B)"]
    assert list(compare([b, wide]).totals["name"]) == ["resnet20", "resnet20 #2"]


def test_comparing_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one config"):
        compare([])


def test_compare_passes_bad_batch_sizes_on_as_config_errors():
    with pytest.raises(ConfigError, match="batch size"):
        compare([preset("resnet20")], batch_size=0)


# -- charts ------------------------------------------------------------------------------------

def test_comparison_charts_show_every_config(shortcuts):
    charts = comparison_charts(shortcuts)
    totals = shortcuts.totals
    bars = charts["params-and-macs"].data
    params = {bar.name: bar.y[0] for bar in bars if bar.x == ("parameters",)}
    macs = {bar.name: bar.y[0] for bar in bars if bar.x == ("MACs",)}
    assert params == dict(zip(totals["name"], totals["params"]))
    assert macs == dict(zip(totals["name"], totals["macs"]))
    hover = [text for bar in bars for text in bar.hovertext]
    assert any(text.startswith("resnet20 (B)") and "+2,752" in text for text in hover)
    stage_bars = charts["params-by-stage"].data
    assert [bar.name for bar in stage_bars] == list(totals["name"])
    assert [sum(bar.y) for bar in stage_bars] == list(totals["params"])
    assert stage_bars[1].hovertext[2] == "resnet20 (B), layer2<br>51,648 parameters<br>+576 (+1.13%) vs resnet20 (A)"


def test_a_config_keeps_its_colour_across_charts(shortcuts):
    charts = comparison_charts(shortcuts)
    colours = {bar.name: bar.marker.color for bar in charts["params-by-stage"].data}
    assert all(colours[bar.name] == bar.marker.color for bar in charts["params-and-macs"].data)
    assert len(set(colours.values())) == 3
