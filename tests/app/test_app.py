"""Every page and the main widget paths, through Streamlit's AppTest (no browser)."""

import json
import shlex
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resnet_viz import ConfigError, ResNetConfig, preset
from resnet_viz.cli import build_parser
from resnet_viz.cli.train import run_setup as _run_setup
from resnet_viz.training import pick_device, precision_and_why
from resnet_viz.training.defaults import plan
from resnet_viz.views.compare import CIFAR_DEPTHS
from resnet_viz_app.app_pages.common import manager

APP = str(Path(__file__).resolve().parents[2] / "resnet_viz_app" / "app.py")
PAGES = ["app_pages/overview.py", "app_pages/layers.py", "app_pages/diagram.py", "app_pages/compare.py"]


def start(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if query:
        at.query_params.update(query)
    return at.run()


def job(at: AppTest, kind: str):
    """This session's newest job of a kind, from the server's job manager."""
    return manager().find(at.session_state["owner"], kind)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def sidebar(at: AppTest, kind: str, label: str):
    return next(w for w in getattr(at.sidebar, kind) if w.label == label)


def graphviz(at: AppTest) -> str:
    return at.get("graphviz_chart")[0].proto.spec


def edit_stages(at: AppTest, edited_rows=None, added_rows=None, deleted_rows=None) -> AppTest:
    """Edit the sidebar's stage table. AppTest cannot type into a data editor, so this sends the editor's
    own widget state (the JSON a browser sends) with the next run; later runs forget it, as AppTest
    tracks no state for data editors."""
    editor = at.data_editor[0]
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = editor.proto.id
    state.string_value = json.dumps({"edited_rows": {str(k): v for k, v in (edited_rows or {}).items()},
                                     "added_rows": added_rows or [], "deleted_rows": deleted_rows or []})
    return at._run(states)


def ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


# -- overview and the sidebar -------------------------------------------------------------------------

def test_overview_walks_through_resnet20():
    at = start()
    ok(at)
    assert at.title[0].value == "resnet20 · ResNet-20"
    assert (metric(at, "Parameters"), metric(at, "MACs"), metric(at, "FLOPs")) == ("272,474", "40.81 M", "81.63 M")
    steps = " ".join(m.value for m in at.markdown)
    for shapes in ("`(3,32,32)` → `(16,32,32)`", "`(16,32,32)` → `(32,16,16)`", "`(32,16,16)` → `(64,8,8)`",
                   "`(64,8,8)` → `(10)`"):
        assert shapes in steps
    assert "fc 64→10" in graphviz(at) and "stage 2 (layer2)" in graphviz(at)
    assert len(at.get("plotly_chart")) == 1


def test_preset_change_loads_the_preset_into_every_widget_and_the_url():
    at = start()
    sidebar(at, "selectbox", "Preset").set_value("resnet50").run()
    ok(at)
    assert at.title[0].value == "resnet50 · ResNet-50"
    assert metric(at, "Parameters") == "25,557,032"
    assert sidebar(at, "radio", "Block").value == "bottleneck"
    assert sidebar(at, "radio", "Stem").value == "imagenet"
    assert (sidebar(at, "number_input", "Classes").value, sidebar(at, "number_input", "Height").value) == (1000, 224)
    assert list(at.data_editor[0].value["blocks"]) == [3, 4, 6, 3]
    assert at.query_params["name"] == "resnet50" and at.query_params["blocks"] == "3,4,6,3"


def test_shortcut_and_input_changes():
    at = start()
    sidebar(at, "radio", "Shortcut").set_value("A").run()
    assert metric(at, "Parameters") == "269,722"
    sidebar(at, "number_input", "Height").set_value(64).run()
    sidebar(at, "number_input", "Width").set_value(64).run()
    ok(at)
    assert metric(at, "MACs") == "162.20 M"  # 4 × 40,551,040 less the fc layer's 3 × 640
    assert at.session_state["config"] == preset("resnet20", shortcut="A", input_size=(64, 64))


def test_stage_edits_rebuild_the_network():
    at = start()
    edit_stages(at, added_rows=[{"width": 128, "blocks": 3, "stride": 2}])
    ok(at)
    assert at.session_state["config"].widths == (16, 32, 64, 128)
    assert at.title[0].value == "resnet20 · ResNet-26"
    expected = preset("resnet20", widths=(16, 32, 64, 128), blocks=(3, 3, 3, 3), strides=(1, 2, 2, 2))
    assert metric(at, "Parameters") == f"{expected.num_params():,}"


def test_an_invalid_value_shows_the_cores_sentence_and_keeps_the_last_good_view():
    at = start()
    edit_stages(at, edited_rows={1: {"stride": 0}})
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Stage 2: stride 0 — strides must be 1 or more. Showing the last valid network."]
    assert metric(at, "Parameters") == "272,474"  # the last good network is still on screen
    for page in PAGES[1:]:  # and every page still works
        at.switch_page(page)
        edit_stages(at, edited_rows={1: {"stride": 0}})  # AppTest resends no editor state by itself
        assert not at.exception and len(at.error) == 1 and at.title
    edit_stages(at, edited_rows={1: {"stride": 2}, 2: {"width": 128}})
    ok(at)
    assert at.session_state["config"].widths == (16, 32, 128)


def test_a_stage_with_an_empty_cell_is_an_error_not_a_crash():
    at = start()
    edit_stages(at, added_rows=[{"width": 128}])
    assert not at.exception
    assert "every stage needs a width, a number of blocks and a stride" in at.error[0].value.lower()


def test_reset_to_preset():
    at = start()
    sidebar(at, "radio", "Shortcut").set_value("C").run()
    sidebar(at, "number_input", "Classes").set_value(100).run()
    assert at.session_state["config"].num_classes == 100
    next(b for b in at.sidebar.button if b.label == "Reset to preset").click().run()
    ok(at)
    assert at.session_state["config"] == preset("resnet20")
    assert sidebar(at, "radio", "Shortcut").value == "B"


def test_a_link_reopens_the_same_network():
    config = preset("resnet56", shortcut="A", num_classes=100)
    at = start(config.to_query())
    ok(at)
    assert at.session_state["config"] == config
    assert at.title[0].value == "resnet56 · ResNet-56"
    assert sidebar(at, "radio", "Shortcut").value == "A"


def test_a_broken_link_says_so_and_opens_the_default():
    at = start({"widths": "16,x,64"})
    assert not at.exception
    assert "the link's network could not be opened" in at.error[0].value.lower()
    assert at.session_state["config"] == preset("resnet20")


@pytest.mark.parametrize("query", [
    {"widths": "oops", "x": "![b](http://evil.example/b.png)"},  # another parameter is not repeated at all
    {"widths": "![b](http://evil.example/b.png) [Sign in](http://evil.example/)"},  # the bad one, as plain text
    {"name": "[Sign in](http://evil.example/)", "block": "nope"},
])
def test_a_hostile_link_cannot_draw_images_or_links(query):
    at = start(query)
    assert not at.exception
    shown = "\n".join(e.value for e in at.error)
    assert "could not be opened" in shown
    assert "![" not in shown and "](" not in shown and "<" not in shown.replace("\\<", "")
    assert "evil" not in shown or "\\]\\(" in shown  # where it is repeated, the Markdown is escaped


def test_a_network_of_its_own_keeps_its_name_from_a_link():
    config = ResNetConfig(name="my-net", widths=(16, 32, 64), blocks=(5, 5, 5), strides=(1, 2, 2))
    at = start(config.to_query())
    ok(at)
    assert at.session_state["config"] == config
    assert at.title[0].value.startswith("my-net · ")
    assert any(b.label == "Download config (JSON)" for b in at.sidebar.get("download_button"))
    sidebar(at, "selectbox", "Preset").set_value("resnet56").run()  # choosing a preset takes its name
    assert at.session_state["config"].name == "resnet56"


def test_a_malformed_link_names_the_parameter_and_its_form():
    with pytest.raises(ConfigError, match=r"the link's classes is malformed \(classes=ten\): it takes whole "
                                          r"numbers, as in classes=10"):
        ResNetConfig.from_query({"classes": "ten"})
    with pytest.raises(ConfigError, match="widths=1111111111111111111111111111111111111111…"):
        ResNetConfig.from_query({"widths": "1" * 5000})  # past Python's digit limit for int(): still a sentence


def test_config_json_download_and_upload(tmp_path):
    at = start()
    sidebar(at, "radio", "Shortcut").set_value("A").run()
    download = next(b for b in at.sidebar.download_button if b.label == "Download config (JSON)")
    assert download is not None
    uploaded = preset("cifar-resnet18", num_classes=100)
    at.sidebar.file_uploader[0].upload("net.json", uploaded.to_json().encode(), "application/json").run()
    ok(at)
    assert at.session_state["config"] == uploaded
    assert at.title[0].value == "cifar-resnet18 · ResNet-18"
    at.sidebar.file_uploader[0].upload("bad.json", b'{"widths": [16, 32', "application/json").run()
    assert not at.exception
    assert "bad.json: the config is not valid JSON" in " ".join(e.value for e in at.sidebar.error)
    assert at.session_state["config"] == uploaded  # nothing half-loaded


# -- layers ----------------------------------------------------------------------------------------------

def test_layers_table_filters_and_downloads():
    at = start()
    at.switch_page("app_pages/layers.py").run()
    ok(at)
    table = at.dataframe[0].value
    assert len(table) == 88 and table["name"].iloc[0] == "resnet20"
    assert table.loc[table["name"] == "layer3", "output_shape"].item() == "1×64×8×8"
    at.number_input[0].set_value(1).run()
    assert list(at.dataframe[0].value["name"]) == ["resnet20", "conv1", "bn1", "relu", "layer1", "layer2", "layer3",
                                                   "avgpool", "flatten", "fc"]
    at.number_input[0].set_value(4).run()
    at.multiselect[0].set_value(["layer2"]).run()
    at.multiselect[1].set_value(["Conv2d"]).run()
    names = list(at.dataframe[0].value["name"])
    assert names == ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv1", "layer2.1.conv2",
                     "layer2.2.conv1", "layer2.2.conv2"]
    at.multiselect[0].set_value([]).run()
    at.multiselect[1].set_value([]).run()
    at.text_input[0].set_value("downsample").run()
    assert set(at.dataframe[0].value["type"]) == {"Sequential", "Conv2d", "BatchNorm2d"}
    assert [b.label for b in at.main.download_button] == ["CSV", "JSON", "MD"]
    at.text_input[0].set_value("nothing-like-this").run()
    ok(at)
    assert at.info[0].value == "No layer matches these filters."


