"""What the package promises beyond its code: the core works without the optional extras (each missing one is
named in one sentence), and ``resnet-viz app`` hands Streamlit's own flags to ``streamlit run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from resnet_viz.cli import app, main
from resnet_viz.errors import MissingPackage, require

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("streamlit", "captum", "torchao", "onnx", "onnxscript", "kaleido", "IPython", "ipywidgets")


def test_the_core_imports_and_runs_without_any_extra():
    """Every module of resnet_viz imports, and the CLI counts a network, with the extras' packages made
    unimportable (as on `pip install resnet-viz` alone)."""
    script = (f"import sys\nfor name in {EXTRAS!r}: sys.modules[name] = None\n"
              "import importlib, pkgutil, resnet_viz\n"
              "for m in pkgutil.walk_packages(resnet_viz.__path__, 'resnet_viz.'): importlib.import_module(m.name)\n"
              "from resnet_viz.cli import main\nsys.exit(main(['summary', 'resnet20', '--depth', '0']))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "272,474" in out.stdout


def test_a_missing_extra_is_named_in_one_sentence():
    sentence = r"^attribution needs the not_installed_here package: pip install 'resnet-viz\[inside\]'$"
    with pytest.raises(MissingPackage, match=sentence):
        require("not_installed_here.attr", "inside", "attribution")


def test_require_does_not_hide_a_broken_part_of_an_installed_package():
    with pytest.raises(ModuleNotFoundError) as found:
        require("resnet_viz.samples.missing_part", "app", "x")
    assert not isinstance(found.value, MissingPackage)


def test_app_passes_streamlits_flags_on(monkeypatch):
    command = app.streamlit_command(["--server.port", "8600", "--server.address", "0.0.0.0"])
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == ROOT / "resnet_viz_app" / "app.py"
    assert command[5:] == ["--server.port", "8600", "--server.address", "0.0.0.0"]


def test_app_without_streamlit_says_which_extra(monkeypatch, capsys):
    real = app.importlib.util.find_spec
    monkeypatch.setattr(app.importlib.util, "find_spec", lambda name: None if name == "streamlit" else real(name))
    assert main(["app", "--server.port", "8600"]) == 2
    assert capsys.readouterr().err == "error: the app needs the streamlit package: pip install 'resnet-viz[app]'\n"


def test_other_commands_still_refuse_unknown_flags(capsys):
    assert main(["presets", "--server.port", "8600"]) == 2
    assert "unrecognized arguments: --server.port 8600" in capsys.readouterr().err
