"""``resnet-viz app``: the browser app, from any folder. Every flag after ``app`` goes to ``streamlit run``
(``--server.port 8600``, ``--server.address 0.0.0.0``, ``--server.headless true`` …)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ..errors import MissingPackage, UsageError

DESCRIPTION = ("Start the browser app (Streamlit). Every other flag goes to `streamlit run`, e.g. --server.port "
               "8600, --server.address 0.0.0.0 (serve every network this machine is on), --server.headless true "
               "(no browser opened); `streamlit run --help` lists them all.")


def register(sub) -> None:
    p = sub.add_parser("app", help="start the browser app; Streamlit's own flags pass through",
                       description=DESCRIPTION)
    p.set_defaults(run=cmd_app, passes_flags_on=True)


def app_script() -> Path:
    """The app's main script, where the package installed it (or beside this checkout's ``resnet_viz``). Found
    without importing the app: only the app imports Streamlit."""
    spec = importlib.util.find_spec("resnet_viz_app")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the app's pages are not installed with this copy of resnet-viz: reinstall it "
                         "(pip install 'resnet-viz[app]')")
    return Path(next(iter(spec.submodule_search_locations))) / "app.py"


def streamlit_command(flags: list[str]) -> list[str]:
    """``streamlit run`` of the app with ``flags``, in this Python."""
    if flags and not flags[0].startswith("-"):
        raise UsageError(f"{flags[0]!r} is not a flag: `resnet-viz app` takes Streamlit's flags only "
                         "(e.g. --server.port 8600)")
    if importlib.util.find_spec("streamlit") is None:
        raise MissingPackage("the app needs the streamlit package: pip install 'resnet-viz[app]'")
    return [sys.executable, "-m", "streamlit", "run", str(app_script()), *flags]


def cmd_app(args: argparse.Namespace) -> str:
    command = streamlit_command(args.flags)
    sys.stdout.flush()
    if os.name == "posix":  # Streamlit takes this process over: Ctrl-C and signals reach it directly
        os.execv(command[0], command)
    raise SystemExit(subprocess.call(command))