# -- diagram ---------------------------------------------------------------------------------------------

def test_diagram_levels_direction_folding_and_downloads():
    at = start()
    at.switch_page("app_pages/diagram.py").run()
    ok(at)
    assert "layer1.0 – layer1.2  ×3" in graphviz(at)
    at.radio(key="level").set_value("stage").run()
    assert "stage 1 (layer1)" in graphviz(at)
    at.radio(key="level").set_value("layer").run()
    at.toggle(key="fold").set_value(False).run()
    assert "conv 1×1, 32, /2" in graphviz(at) and "  ×3" not in graphviz(at)
    at.radio(key="direction").set_value("LR").run()
    assert "rankdir=LR" in graphviz(at)
    labels = [b.label for b in at.main.download_button]
    assert labels == (["DOT", "SVG", "PNG", "PDF"] if shutil.which("dot") else ["DOT"])


def test_diagram_without_graphviz_offers_dot_and_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    at = start()
    at.switch_page("app_pages/diagram.py").run()
    ok(at)
    assert [b.label for b in at.main.download_button] == ["DOT"]
    assert "apt-get install graphviz" in at.info[0].value


def test_torchview_view():
    at = start()
    at.switch_page("app_pages/diagram.py").run()
    at.segmented_control(key="view").set_value("Computational graph (torchview)").run()
    ok(at)
    assert "(1, 3, 32, 32)" in graphviz(at)
    shallow = graphviz(at)
    at.slider(key="tv_depth").set_value(3).run()
    assert len(graphviz(at)) > len(shallow)


