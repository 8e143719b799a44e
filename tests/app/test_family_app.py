"""The ResNet family in the app: the sidebar's new fields, links, the overview and the residual vs plain study."""

import dataclasses
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resnet_viz import ResNetConfig, preset

APP = str(Path(__file__).resolve().parents[2] / "resnet_viz_app" / "app.py")


def start(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if query:
        at.query_params.update(query)
    return at.run()


def sidebar(at: AppTest, kind: str, label: str):
    return next(w for w in getattr(at.sidebar, kind) if w.label == label)


def ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("name", ["plain20", "preresnet164", "wrn-16-8", "resnext50_32x4d"])
def test_each_family_preset_opens_with_its_fields(name):
    at = start()
    sidebar(at, "selectbox", "Preset").set_value(name).run()
    ok(at)
    cfg = preset(name)
    assert at.session_state["config"] == cfg
    assert metric(at, "Parameters") == f"{cfg.num_params():,}"
    assert at.title[0].value == f"{name} · {cfg.family}, {cfg.depth} layers"
    assert (sidebar(at, "radio", "Block").value, sidebar(at, "radio", "Shortcut").value) == (cfg.block, cfg.shortcut)
    assert sidebar(at, "number_input", "Groups").value == cfg.groups
    assert sidebar(at, "number_input", "Groups").disabled == (not cfg.bottleneck)


def test_groups_width_per_group_and_dropout_edit_the_network_and_the_link():
    at = start()
    sidebar(at, "selectbox", "Preset").set_value("resnet50").run()
    sidebar(at, "number_input", "Groups").set_value(32).run()
    sidebar(at, "number_input", "Width/group").set_value(4).run()
    ok(at)
    assert metric(at, "Parameters") == "25,028,904"  # torchvision's resnext50_32x4d
    sidebar(at, "number_input", "Dropout").set_value(0.2).run()
    ok(at)
    expected = dataclasses.replace(preset("resnext50_32x4d"), name="resnet50", dropout=0.2)
    assert at.session_state["config"] == expected
    assert ResNetConfig.from_query(dict(at.query_params)) == expected
    sidebar(at, "radio", "Block").set_value("basic").run()  # the groups fields switch off, not into an error
    ok(at)
    assert at.session_state["config"].groups == 1 and sidebar(at, "number_input", "Groups").disabled


def test_a_link_to_a_plain_network_reopens_it():
    cfg = preset("plain56")
    at = start(cfg.to_query())
    ok(at)
    assert at.session_state["config"] == cfg
    assert "with no skip" in " ".join(m.value for m in at.markdown)


def test_the_residual_vs_plain_study():
    at = start(preset("resnet56").to_query())
    at.switch_page("app_pages/compare.py").run()
    at.segmented_control(key="study").set_value("Residual vs plain").run()
    ok(at)
    frames = [f.value for f in at.dataframe]
    series = next(f for f in frames if "plain" in f.columns)
    assert list(series["plain"]) == ["plain20", "plain32", "plain44", "plain56", "plain110"]
    totals = next(f for f in frames if "name" in f.columns and "params_delta" in f.columns)
    assert list(totals["name"])[:2] == ["resnet56", "plain56"]
