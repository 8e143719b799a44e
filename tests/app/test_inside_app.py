"""The Inside page on the shipped networks, the shipped networks on the Train page, and on the Quantize page."""

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from resnet_viz import build_model, preset, weights
from resnet_viz.training import checkpoint_bytes
from resnet_viz.weights import get

APP = str(Path(__file__).resolve().parents[2] / "resnet_viz_app" / "app.py")
META = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "classes": ["airplane", "automobile", "bird", "cat",
        "deer", "dog", "frog", "horse", "ship", "truck"]}


def inside() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/inside.py").run()
    ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def captions(at: AppTest) -> str:
    """Every caption on the page, the images' own included."""
    return "\n".join([c.value for c in at.caption] + [c for image in at.get("image") for c in image.captions])


def test_inside_opens_the_shipped_resnet20_on_a_sample_cat():
    at = inside()
    assert at.selectbox(key="in_network").value.startswith("resnet20 (")
    assert at.selectbox(key="in_image").value == "cat-4650"
    assert [h.value for h in at.header] == ["Prediction", "Feature maps", "Residual learning, block by block",
                                            "Where it looks", "What the first layer learned"]
    assert "True class: **cat**" in captions(at) and "What the network sees: 3×32×32" in captions(at)
    assert len(at.get("plotly_chart")) == 2 and len(at.get("graphviz_chart")) == 1
    assert "‖F(x)‖ / ‖x‖ on this image" in at.get("graphviz_chart")[0].proto.spec
    assert "stem: 16×32×32" in captions(at)
    at.segmented_control(key="in_stage").set_value("layer3").run()
    ok(at)
    assert "layer3: 64×8×8" in captions(at)


def test_a_chosen_class_and_integrated_gradients():
    at = inside()
    at.selectbox(key="in_class").set_value("truck").run()
    ok(at)
    assert "Grad-CAM for **truck** at each stage's output" in captions(at)
    at.segmented_control(key="in_method").set_value("Integrated Gradients").run()
    ok(at)
    assert "Integrated Gradients for **truck**" in captions(at)


def test_a_block_and_a_channel_of_it():
    at = inside()
    at.select_slider(key="in_block").set_value("layer2.0").run()
    at.selectbox(key="in_channel_layer2.0").set_value(31).run()
    ok(at)
    assert "‖F(x)‖ = " in captions(at) and "‖x‖ = " in captions(at)


@pytest.fixture
def random_plain20(tmp_path, monkeypatch):
    """A plain-20 as the only shipped network, its weights random: the page's words do not depend on them."""
    torch.manual_seed(0)
    (tmp_path / "plain20.pt").write_bytes(checkpoint_bytes(build_model(preset("plain20")), preset("plain20"), META))
    (tmp_path / "plain20.json").write_text(json.dumps({"network": "plain20", "val_acc": 0.1, "val_acc_flip": 0.1}))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    weights.bundled.cache_clear()
    yield
    weights.bundled.cache_clear()


def test_a_plain_network_says_why_there_is_no_skip(random_plain20):
    at = inside()
    plain = next(o for o in at.selectbox(key="in_network").options if o.startswith("plain20 ("))
    at.selectbox(key="in_network").set_value(plain).run()
    ok(at)
    assert "This is a plain network: its blocks have no skip" in at.info[0].value
    assert len(at.get("plotly_chart")) == 1  # the prediction only: no ratio over the blocks


def test_the_train_page_shows_the_shipped_networks():
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/train.py").run()
    ok(at)
    card = get("resnet20").card
    assert next(m.value for m in at.metric if m.label == "Validation accuracy") == f"{card['val_acc']:.2%}"
    assert any(c.value == card["command"] for c in at.code)
    table = at.dataframe[0].value
    assert list(table["class"]) == [row["class"] for row in card["per_class"]]
    assert json.loads(json.dumps(card))["history"]  # the curves' data


def test_the_quantize_page_offers_the_shipped_networks():
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/quantize.py").run()
    ok(at)
    options = at.selectbox(key="q_network").options
    assert options[0].startswith("resnet20 (") and options[-1] == "upload a checkpoint"