# -- compare ---------------------------------------------------------------------------------------------

def test_compare_picked_networks():
    at = start()
    at.switch_page("app_pages/compare.py").run()
    ok(at)
    totals = at.dataframe[0].value
    assert list(totals["name"]) == ["resnet20 (current)", "resnet56", "resnet110"]
    assert list(totals["params"]) == [272_474, 855_770, 1_730_714]
    assert len(at.get("plotly_chart")) == 2
    assert [b.label for b in at.main.download_button] == ["CSV", "JSON", "MD"]


def test_compare_depth_series_matches_the_core():
    at = start()
    at.switch_page("app_pages/compare.py").run()
    at.segmented_control(key="study").set_value("Depth series (CIFAR)").run()
    ok(at)
    series = at.dataframe[0].value
    assert list(series["model"]) == list(CIFAR_DEPTHS)
    assert list(series["params"]) == [preset(name, shortcut="A").num_params() for name in CIFAR_DEPTHS]
    assert list(series["paper_params_m"]) == [0.27, 0.46, 0.66, 0.85, 1.7, 19.4]


def test_compare_shortcuts_of_the_current_network():
    current = ResNetConfig(name="resnet20", blocks=(2, 2, 2))
    at = start(current.to_query())
    at.switch_page("app_pages/compare.py").run()
    at.segmented_control(key="study").set_value("Shortcuts A, B, C").run()
    ok(at)
    params = [ResNetConfig(name="resnet20", blocks=(2, 2, 2), shortcut=s).num_params() for s in "ABC"]
    assert list(at.dataframe[0].value["params_delta"]) == [0, params[1] - params[0], params[2] - params[0]]
    assert params[1] - params[0] == 2_752


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_for_an_imagenet_network(page):
    at = start(preset("resnet152").to_query())
    at.switch_page(page).run()
    ok(at)


