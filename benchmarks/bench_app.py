"""Server-side time of an app rerun after a config change, for ResNet-110, page by page.

    .venv/bin/python -m benchmarks.bench_app [--repeat 5]

Each page is opened on ResNet-110, then the sidebar's shortcut option is changed A → B → C → A …
and each rerun timed with Streamlit's AppTest (the script run and the element tree, no browser).
"new config" reruns are the first time a config is seen (nothing cached for it); "seen config"
reruns come back to one already drawn. The anchor is a rerun of a script with one widget and one
line of text, measured the same way in the same run: the framework's own floor.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from benchmarks import machine
from resnet_viz import preset

APP = str(Path(__file__).resolve().parents[1] / "resnet_viz_app" / "app.py")
PAGES = ["app_pages/overview.py", "app_pages/layers.py", "app_pages/diagram.py", "app_pages/compare.py"]
FLOOR = """
import streamlit as st
choice = st.sidebar.radio("Shortcut", ["A", "B", "C"])
st.write(choice)
"""


def timed_rerun(at: AppTest, shortcut: str) -> float:
    radio = next(r for r in at.sidebar.radio if r.label == "Shortcut")
    radio.set_value(shortcut)
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    assert not at.exception, at.exception
    return elapsed


def page_times(page: str, repeat: int) -> tuple[float, float]:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(preset("resnet110", shortcut="B").to_query())
    at.run()
    at.switch_page(page).run()
    # new configs: B with a new class count each time, so nothing is cached for them
    fresh = []
    for i in range(repeat):
        number = next(n for n in at.sidebar.number_input if n.label == "Classes")
        number.set_value(11 + i)
        start = time.perf_counter()
        at.run()
        fresh.append(time.perf_counter() - start)
    seen = [timed_rerun(at, shortcut) for shortcut in ("A", "B") * repeat][2:]  # after each was seen once
    return statistics.median(fresh), statistics.median(seen)


def floor_time(repeat: int) -> float:
    at = AppTest.from_string(FLOOR).run()
    return statistics.median(timed_rerun(at, s) for s in ("A", "B", "C") * repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine.describe())
    floor = floor_time(args.repeat)
    print(f"anchor: a one-widget script reruns in {floor * 1000:.1f} ms")
    print(f"{'page (ResNet-110)':<22}{'new config':>12}{'seen config':>13}{'new / anchor':>14}")
    for page in PAGES:
        fresh, seen = page_times(page, args.repeat)
        name = Path(page).stem
        print(f"{name:<22}{fresh * 1000:>10.0f} ms{seen * 1000:>10.0f} ms{fresh / floor:>13.1f}×")


if __name__ == "__main__":
    main()
