from pathlib import Path

from streamlit.testing.v1 import AppTest

from resnet_viz import preset

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_starts_on_resnet20_with_the_seed_numbers():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not at.error
    assert _metric(at, "Parameters") == "272,474"
    frame = at.dataframe[0].value
    assert frame.loc[frame["name"] == "layer3", "output_shape"].item() == "1×64×8×8"


def test_preset_and_shortcut_change_the_numbers():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.radio[0].set_value("A").run()
    assert _metric(at, "Parameters") == "269,722"
    at.sidebar.selectbox[0].set_value("resnet50").run()
    assert not at.exception
    assert _metric(at, "Parameters") == f"{preset('resnet50', shortcut='A').num_params():,}"
    at.sidebar.radio[0].set_value("B").run()
    assert _metric(at, "Parameters") == "25,557,032"