# -- train -----------------------------------------------------------------------------------------------

TINY = ResNetConfig(name="resnet20", widths=(8, 16), blocks=(1, 1), strides=(1, 2))


def start_training(at: AppTest, source: str = "synthetic", path: str = "") -> AppTest:
    at.selectbox(key="train_source").set_value(source)
    at.text_input(key="train_path").set_value(path)
    at.number_input(key="train_epochs").set_value(2)
    at.number_input(key="train_batch").set_value(64)
    at.number_input(key="train_lr").set_value(0.1)
    at.number_input(key="train_limit").set_value(40)
    return submit(at, "Start training")


def submit(at: AppTest, label: str) -> AppTest:
    return next(b for b in at.form_submit_button if b.label == label).click().run()


def test_train_page_runs_watches_and_offers_the_checkpoint():
    at = start(TINY.to_query())
    at.switch_page("app_pages/train.py").run()
    ok(at)
    assert "start it" in at.info[0].value
    precision, why = precision_and_why("auto", pick_device("auto"))
    assert f"trains in {precision}: {why}." in at.caption[0].value
    start_training(at)
    ok(at)
    job(at, "training").join(timeout=120)
    at.run()
    ok(at)
    state = job(at, "training").snapshot()
    assert state.status == "finished"
    assert at.success[0].value.startswith(f"Validation accuracy {state.result.val_acc:.2%}")
    per_class = at.dataframe[0].value
    assert len(per_class) == 10 and per_class["images"].sum() == len(state.result.per_class) * 8
    # the run first; the shipped networks' section follows it (tests/app/test_inside_app.py)
    assert [m.label for m in at.metric][:4] == ["Images / s", "Step", "Training time", "Validation accuracy"]
    assert [b.label for b in at.main.download_button][:3] == ["PT", "JSON", "CSV"]
    assert len(at.get("plotly_chart")) == 2 + 1 and "painted by" in graphviz(at)


