"""The Lab page: each kind of study, from the form to its charts, table and downloads, and its errors."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from resnet_viz_app.app_pages.common import manager

APP = str(Path(__file__).resolve().parents[2] / "resnet_viz_app" / "app.py")


def lab(study: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/lab.py").run()
    at.selectbox(key="lab_study").set_value(study).run()
    ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def run(at: AppTest) -> AppTest:
    at.form_submit_button[0].click().run()
    ok(at)
    manager().find(at.session_state["owner"], "lab").join(timeout=180)
    return at.run()


def test_the_erf_of_the_shipped_network_on_the_sample_images():
    at = lab("erf")
    assert "Luo et al. 2016" in at.info[0].value or "receptive" in at.info[0].value
    assert at.multiselect(key="lab_networks").value[0].startswith("resnet20 (")
    assert at.selectbox(key="lab_source_optional").value == "samples"
    at.number_input(key="lab_images_erf").set_value(8)
    run(at)
    ok(at)
    text = "\n".join(m.value for m in at.markdown)
    assert "resnet20: stem 3/3 of 3, layer1" in text
    assert len(at.get("plotly_chart")) == len(at.multiselect(key="lab_networks").value)
    assert list(at.dataframe[0].value["stage"])[:4] == ["stem", "layer1", "layer2", "layer3"]
    assert [b.label for b in at.main.download_button] == ["JSON", "CSV", "HTML"]


def test_gradients_at_initialisation_take_presets_and_the_sidebars_network():
    at = lab("gradients")
    at.multiselect(key="lab_configs").set_value(["the sidebar's network", "plain20"])
    at.number_input(key="lab_batch").set_value(4)
    run(at)
    ok(at)
    frame = at.dataframe[0].value
    assert set(frame["network"]) == {"resnet20", "plain20"}  # the sidebar opens on ResNet-20
    assert len(at.get("plotly_chart")) == 1


def test_the_lesion_study_paints_the_block_diagram():
    at = lab("lesion")
    at.selectbox(key="lab_source_val").set_value("synthetic")
    at.number_input(key="lab_images_lesion").set_value(30)
    at.number_input(key="lab_draws").set_value(1)
    run(at)
    ok(at)
    assert len(at.get("graphviz_chart")) == len(at.multiselect(key="lab_networks").value)
    assert "accuracy lost without the block" in at.get("graphviz_chart")[0].proto.spec
    assert len(at.get("plotly_chart")) == 2


def test_a_study_without_its_data_or_networks_says_so():
    at = lab("landscape")
    at.selectbox(key="lab_source_train").set_value("folder")
    at.form_submit_button[0].click().run()
    assert not at.exception and at.error[0].value == "Give the folder or .tar.gz to use."
    assert manager().find(at.session_state["owner"], "lab") is None  # nothing started
    at = lab("responses")
    at.multiselect(key="lab_networks").set_value(["upload a checkpoint"])
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert at.error[0].value == "Upload a checkpoint, or take 'upload a checkpoint' out of the networks."
    at.multiselect(key="lab_networks").set_value([])
    at.form_submit_button[0].click().run()
    assert at.error[0].value == "Pick at least one network."


def test_a_missing_data_folder_fails_the_job_with_one_sentence(tmp_path):
    at = lab("lesion")
    at.selectbox(key="lab_source_val").set_value("folder")
    at.text_input(key="lab_path").set_value(str(tmp_path / "nowhere"))
    run_to_end = at.form_submit_button[0].click().run()
    job = manager().find(run_to_end.session_state["owner"], "lab")
    if job is not None:  # a shared server refuses the path at once; a private one in the job
        job.join(timeout=60)
        at.run()
    assert not at.exception
    assert "nowhere" in at.error[0].value
