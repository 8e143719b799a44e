"""The package as a user installs it: a wheel built from this checkout and installed into a fresh virtual
environment, whose ``resnet-viz`` command runs from a folder outside the checkout. The fresh environment reuses
this one's packages through a .pth file (torch is not installed again), and nothing is fetched from the network."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
from pathlib import Path

import pytest

from resnet_viz import build_model, preset, trace

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "README.md", "resnet_viz", "resnet_viz_app")  # what a build reads


def _run(*command, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """A fresh environment with the wheel installed: its bin folder, its site-packages and a folder outside the
    checkout to run in."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the checkout
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                 tmp / "wheels", source, cwd=tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "wheels").glob("resnet_viz-*.whl")
    venv.create(tmp / "env", with_pip=False)
    bin_dir = tmp / "env" / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout.strip())
    (site / "reuse-the-test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q",
                     wheel, cwd=tmp)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return {"bin": bin_dir, "site": site, "cwd": elsewhere, "wheel": wheel}


def test_the_wheel_carries_the_weights_the_samples_the_app_and_its_icon(env):
    import zipfile

    names = set(zipfile.ZipFile(env["wheel"]).namelist())
    shipped = {str(p.relative_to(ROOT)).replace(os.sep, "/") for folder in ("resnet_viz/weights", "resnet_viz/samples")
               for p in (ROOT / folder).iterdir() if p.suffix in (".pt", ".json", ".png")}
    assert shipped and shipped <= names
    assert {"resnet_viz_app/app.py", "resnet_viz_app/icon.svg", "resnet_viz_app/.streamlit/config.toml",
            "resnet_viz_app/app_pages/overview.py", "resnet_viz_app/app_pages/lab.py"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "scripts/")) for n in names)


def test_the_package_imports_from_the_environment_not_the_checkout(env):
    found = _run(env["bin"] / "python", "-c", "import resnet_viz, resnet_viz_app; print(resnet_viz.__file__); "
                 "print(resnet_viz_app.__file__)", cwd=env["cwd"])
    assert found.returncode == 0, found.stderr
    for line in found.stdout.split():
        assert Path(line).is_relative_to(env["site"]), line


def test_presets_lists_every_preset_with_its_parameters(env):
    out = _run(env["bin"] / "resnet-viz", "presets", cwd=env["cwd"])
    assert out.returncode == 0, out.stderr
    assert f"{trace(preset('resnet20')).totals.params:,}" in out.stdout
    assert "resnet20" in out.stdout and "resnet152" in out.stdout


def test_summary_as_json_counts_what_pytorch_counts(env):
    out = _run(env["bin"] / "resnet-viz", "summary", "resnet20", "--format", "json", cwd=env["cwd"])
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    model = build_model(preset("resnet20"))
    assert found["totals"]["params"] == sum(p.numel() for p in model.parameters()) == 272_474
    assert found["model"] == "resnet20"


def test_the_bundled_networks_open_from_the_installed_package(env):
    out = _run(env["bin"] / "python", "-c", "from resnet_viz.training import load_checkpoint; "
               "from resnet_viz.samples import samples; m, c, meta = load_checkpoint('bundled:resnet20'); "
               "print(c.name, len(samples()))", cwd=env["cwd"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["resnet20", "100"]


def test_app_help_and_a_bad_flag(env):
    out = _run(env["bin"] / "resnet-viz", "app", "--help", cwd=env["cwd"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: resnet-viz app") and "--server.port" in out.stdout
    bad = _run(env["bin"] / "resnet-viz", "app", "page.py", cwd=env["cwd"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a flag" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_from_any_folder_with_streamlits_flags(env):
    port = _free_port()
    env_vars = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    server = subprocess.Popen([str(env["bin"] / "resnet-viz"), "app", "--server.port", str(port),
                               "--server.headless", "true"], cwd=env["cwd"], env=env_vars,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        assert health == b"ok", server.stdout.read() if server.poll() is not None else "no answer"
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0]
    assert f"127.0.0.1:{port}" in out  # the app's own config: loopback only, from the installed package


def test_the_installed_app_renders_its_pages(env):
    script = ("from streamlit.testing.v1 import AppTest; import resnet_viz_app, pathlib; "
              "app = pathlib.Path(resnet_viz_app.__file__).with_name('app.py'); "
              "at = AppTest.from_file(str(app), default_timeout=120).run(); assert not at.exception, at.exception; "
              "at.switch_page('app_pages/layers.py').run(); assert not at.exception, at.exception; "
              "print(at.title[0].value)")
    out = _run(env["bin"] / "python", "-c", script, cwd=env["cwd"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Layers"
