"""`streamlit run app.py` in a checkout: the app that `resnet-viz app` starts, whose main script and pages live in
resnet_viz_app/ (so that they install with the package)."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent / "resnet_viz_app" / "app.py"), run_name="__main__")
