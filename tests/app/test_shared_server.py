"""The app as a shared server, through AppTest: the data roots, the password, the line of jobs and its Stop."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resnet_viz_app.app_pages import common

APP = str(Path(__file__).resolve().parents[2] / "resnet_viz_app" / "app.py")
TINY_QUERY = {"name": "tiny", "widths": "8,16", "blocks": "1,1", "strides": "1,2"}


@pytest.fixture
def server_env(monkeypatch):
    """Environment variables for the server; its settings and job manager are made anew for the test and after."""
    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        common.server.clear()
        common.manager.clear()
    yield set_env
    monkeypatch.undo()
    common.server.clear()
    common.manager.clear()


def start(secrets: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(TINY_QUERY)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    return at.run()


def train(at: AppTest, source: str = "synthetic", path: str = "", epochs: int = 2) -> AppTest:
    at.switch_page("app_pages/train.py").run()
    at.selectbox(key="train_source").set_value(source)
    at.text_input(key="train_path").set_value(path)
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_limit").set_value(20)
    return next(b for b in at.form_submit_button if b.label == "Start training").click().run()


def test_a_shared_server_reads_data_only_under_its_roots_and_says_the_same_of_every_other_path(server_env, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "private" / "keys").mkdir(parents=True)
    server_env(RESNET_VIZ_SHARED="1", RESNET_VIZ_DATA_ROOTS=str(tmp_path / "data"))
    errors = set()
    for path in (tmp_path / "private", tmp_path / "private" / "keys", tmp_path / "no-such-folder", "/etc"):
        at = train(start(), "folder", str(path))
        assert not at.exception and len(at.error) == 1
        errors.add(at.error[0].value)
        assert common.manager().find(at.session_state["owner"], "training") is None
    assert errors == {f"On this shared server, data folders and archives are read only under {tmp_path / 'data'}; "
                      "give a full path there."}
    at = train(start(), "folder", str(tmp_path / "data"))  # under the root: it may say what is wrong there
    job = common.manager().find(at.session_state["owner"], "training")
    job.join(60)
    assert job.snapshot().status == "failed" and "holds no class folders" in job.snapshot().message


def test_a_password_in_the_secrets_is_asked_for_before_anything_is_shown():
    at = start({"password": "correct horse"})
    assert not at.exception and [t.label for t in at.text_input] == ["Password"] and not at.sidebar.selectbox
    at.text_input[0].set_value("wrong").run()
    assert at.error[0].value == "That is not the password of this server." and not at.sidebar.selectbox
    at.text_input[0].set_value("correct horse").run()
    assert not at.error and at.sidebar.selectbox[0].label == "Preset"
    assert start().sidebar.selectbox  # no password set: no question


def test_jobs_beyond_the_servers_cap_wait_in_line_show_their_place_and_can_be_stopped(server_env):
    server_env(RESNET_VIZ_MAX_JOBS="1")
    first = train(start(), epochs=500)
    second = train(start())
    jobs = common.manager()
    running = jobs.find(first.session_state["owner"], "training")
    waiting = jobs.find(second.session_state["owner"], "training")
    assert running is not waiting and jobs.place(waiting) == 1
    assert second.get("progress")[0].proto.text == "waiting: 1st in line, behind 1 running job"
    second.switch_page("app_pages/overview.py").run()  # every page keeps the job alive and says how it is doing
    assert "Training run: waiting: 1st in line, behind 1 running job" in [c.value for c in second.sidebar.caption]
    second.switch_page("app_pages/train.py").run()
    assert next(b for b in second.button if b.label == "Stop").click().run()
    assert waiting.snapshot().status == "stopped" and second.info[0].value == "Stopped before it started."
    next(b for b in first.button if b.label == "Stop").click().run()
    running.join(120)
    first.run()
    assert running.snapshot().result.stopped == "stop request" and first.success


def test_a_shared_server_refuses_a_link_to_a_network_larger_than_it_draws(server_env):
    server_env(RESNET_VIZ_SHARED="1")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"widths": "8,8", "blocks": "512,512", "strides": "1,1"})
    at.run()
    assert not at.exception and at.session_state["config"].name == "resnet20"
    assert "has 1,024 residual blocks, and this server draws networks of at most 1,000" in at.error[0].value
    at.switch_page("app_pages/train.py").run()
    assert ("This server reads data folders and archives under nowhere (synthetic data and CIFAR only)."
            in [c.value for c in at.caption])
