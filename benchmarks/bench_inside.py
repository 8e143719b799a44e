"""The Inside page's rerun for a new image, on the shipped ResNet-20, against a plain forward of that image.

    .venv/bin/python -m benchmarks.bench_inside [--images 20]

Each case runs once for each of --images different sample images (so no cache helps) after a warm-up, and the
median is printed, with its ratio to the anchor, a plain forward of one image in eval mode. The cases:

- forward with hooks and Grad-CAM: ``open_inside`` without Integrated Gradients (one hooked forward, then
  captum's LayerGradCam at each of the 3 stages for the predicted class);
- figures: what the page draws from it (the input, a grid of 16 feature maps, a block's x, F(x) and sum, three
  Grad-CAM overlays, the stem's filters as pictures; the prediction and ratio charts as plotly JSON; the block
  diagram painted with the ratios as Graphviz source);
- the page's work for a new image: those two together (the target is under 300 ms);
- the whole page in Streamlit's AppTest: picking a new image and rerunning the app script, sidebar included;
- Integrated Gradients (32 steps), computed only when that view is shown.

Results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks import machine
from resnet_viz import trace
from resnet_viz.samples import samples
from resnet_viz.training import load_checkpoint
from resnet_viz.views import pictures
from resnet_viz.views.charts import prediction_chart, residual_ratio_chart
from resnet_viz.views.diagram import block_diagram
from resnet_viz.views.inside import normalise, open_inside, pixel_attribution

APP = str(Path(__file__).resolve().parents[1] / "resnet_viz_app" / "app.py")


def figures(inside, pixels, traced) -> None:
    """What the page draws for a new image, as the page draws it."""
    pictures.enlarge(pictures.image(pixels), 160)
    maps = inside.maps["stem"]
    pictures.feature_grid(maps, pictures.most_active(maps, 16))
    inside.blocks["layer1.0"].pictures(cell=160)
    for cam in inside.cams.values():
        pictures.overlay(pixels, cam)
    pictures.filters(inside.stem_filters)
    rows = inside.block_rows()
    prediction_chart(inside.top(5)).to_json()
    residual_ratio_chart(rows).to_json()
    heat = {r["block"]: r["ratio"] for r in rows if r["ratio"] is not None}
    _ = block_diagram(traced, "block", heat=heat, heat_label="‖F(x)‖ / ‖x‖", legend=False).source


def median_ms(fn, inputs) -> float:
    fn(inputs[0])  # warm-up
    times = []
    for item in inputs[1:]:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def page_rerun_ms(names: list[str]) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/inside.py").run()
    return median_ms(lambda name: at.selectbox(key="in_image").set_value(name).run(), names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    print(machine.describe())
    model, config, meta = load_checkpoint("bundled:resnet20")
    chosen = samples()[:: max(1, len(samples()) // (args.images + 1))][: args.images + 1]
    images = [s.pixels() for s in chosen]
    traced = trace(config)
    inputs = [normalise(p, meta) for p in images]

    def plain(x):
        with torch.no_grad():
            model(x)

    anchor = median_ms(plain, inputs)
    cases = {
        "plain forward of one image (anchor)": anchor,
        "forward with hooks and Grad-CAM at 3 stages": median_ms(
            lambda p: open_inside(model, p, meta, attribution=False), images),
        "figures": median_ms(lambda pair: figures(pair[0], pair[1], traced), [
            (open_inside(model, p, meta, attribution=False), p) for p in images]),
        "Integrated Gradients, 32 steps": median_ms(lambda p: pixel_attribution(model, p, meta, 3), images),
    }
    cases["the page's work for a new image"] = cases["forward with hooks and Grad-CAM at 3 stages"] + cases["figures"]
    cases["whole page rerun in AppTest (new image)"] = page_rerun_ms([s.file.removesuffix(".png") for s in chosen])
    print(f"{'case':<46}{'median':>10}{'× anchor':>10}")
    for label, ms in cases.items():
        print(f"{label:<46}{ms:>8.1f}ms{ms / anchor:>9.0f}×")
    work = cases["the page's work for a new image"]
    print(f"the page's work for a new image: {work:.0f} ms, {'under' if work < 300 else 'OVER'} the 300 ms target")


if __name__ == "__main__":
    main()