def test_train_page_says_which_batch_and_learning_rate_a_run_will_take_before_it_starts():
    at = start(TINY.to_query())
    at.switch_page("app_pages/train.py").run()
    device = pick_device("auto")
    assert f"This run will take {plan(None, None, device)}." in captions(at)
    at.number_input(key="train_budget").set_value(240)
    submit(at, "Show the command")
    assert f"This run will take {plan(None, None, device, time_budget=240)}." in captions(at)
    assert "measure the speed" in captions(at)
    at.number_input(key="train_batch").set_value(64)
    submit(at, "Show the command")
    assert "This run will take batch 64, peak learning rate 0.141 (batch as given" in captions(at)


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def own(elements) -> list:
    """The Train page's elements for the current network: without the shipped networks' section below them."""
    from resnet_viz.weights import bundled

    commands = {b.card["command"] for b in bundled()}
    return [e for e in elements
            if not (e.key or "").startswith("shipped") and getattr(e, "value", None) not in commands]


def test_train_page_shows_the_exact_torchrun_command():
    config = preset("resnet56", num_classes=100)
    at = start(config.to_query())
    at.switch_page("app_pages/train.py").run()
    at.selectbox(key="train_source").set_value("cifar100")
    at.number_input(key="train_epochs").set_value(30)
    at.number_input(key="train_batch").set_value(1024)
    at.number_input(key="train_lr").set_value(0.8)
    at.number_input(key="train_nproc").set_value(4)
    at.number_input(key="train_nnodes").set_value(2)
    at.text_input(key="train_endpoint").set_value("node0:29500")
    at.toggle(key="train_sync_bn").set_value(True)
    submit(at, "Show the command")
    ok(at)
    assert job(at, "training") is None  # nothing started here
    words = shlex.split(at.code[0].value)
    assert words[:6] == ["torchrun", "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
                         "--rdzv_endpoint=node0:29500", "--rdzv_id=resnet-viz"]
    args = build_parser().parse_args(words[words.index("resnet_viz") + 1:])
    parsed_config, settings, _ = _run_setup(args)
    assert parsed_config == config and args.data == "cifar100"
    assert (settings.epochs, settings.batch_size, settings.lr, settings.sync_bn) == (30, 1024, 0.8, True)
    assert not own(at.main.download_button)  # a preset with overrides needs no config file
    sidebar(at, "selectbox", "Preset").set_value("resnet20").run()
    assert not own(at.code)  # the command was for the other network
    # a network that no preset names travels as its JSON file, offered beside the command
    at = start(ResNetConfig(name="mine", widths=(8, 16), blocks=(1, 1), strides=(1, 2)).to_query())
    at.switch_page("app_pages/train.py").run()
    submit(at, "Show the command")
    ok(at)
    name = at.session_state["config"].name
    assert f"train {name}.json --data synthetic" in at.code[0].value
    assert at.main.download_button[0].label == f"{name}.json"


def test_train_page_errors_are_sentences():
    at = start(TINY.to_query())
    at.switch_page("app_pages/train.py").run()
    start_training(at, source="folder", path="")
    assert not at.exception and "Give the folder or .tar.gz to use." in at.error[0].value
    at = start(preset("resnet20", num_classes=100).to_query())
    at.switch_page("app_pages/train.py").run()
    start_training(at)
    job(at, "training").join(timeout=120)
    at.run()
    assert not at.exception
    assert "The network has 100 outputs but synthetic (random) data has 10 classes" in at.error[0].value


