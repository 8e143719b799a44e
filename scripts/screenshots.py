"""Screenshots of every page of the app for the README: docs/overview.png, layers.png, diagram.png, compare.png,
train.png (after a short run on synthetic data), quantize.png, inside.png, inside-blocks.png, lab.png
(gradients at initialisation) and lab-erf.png.

    .venv/bin/python scripts/screenshots.py [--out docs] [--only inside ...]

Starts `streamlit run app.py` on a free loopback port, opens each page in headless Chromium (/usr/bin/chromium)
at 1400×1000 and saves the viewport once the page has finished drawing. The server's log goes to
test-output/streamlit-screenshots.log.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.browser import (  # noqa: E402
    OUTPUT_DIR,
    PAGES,
    AppPage,
    ServerError,
    browser_unavailable,
    chromium,
    new_page,
    open_page,
    run_lab_study,
    run_short_training,
    streamlit_server,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page


def save_page(page: Page, base_url: str, app_page: AppPage, out_dir: Path) -> Path:
    open_page(page, base_url, app_page)
    if app_page.name == "train":  # a finished run shows what the page is for
        run_short_training(page)
    if app_page.name == "lab":  # and a finished study
        run_lab_study(page, "Gradients at initialisation (He et al. 2016, Sec. 4.2; Balduzzi et al. 2017)")
    path = out_dir / f"{app_page.name}.png"
    page.wait_for_timeout(2000)  # widget code the browser loads on first use (radios, number inputs) draws late
    page.screenshot(path=str(path))
    if app_page.name == "lab":  # the effective receptive field of the shipped networks, on the sample images
        run_lab_study(page, "Effective receptive field (Luo et al. 2016)")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out_dir / "lab-erf.png"))
    if app_page.name == "inside":  # and what only this page shows: each block's x, F(x) and sum, where it looks
        page.get_by_role("heading", name="Residual learning, block by block").evaluate(
            "heading => heading.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out_dir / "inside-blocks.png"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs", help="folder for the PNGs (default: docs)")
    parser.add_argument("--only", nargs="+", choices=[p.name for p in PAGES], help="just these pages")
    args = parser.parse_args(argv)
    reason = browser_unavailable()
    if reason:
        print(f"screenshots: cannot run: {reason}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        with streamlit_server(OUTPUT_DIR / "streamlit-screenshots.log") as base_url, chromium() as browser:
            with new_page(browser) as page:
                for app_page in PAGES if not args.only else [p for p in PAGES if p.name in args.only]:
                    print(f"wrote {save_page(page, base_url, app_page, args.out)}")
    except ServerError as e:
        print(f"screenshots: {e}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