# -- quantize --------------------------------------------------------------------------------------------

def run_study(at: AppTest, mode: str, bits: str) -> AppTest:
    at.selectbox(key="q_source").set_value("synthetic")
    at.selectbox(key="q_mode").set_value(mode)
    at.text_input(key="q_bits").set_value(bits)
    at.number_input(key="q_limit").set_value(40)
    at.number_input(key="q_epochs").set_value(1)
    at.form_submit_button[0].click().run()
    job(at, "quantization").join(timeout=180)
    return at.run()


def test_quantize_page_studies_the_last_training_run():
    at = start(TINY.to_query())
    at.switch_page("app_pages/train.py").run()
    start_training(at)
    job(at, "training").join(timeout=120)
    at.switch_page("app_pages/quantize.py").run()
    ok(at)
    assert at.selectbox(key="q_network").options[-2:] == ["last training run", "upload a checkpoint"]
    at.selectbox(key="q_network").set_value("last training run")
    run_study(at, "sweep", "8 2")
    ok(at)
    rows = at.dataframe[0].value
    assert list(rows["bits"]) == [32, 8, 2, 8, 2, 8, 2] and len(at.get("plotly_chart")) == 1
    run_study(at, "sensitivity", "4")
    ok(at)
    assert at.success[0].value.startswith("Mixed precision: the 1 most fragile layers at 8 bits")
    assert "painted by accuracy lost at 4 bits" in graphviz(at)
    at.text_input(key="q_schedule").set_value("4:1, 3:1")
    at.checkbox(key="q_compare").check()
    run_study(at, "qat", "3")
    ok(at)
    assert [m.label for m in at.metric] == ["float32", "W3A3 before", "W3A3 after the fine-tune", "Weights, packed"]
    stages = at.dataframe[0].value
    assert list(stages["bits"]) == [4, 3] and list(stages["epochs"]) == [1, 1] and set(stages["method"]) == {"lsq"}
    chart = at.get("plotly_chart")[0].proto.spec
    for name in ("LSQ fine-tune", "STE fine-tune", "post-training", "float32"):
        assert name in chart  # the three methods side by side
    assert [b.label for b in at.main.download_button] == ["qat-W4A4.pt", "qat-W4A4.rvq", "qat-W3A3.pt",
                                                          "qat-W3A3.rvq", "JSON"]
    at.text_input(key="q_schedule").set_value("4:1, 3")
    at.form_submit_button[0].click().run()
    assert "Schedule stage '3' is not BITS:EPOCHS" in at.error[0].value
    at.text_input(key="q_schedule").set_value("")
    pytest.importorskip("torchao")
    run_study(at, "int8", "8")
    ok(at)
    assert [m.label for m in at.metric] == ["int8 accuracy", "Throughput, batch 256", "Latency, batch 1", "Weights"]
    assert list(at.dataframe[0].value["model"]) == ["float32", "int8"]


def test_quantize_page_without_a_checkpoint_says_what_to_do():
    at = start()
    at.switch_page("app_pages/quantize.py").run()
    at.selectbox(key="q_network").set_value("upload a checkpoint")
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert "Upload a checkpoint, pick a shipped network, or train one on the Train page first." in at.error[0].value


def test_the_checkouts_app_py_runs_the_packaged_app():
    """`streamlit run app.py` in a checkout runs resnet_viz_app/app.py, pages and all."""
    root_app = str(Path(__file__).resolve().parents[2] / "app.py")
    at = AppTest.from_file(root_app, default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value.startswith("resnet20")  # the overview of the default preset
    at.switch_page("resnet_viz_app/app_pages/layers.py").run()
    assert not at.exception and at.title[0].value == "Layers"
